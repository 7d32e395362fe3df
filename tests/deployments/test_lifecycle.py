"""Pause, unpause, archive — through the API and the services — and the firing state they keep."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from deployments_app import services
from deployments_app.errors import DeploymentArchived
from deployments_app.models import Deployment
from tests.deployments.helpers import WEEKLY, create, error, next_fire, ok, update

pytestmark = pytest.mark.django_db

EVERY_MINUTE = {"type": "cron", "expression": "* * * * *", "timezone": "UTC"}


@pytest.fixture
def scheduled(api, body):
    return create(api, body, schedule=EVERY_MINUTE)


def post(api, deployment_id: str, action: str):
    return api.post(f"/v1/deployments/{deployment_id}/{action}")


def row(deployment_id: str) -> Deployment:
    return Deployment.objects.get(pk=deployment_id)


# --- pause ---------------------------------------------------------------------------------------------


def test_pause_sets_status_reason_and_stops_firing(api, scheduled):
    assert row(scheduled["id"]).next_fire_at is not None
    data = ok(post(api, scheduled["id"], "pause"))
    assert data["status"] == "paused"
    assert data["paused_reason"] == {"type": "manual"}
    assert data["archived_at"] is None
    # A paused deployment still previews what it would do if unpaused.
    assert len(data["schedule"]["upcoming_runs_at"]) == 5
    assert row(scheduled["id"]).next_fire_at is None


def test_pausing_a_paused_deployment_returns_it_unchanged(api, scheduled):
    first = ok(post(api, scheduled["id"], "pause"))
    second = ok(post(api, scheduled["id"], "pause"))
    assert second["updated_at"] == first["updated_at"]
    assert (second["status"], second["paused_reason"]) == ("paused", {"type": "manual"})


def test_pause_of_a_manual_only_deployment_works(api, body):
    data = ok(post(api, create(api, body)["id"], "pause"))
    assert (data["status"], data["schedule"]) == ("paused", None)


def test_pause_service_records_an_error_reason_for_auto_pause(api, scheduled):
    reason = {"type": "error", "error": {"type": "environment_archived_error", "message": "environment env_1 is archived"}}
    deployment = row(scheduled["id"])
    services.deployment_pause(deployment=deployment, reason=reason)
    assert (deployment.status, deployment.paused_reason, deployment.next_fire_at) == ("paused", reason, None)
    assert ok(api.get(f"/v1/deployments/{scheduled['id']}"))["paused_reason"] == reason
    # A manual pause afterwards keeps the original reason.
    assert ok(post(api, scheduled["id"], "pause"))["paused_reason"] == reason


# --- unpause -------------------------------------------------------------------------------------------


def test_unpause_resumes_at_the_next_occurrence_after_now_without_backfill(api, body):
    data = create(api, body, schedule={"type": "cron", "expression": "0 3 * * *", "timezone": "UTC"})
    ok(post(api, data["id"], "pause"))
    # Pretend the pause happened long ago: occurrences since then are never fired.
    Deployment.objects.filter(pk=data["id"]).update(updated_at=timezone.now() - timedelta(days=10))
    before = timezone.now()
    unpaused = ok(post(api, data["id"], "unpause"))
    after = timezone.now()
    assert (unpaused["status"], unpaused["paused_reason"]) == ("active", None)
    next_fire_at = row(data["id"]).next_fire_at
    assert next_fire_at in (next_fire("0 3 * * *", "UTC", before), next_fire("0 3 * * *", "UTC", after))
    assert next_fire_at > before


def test_unpausing_an_active_deployment_is_a_noop(api, scheduled):
    before = row(scheduled["id"])
    data = ok(post(api, scheduled["id"], "unpause"))
    assert (data["status"], data["paused_reason"], data["updated_at"]) == ("active", None, scheduled["updated_at"])
    assert row(scheduled["id"]).next_fire_at == before.next_fire_at


def test_unpause_clears_an_error_reason(api, scheduled):
    services.deployment_pause(deployment=row(scheduled["id"]),
                              reason={"type": "error", "error": {"type": "unknown_error", "message": "x"}})
    assert ok(post(api, scheduled["id"], "unpause"))["paused_reason"] is None


def test_unpause_of_a_manual_only_deployment_keeps_next_fire_at_null(api, body):
    data = create(api, body)
    ok(post(api, data["id"], "pause"))
    assert ok(post(api, data["id"], "unpause"))["status"] == "active"
    assert row(data["id"]).next_fire_at is None


# --- archive -------------------------------------------------------------------------------------------


def test_archive_is_terminal_and_reports_active_with_archived_at(api, scheduled):
    last_run = timezone.now() - timedelta(hours=1)
    Deployment.objects.filter(pk=scheduled["id"]).update(last_run_at=last_run)
    before = timezone.now()
    data = ok(post(api, scheduled["id"], "archive"))
    assert data["archived_at"] is not None
    assert data["status"] == "active"
    assert data["paused_reason"] is None
    assert data["schedule"]["upcoming_runs_at"] == []
    assert data["schedule"]["last_run_at"] == last_run.isoformat().replace("+00:00", "Z")
    stored = row(scheduled["id"])
    assert stored.next_fire_at is None
    assert stored.archived_at >= before


def test_archiving_a_paused_deployment_reports_active_without_a_reason(api, scheduled):
    ok(post(api, scheduled["id"], "pause"))
    data = ok(post(api, scheduled["id"], "archive"))
    assert (data["status"], data["paused_reason"]) == ("active", None)
    stored = row(scheduled["id"])
    assert (stored.status, stored.paused_reason) == ("active", None)


def test_archiving_twice_returns_it_unchanged(api, scheduled):
    first = ok(post(api, scheduled["id"], "archive"))
    second = ok(post(api, scheduled["id"], "archive"))
    assert second["archived_at"] == first["archived_at"]
    assert second["updated_at"] == first["updated_at"]


@pytest.mark.parametrize(
    "action, changes",
    [("pause", None), ("unpause", None), ("update", {"name": "x"}), ("update", {}), ("update", {"schedule": None})],
)
def test_an_archived_deployment_refuses_every_change(api, scheduled, action, changes):
    ok(post(api, scheduled["id"], "archive"))
    response = update(api, scheduled["id"], changes) if action == "update" else post(api, scheduled["id"], action)
    message = error(response, 400)
    assert message == f"deployment {scheduled['id']} is archived and can no longer be modified"
    assert row(scheduled["id"]).name == scheduled["name"]


def test_archived_deployment_can_still_be_retrieved(api, scheduled):
    ok(post(api, scheduled["id"], "archive"))
    assert ok(api.get(f"/v1/deployments/{scheduled['id']}"))["archived_at"] is not None


@pytest.mark.parametrize("action", ["pause", "unpause", "archive"])
def test_lifecycle_of_an_unknown_deployment_is_404(api, action):
    assert error(post(api, "depl_nope", action), 404) == "deployment depl_nope not found"


def test_lifecycle_routes_accept_only_post(api, scheduled):
    assert api.get(f"/v1/deployments/{scheduled['id']}/pause").status_code == 405


# --- next_fire_at, kept right by every service -----------------------------------------------------------


def test_next_fire_at_follows_every_transition(api, body):
    data = create(api, body, schedule=WEEKLY)
    expected = row(data["id"]).next_fire_at
    assert expected == next_fire("0 20 * * 5", "America/New_York", timezone.now() - timedelta(seconds=5))

    ok(post(api, data["id"], "pause"))
    assert row(data["id"]).next_fire_at is None
    ok(post(api, data["id"], "unpause"))
    assert row(data["id"]).next_fire_at == expected
    ok(update(api, data["id"], {"schedule": {"type": "cron", "expression": "0 9 * * 1", "timezone": "Europe/Paris"}}))
    changed = row(data["id"]).next_fire_at
    assert changed == next_fire("0 9 * * 1", "Europe/Paris", timezone.now() - timedelta(seconds=5))
    ok(update(api, data["id"], {"schedule": None}))
    assert row(data["id"]).next_fire_at is None
    ok(update(api, data["id"], {"schedule": WEEKLY}))
    assert row(data["id"]).next_fire_at == expected
    ok(post(api, data["id"], "archive"))
    assert row(data["id"]).next_fire_at is None


def test_deployment_next_fire_at_rule(api, body):
    deployment = row(create(api, body, schedule=WEEKLY)["id"])
    after = timezone.now()
    assert services.deployment_next_fire_at(deployment=deployment, after=after) == next_fire(
        "0 20 * * 5", "America/New_York", after
    )
    deployment.status = Deployment.Status.PAUSED
    assert services.deployment_next_fire_at(deployment=deployment, after=after) is None
    deployment.status, deployment.archived_at = Deployment.Status.ACTIVE, after
    assert services.deployment_next_fire_at(deployment=deployment, after=after) is None
    deployment.archived_at, deployment.schedule_expression, deployment.schedule_timezone = None, None, None
    assert services.deployment_next_fire_at(deployment=deployment, after=after) is None


# --- services inside an outer transaction ----------------------------------------------------------------


def test_services_join_an_outer_transaction_and_roll_back_with_it(api, scheduled):
    deployment = row(scheduled["id"])
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            services.deployment_pause(deployment=deployment)
            services.deployment_archive(deployment=deployment)
            assert row(scheduled["id"]).archived_at is not None
            raise RuntimeError("outer transaction fails")
    stored = row(scheduled["id"])
    assert (stored.status, stored.archived_at) == ("active", None)
    assert stored.next_fire_at is not None


def test_a_refused_service_call_leaves_the_outer_transaction_usable(api, scheduled):
    deployment = row(scheduled["id"])
    services.deployment_archive(deployment=deployment)
    with transaction.atomic():
        with pytest.raises(DeploymentArchived):
            services.deployment_pause(deployment=deployment)
        assert Deployment.objects.filter(pk=scheduled["id"]).exists()


def test_services_refresh_the_callers_instance(api, scheduled):
    stale = row(scheduled["id"])
    ok(post(api, scheduled["id"], "pause"))
    returned = services.deployment_pause(deployment=stale)
    assert returned is stale
    assert stale.status == "paused"

"""`POST /v1/deployments/{id}/backfill`: the occurrences of a past range run now, each once, with
their own `scheduled_at` and `"backfill": true`, through the one fire path."""

from datetime import datetime, timedelta, timezone

import pytest
from django.utils import timezone as dj_timezone

from deployments_app import schedule
from deployments_app.models import Deployment
from platform_app.models import Session
from runs_app import firing, scheduler
from runs_app.models import DeploymentRun, Fire
from tests.deployments.helpers import error, ok
from tests.factories import make_agent, make_deployment, make_environment

pytestmark = pytest.mark.django_db
UTC = timezone.utc
DAILY = "0 9 * * *"


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """Fires are published after commit; these tests run them in-process instead."""
    sent = []
    monkeypatch.setattr(scheduler, "publish", lambda fires, now=None: sent.extend(fires))
    return sent


@pytest.fixture
def deployment(tenant, settings):
    settings.SCHEDULER_MAX_JITTER_SECONDS = 10
    return make_deployment(tenant, agent=make_agent(tenant), environment=make_environment(tenant),
                           expression=DAILY, jitter_fraction=0.5)


def z(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def past_range(days: int = 3) -> tuple[datetime, datetime]:
    today = dj_timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days), today


def occurrences(start: datetime, end: datetime, **options) -> list[datetime]:
    return [at for at in schedule.next_fires(DAILY, "UTC", start - timedelta(seconds=1), 50, **options) if at < end]


def pending() -> list[str]:
    return list(Fire.objects.filter(status="pending").values_list("pk", flat=True))


def backfill(api, deployment_id: str, start: datetime, end: datetime):
    return api.post(f"/v1/deployments/{deployment_id}/backfill", {"start": z(start), "end": z(end)}, format="json")


def test_backfill_schedules_one_run_per_occurrence_and_answers_the_runs_to_come(api, deployment):
    start, end = past_range(3)
    expected = occurrences(start, end)
    assert len(expected) == 3
    before = dj_timezone.now()
    data = ok(backfill(api, deployment.id, start, end))
    assert data["next_page"] is None
    assert [run["trigger_context"] for run in data["data"]] == [
        {"type": "schedule", "scheduled_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "backfill": True} for at in expected]
    fires = list(Fire.objects.order_by("scheduled_at"))
    assert [fire.scheduled_at for fire in fires] == expected
    assert all(fire.backfill and fire.status == "pending" for fire in fires)
    for fire, run in zip(fires, data["data"], strict=True):
        assert run["id"] == fire.run_id and run["id"].startswith("drun_")
        assert (run["session_id"], run["error"]) == (None, None)
        assert run["agent"] == {"type": "agent", "id": deployment.agent_id, "version": deployment.agent_version}
        # Spread by the deployment's jitter, like a scheduled fire due now.
        assert before + timedelta(seconds=5) <= fire.due_at <= dj_timezone.now() + timedelta(seconds=5)
    assert DeploymentRun.objects.count() == 0  # runs appear once they have their outcome


def test_backfilled_fires_run_through_the_fire_path_with_backfill_in_the_trigger(
        api, deployment, no_broker, django_capture_on_commit_callbacks):
    start, end = past_range(2)
    with django_capture_on_commit_callbacks(execute=True):
        data = ok(backfill(api, deployment.id, start, end))
    # Published once committed, each with its due time (now plus the jitter).
    assert sorted((fire_id, due) for fire_id, due, _ in no_broker) == sorted(
        Fire.objects.values_list("pk", "due_at"))
    results = firing.execute_fires([fire_id for fire_id, _, _ in no_broker])
    assert sorted(result.status for result in results.values()) == ["done", "done"]
    for promised in data["data"]:
        run = ok(api.get(f"/v1/deployment_runs/{promised['id']}"))
        assert run["trigger_context"] == promised["trigger_context"]
        assert run["session_id"].startswith("sesn_") and run["error"] is None
    assert Session.objects.count() == 2
    deployment.refresh_from_db()
    assert deployment.last_run_at is not None
    # Runs of an ordinary fire keep the hosted API's trigger_context exactly.
    minute = dj_timezone.now().replace(second=0, microsecond=0)
    Deployment.objects.filter(pk=deployment.pk).update(schedule_expression="* * * * *", next_fire_at=minute)
    [(fire_id, _, _)] = scheduler.claim_due(minute).fires
    plain = DeploymentRun.objects.get(pk=firing.execute_fire(fire_id).run_id)
    assert set(ok(api.get(f"/v1/deployment_runs/{plain.id}"))["trigger_context"]) == {"type", "scheduled_at"}


def test_an_occurrence_that_has_a_run_or_a_fire_is_never_run_again(api, deployment):
    start, end = past_range(3)
    first = ok(backfill(api, deployment.id, start, end))
    again = ok(backfill(api, deployment.id, start, end))  # the fires are still pending
    assert again["data"] == []
    firing.execute_fires(pending())
    wider = ok(backfill(api, deployment.id, start - timedelta(days=1), end))  # one more day, three done
    assert len(wider["data"]) == 1 and wider["data"][0]["id"] not in {run["id"] for run in first["data"]}
    assert Fire.objects.count() == 4
    assert DeploymentRun.objects.count() == 3


def test_backfill_runs_while_paused_and_revives_fires_skipped_then(api, deployment):
    start, end = past_range(2)
    expected = occurrences(start, end)
    ok(api.post(f"/v1/deployments/{deployment.id}/pause"))
    # The first occurrence's fire was written and skipped because the deployment was paused.
    skipped = Fire.objects.create(deployment=deployment, scheduled_at=expected[0], due_at=expected[0],
                                  status="skipped", skip_reason="paused")
    data = ok(backfill(api, deployment.id, start, end))
    assert [run["trigger_context"]["scheduled_at"] for run in data["data"]] == [
        at.strftime("%Y-%m-%dT%H:%M:%SZ") for at in expected]
    skipped.refresh_from_db()
    assert (skipped.status, skipped.backfill, skipped.skip_reason) == ("pending", True, "")
    assert data["data"][0]["id"] == skipped.run_id
    results = firing.execute_fires(pending())
    assert sorted(result.status for result in results.values()) == ["done", "done"]
    deployment.refresh_from_db()
    assert deployment.status == "paused"  # a backfill does not unpause


def test_backfill_obeys_the_window_and_the_fold_policy(api, tenant):
    deployment = make_deployment(tenant, agent=make_agent(tenant), environment=make_environment(tenant),
                                 expression="30 1 * * *", timezone_name="America/New_York")
    Deployment.objects.filter(pk=deployment.pk).update(schedule_dst_fold="last")
    start, end = datetime(2026, 10, 31, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    data = ok(backfill(api, deployment.id, start, end))
    assert [run["trigger_context"]["scheduled_at"] for run in data["data"]] == [
        "2026-10-31T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"]
    Fire.objects.all().delete()
    Deployment.objects.filter(pk=deployment.pk).update(schedule_start_at=datetime(2026, 11, 1, 6, tzinfo=UTC),
                                                       schedule_end_at=datetime(2026, 11, 2, tzinfo=UTC))
    data = ok(backfill(api, deployment.id, start, end))
    assert [run["trigger_context"]["scheduled_at"] for run in data["data"]] == ["2026-11-01T06:30:00Z"]


def test_the_range_is_half_open(api, deployment):
    start, end = past_range(2)
    first_nine = start.replace(hour=9)
    data = ok(backfill(api, deployment.id, first_nine, first_nine + timedelta(days=1)))
    assert [run["trigger_context"]["scheduled_at"] for run in data["data"]] == [
        first_nine.strftime("%Y-%m-%dT%H:%M:%SZ")]


@pytest.mark.parametrize("body, message", [
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end: must be after start"),
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end: must be after start"),
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
     "end: a backfill spans at most 31 days (BACKFILL_MAX_RANGE_DAYS); split the range"),
    ({"start": "2026-01-01", "end": "2026-01-02T00:00:00Z"},
     "start: must be an RFC 3339 timestamp with a time zone, e.g. 2026-05-09T00:00:00Z"),
    ({"start": "2026-01-01T00:00:00Z"}, "end: is required"),
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "dry_run": True}, "dry_run: unknown field"),
    ({"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"}, "start: must be after 1970-01-01T00:00:00Z"),
])
def test_invalid_ranges_are_400_naming_the_field(api, deployment, body, message):
    assert error(api.post(f"/v1/deployments/{deployment.id}/backfill", body, format="json"), 400) == message
    assert Fire.objects.count() == 0


def test_the_future_and_too_many_occurrences_are_refused(api, deployment, settings):
    now = dj_timezone.now()
    assert error(backfill(api, deployment.id, now - timedelta(days=1), now + timedelta(hours=1)), 400).startswith(
        "end: must not be in the future")
    settings.BACKFILL_MAX_RUNS = 2
    start, end = past_range(3)
    assert error(backfill(api, deployment.id, start, end), 400) == (
        "end: the range holds more than 2 occurrences; a backfill runs at most 2 (BACKFILL_MAX_RUNS): split the range")
    assert Fire.objects.count() == 0


def test_backfill_stays_within_the_run_limit(api, deployment):
    Deployment.objects.filter(pk=deployment.pk).update(schedule_max_runs=3, runs_counted=1)
    start, end = past_range(3)
    assert error(backfill(api, deployment.id, start, end), 400) == (
        "end: the range holds 3 occurrences to run but the deployment has 2 run(s) left under schedule.max_runs "
        "(fires already scheduled included)")
    assert len(ok(backfill(api, deployment.id, start + timedelta(days=1), end))["data"]) == 2


def test_archived_manual_only_and_other_tenants_deployments_are_refused(api, deployment, tenant, other_tenant):
    start, end = past_range(2)
    assert error(backfill(other_tenant.client(), deployment.id, start, end), 404).startswith("deployment")
    manual = make_deployment(tenant, agent=make_agent(tenant), environment=make_environment(tenant), expression=None)
    assert error(backfill(api, manual.id, start, end), 400) == (
        f"deployment {manual.id} has no schedule: there are no occurrences to backfill")
    ok(api.post(f"/v1/deployments/{deployment.id}/archive"))
    assert "archived" in error(backfill(api, deployment.id, start, end), 400)
    assert Fire.objects.count() == 0

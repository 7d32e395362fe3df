"""The scheduling policies on the fire path, in-process against PostgreSQL through the built-in
platform: overlap (skip, cancel_previous), the run limit, the active window, the failure threshold
and the DST fold policy — each fire still exactly one run."""

from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY

from deployments_app import schedule
from deployments_app.models import Deployment
from deployments_app.services import deployment_update
from gateways import GatewayUnavailable, SessionOutcome
from gateways.local import LocalGateway
from platform_app.models import Environment, Session
from platform_app.services import session_status_set
from runs_app import firing, scheduler
from runs_app.models import DeploymentRun, Fire
from tests.factories import make_agent, make_deployment, make_environment
from webhooks_app import services as webhook_services
from webhooks_app.events import EVENT_TYPES
from webhooks_app.models import WebhookEvent

pytestmark = pytest.mark.django_db

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture(autouse=True)
def quick(settings, monkeypatch):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0
    settings.SCHEDULER_CATCHUP_WINDOW_SECONDS = 300
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 0
    monkeypatch.setattr(webhook_services, "ring_doorbell", lambda: None)


@pytest.fixture
def published(monkeypatch):
    """What the fire path re-publishes (deferred fires), instead of the broker."""
    sent = []
    monkeypatch.setattr(firing, "_publish", lambda fires: sent.extend(fire_id for fire_id, _, _ in fires))
    return sent


@pytest.fixture
def deployment(tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    return make_deployment(tenant, agent=agent, environment=environment, now=T0 - MINUTE, jitter_fraction=0.0)


def set_policy(deployment, **columns) -> Deployment:
    Deployment.objects.filter(pk=deployment.pk).update(**columns)
    deployment.refresh_from_db()
    return deployment


def fire(minute: int, gateway=None) -> dict:
    """Claim what is due at T0 + `minute` minutes and execute it as one batch."""
    ids = [fire_id for fire_id, _, _ in scheduler.claim_due(T0 + minute * MINUTE).fires]
    return firing.execute_fires(ids, gateway=gateway) if ids else {}


def only_run(results: dict) -> DeploymentRun:
    [result] = results.values()
    return DeploymentRun.objects.get(pk=result.run_id)


def running(session_id: str) -> None:
    session_status_set(session=Session.objects.get(pk=session_id), status="running")


def idle(session_id: str) -> None:
    session_status_set(session=Session.objects.get(pk=session_id), status="idle")


def limited(reason: str) -> float:
    return REGISTRY.get_sample_value("sd_fires_limited_total", {"reason": reason}) or 0.0


def subscribe(tenant):
    webhook_services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                             url="https://hooks.example.com/in", enabled_events=list(EVENT_TYPES))


# --- overlap: skip ---------------------------------------------------------------------------------


def test_skip_records_a_typed_run_naming_the_running_session_and_asks_for_no_session(deployment):
    set_policy(deployment, policy_overlap="skip")
    first = only_run(fire(0))
    assert first.session_id is not None
    running(first.session_id)
    before = limited("overlap_skipped")

    results = fire(1)
    skipped = only_run(results)
    assert [result.status for result in results.values()] == ["done"]
    assert skipped.session_id is None and skipped.error_type == "previous_run_active_error"
    assert skipped.error_message == (f"session {first.session_id} of the previous run {first.id} is still running "
                                     "(policy.overlap: skip)")
    assert skipped.scheduled_at == T0.replace(second=0) + MINUTE
    assert Session.objects.count() == 1  # no session asked for
    assert Fire.objects.get(pk=skipped.fire_id).status == "done"
    assert limited("overlap_skipped") == before + 1

    # Exactly once: the skipped fire delivered again does nothing more.
    assert firing.execute_fire(skipped.fire_id).status == "not_claimed"
    assert DeploymentRun.objects.filter(fire_id=skipped.fire_id).count() == 1

    idle(first.session_id)  # the previous session finished: the next fire runs
    third = only_run(fire(2))
    assert third.session_id is not None and third.session_id != first.session_id
    deployment.refresh_from_db()
    assert deployment.status == "active" and deployment.last_run_at == third.started_at


def test_skip_lets_a_fire_run_when_there_is_no_previous_session(deployment):
    set_policy(deployment, policy_overlap="skip")
    assert only_run(fire(0)).session_id is not None


def test_a_manual_runs_session_is_the_previous_run_too(deployment):
    set_policy(deployment, policy_overlap="skip")
    manual = firing.run_manually(deployment=deployment).run
    running(manual.session_id)
    skipped = only_run(fire(0))
    assert skipped.error_type == "previous_run_active_error" and manual.session_id in skipped.error_message
    # Manual runs themselves are never held back by the overlap policy.
    assert firing.run_manually(deployment=deployment).run.session_id is not None


def test_allow_asks_nothing_and_overlaps(deployment, monkeypatch):
    asked = []
    monkeypatch.setattr(LocalGateway, "session_states", lambda self, **kwargs: asked.append(kwargs) or {})
    first = only_run(fire(0))
    running(first.session_id)
    assert only_run(fire(1)).session_id is not None
    assert asked == []


# --- overlap: cancel_previous ------------------------------------------------------------------------


def test_cancel_previous_stops_the_running_session_then_starts_the_new_one(deployment):
    set_policy(deployment, policy_overlap="cancel_previous")
    first = only_run(fire(0))
    running(first.session_id)
    before = limited("previous_cancelled")

    second = only_run(fire(1))
    assert second.session_id is not None and second.session_id != first.session_id
    assert Session.objects.get(pk=first.session_id).status == "terminated"
    assert Session.objects.get(pk=second.session_id).status == "idle"
    assert limited("previous_cancelled") == before + 1

    # An idle previous session is left alone.
    third = only_run(fire(2))
    assert third.session_id and Session.objects.get(pk=second.session_id).status == "idle"


class StubbornGateway(LocalGateway):
    """The built-in platform, but the previous session cannot be stopped."""

    def sessions_stop(self, *, organization_id, session_ids):
        return {session_id: "the platform refused to interrupt it (409)" for session_id in session_ids}


def test_a_session_that_cannot_be_stopped_is_not_joined_by_a_second(deployment):
    set_policy(deployment, policy_overlap="cancel_previous")
    first = only_run(fire(0))
    running(first.session_id)
    refused = only_run(fire(1, gateway=StubbornGateway()))
    assert refused.error_type == "previous_run_active_error"
    assert refused.error_message.endswith("could not be stopped (policy.overlap: cancel_previous): "
                                          "the platform refused to interrupt it (409)")
    assert Session.objects.count() == 1 and Session.objects.get().status == "running"


class BlindGateway(LocalGateway):
    """The built-in platform, but it cannot say how a session is doing."""

    calls = 0

    def session_states(self, *, organization_id, session_ids):
        BlindGateway.calls += 1
        raise GatewayUnavailable("connection refused")


def test_a_platform_that_cannot_answer_is_retried_then_recorded_as_unavailable(deployment, settings):
    settings.GATEWAY_RETRY_ATTEMPTS = 3
    set_policy(deployment, policy_overlap="skip")
    only_run(fire(0))
    BlindGateway.calls = 0
    failed = only_run(fire(1, gateway=BlindGateway()))
    assert BlindGateway.calls == 3
    assert failed.error_type == "service_unavailable_error"
    assert "could not say whether the previous session still runs after 3 attempts: connection refused" in (
        failed.error_message)
    assert Session.objects.count() == 1


def test_the_platform_is_asked_once_per_batch_and_organization(tenant, monkeypatch):
    agent, environment = make_agent(tenant), make_environment(tenant)
    fleet = [make_deployment(tenant, agent=agent, environment=environment, now=T0 - MINUTE, name=f"d{i}",
                             jitter_fraction=0.0) for i in range(4)]
    Deployment.objects.filter(pk__in=[d.pk for d in fleet]).update(policy_overlap="skip")
    firsts = fire(0)
    assert len(firsts) == 4
    asked = []
    real = LocalGateway.session_states

    def counting(self, *, organization_id, session_ids):
        asked.append(sorted(session_ids))
        return real(self, organization_id=organization_id, session_ids=session_ids)

    monkeypatch.setattr(LocalGateway, "session_states", counting)
    fire(1)
    assert asked == [sorted(DeploymentRun.objects.get(pk=r.run_id).session_id for r in firsts.values())]


# --- several fires of one deployment in a batch ----------------------------------------------------------


def test_later_fires_of_a_deployment_wait_for_the_earlier_one_then_ask_about_it(deployment, published):
    set_policy(deployment, policy_overlap="skip")
    # Back from downtime: three occurrences inside the catch-up window, claimed together.
    Deployment.objects.filter(pk=deployment.pk).update(next_fire_at=T0.replace(second=0) - 2 * MINUTE)
    ids = [fire_id for fire_id, _, _ in scheduler.claim_due(T0).fires]
    assert len(ids) == 3
    results = firing.execute_fires(ids)
    assert sorted(result.status for result in results.values()) == ["deferred", "deferred", "done"]
    assert sorted(published) == sorted(fire_id for fire_id, r in results.items() if r.status == "deferred")
    assert set(Fire.objects.filter(pk__in=published).values_list("status", flat=True)) == {"pending"}
    [first] = DeploymentRun.objects.all()
    assert first.scheduled_at == T0.replace(second=0) - 2 * MINUTE  # the earliest occurrence runs first

    running(first.session_id)
    again = firing.execute_fires(list(published))
    assert sorted(result.status for result in again.values()) == ["deferred", "done"]
    last = [fire_id for fire_id, r in again.items() if r.status == "deferred"]
    assert firing.execute_fires(last)[last[0]].status == "done"

    runs = list(DeploymentRun.objects.order_by("scheduled_at"))
    assert [run.error_type for run in runs] == [None, "previous_run_active_error", "previous_run_active_error"]
    assert len({run.fire_id for run in runs}) == 3 and Session.objects.count() == 1
    assert set(Fire.objects.values_list("status", flat=True)) == {"done"}


# --- the run limit -------------------------------------------------------------------------------------


def test_the_deployment_archives_itself_after_max_runs_scheduled_runs(deployment, tenant):
    subscribe(tenant)
    set_policy(deployment, schedule_max_runs=2)
    firing.run_manually(deployment=deployment)  # manual runs do not count
    fire(0)
    deployment.refresh_from_db()
    assert (deployment.runs_counted, deployment.runs_remaining, deployment.archived_at) == (1, 1, None)
    fire(1)
    deployment.refresh_from_db()
    assert deployment.archived_at is not None and deployment.runs_remaining == 0
    assert deployment.next_fire_at is None
    assert DeploymentRun.objects.filter(trigger_type="schedule").count() == 2
    assert ("deployment.archived", deployment.pk) in WebhookEvent.objects.values_list("type", "object_id")
    assert fire(2) == {}


def test_a_fire_skipped_for_overlap_does_not_count_toward_max_runs(deployment):
    set_policy(deployment, schedule_max_runs=2, policy_overlap="skip")
    first = only_run(fire(0))
    running(first.session_id)
    assert only_run(fire(1)).error_type == "previous_run_active_error"
    deployment.refresh_from_db()
    assert (deployment.runs_counted, deployment.archived_at) == (1, None)
    idle(first.session_id)
    assert only_run(fire(2)).session_id
    deployment.refresh_from_db()
    assert deployment.runs_counted == 2 and deployment.archived_at is not None


def test_failed_runs_count_toward_max_runs_too(deployment, tenant):
    set_policy(deployment, schedule_max_runs=1)
    Environment.objects.filter(pk=deployment.environment_id).update(archived_at=T0)  # fails, and counts
    assert only_run(fire(0)).error_type == "environment_archived_error"
    deployment.refresh_from_db()
    assert deployment.archived_at is not None


def test_the_scheduler_never_writes_more_fires_than_runs_remain(deployment):
    set_policy(deployment, schedule_max_runs=3, runs_counted=1)
    Deployment.objects.filter(pk=deployment.pk).update(next_fire_at=T0.replace(second=0) - 3 * MINUTE)
    before = limited("max_runs")
    written = scheduler.claim_due(T0).fires
    assert len(written) == 2  # four occurrences in the catch-up window, two runs left
    assert limited("max_runs") == before + 2
    deployment.refresh_from_db()
    assert deployment.next_fire_at == T0.replace(second=0) + MINUTE
    # Open fires hold their share of the budget: the next tick writes none.
    assert scheduler.claim_due(T0 + MINUTE).fires == []


def test_fires_beyond_a_lowered_limit_are_skipped_on_the_fire_path(deployment):
    Deployment.objects.filter(pk=deployment.pk).update(next_fire_at=T0.replace(second=0) - MINUTE)
    ids = [fire_id for fire_id, _, _ in scheduler.claim_due(T0).fires]
    assert len(ids) == 2
    set_policy(deployment, schedule_max_runs=1)  # set behind the service's back, after the fires were written
    results = firing.execute_fires(ids)
    assert sorted(result.status for result in results.values()) == ["done", "skipped"]
    assert Fire.objects.get(status="skipped").skip_reason == "max_runs"
    deployment.refresh_from_db()
    assert deployment.archived_at is not None and DeploymentRun.objects.count() == 1


# --- the active window -----------------------------------------------------------------------------------


def test_no_fire_before_start_at_or_after_end_at(deployment):
    start = T0.replace(second=0) + 2 * MINUTE
    deployment_update(deployment=deployment, data={"schedule": {
        "type": "cron", "expression": "* * * * *", "timezone": "UTC", "start_at": start, "end_at": start + MINUTE}})
    # deployment_update computes next_fire_at from the real clock; bring it back to the test's.
    Deployment.objects.filter(pk=deployment.pk).update(
        next_fire_at=schedule.next_fires("* * * * *", "UTC", T0, 1, start_at=start, end_at=start + MINUTE)[0])
    fired = []
    for minute in range(6):
        fired += [DeploymentRun.objects.get(pk=r.run_id).scheduled_at for r in fire(minute).values()]
    assert fired == [start, start + MINUTE]
    deployment.refresh_from_db()
    assert deployment.next_fire_at is None and deployment.status == "active" and deployment.archived_at is None


def test_a_fire_written_before_the_window_closed_is_skipped(deployment):
    ids = [fire_id for fire_id, _, _ in scheduler.claim_due(T0).fires]  # the 10:00 fire, written
    Deployment.objects.filter(pk=deployment.pk).update(schedule_end_at=T0.replace(second=0) - MINUTE)
    before = limited("outside_window")
    assert firing.execute_fire(ids[0]).status == "skipped"
    assert Fire.objects.get(pk=ids[0]).skip_reason == "outside_window"
    assert limited("outside_window") == before + 1
    assert DeploymentRun.objects.count() == 0


# --- the failure threshold ------------------------------------------------------------------------------------


class RejectingGateway(LocalGateway):
    """The built-in platform, refusing every session while `refuse` is set."""

    refuse = True

    def create_sessions(self, requests):
        if self.refuse:
            return [SessionOutcome.failure("session_creation_rejected_error", "quota exhausted")] * len(requests)
        return super().create_sessions(requests)


def test_pause_after_n_failures_in_a_row_with_the_last_error_and_the_count(deployment, tenant):
    subscribe(tenant)
    set_policy(deployment, policy_pause_after_failures=2)
    gateway = RejectingGateway()
    fire(0, gateway)
    deployment.refresh_from_db()
    assert (deployment.status, deployment.consecutive_failures) == ("active", 1)
    fire(1, gateway)
    deployment.refresh_from_db()
    assert deployment.status == "paused" and deployment.next_fire_at is None
    assert deployment.paused_reason == {
        "type": "error", "error": {"type": "session_creation_rejected_error", "message": "quota exhausted"},
        "consecutive_failures": 2,
    }
    assert ("deployment.paused", deployment.pk) in WebhookEvent.objects.values_list("type", "object_id")


def test_a_success_resets_the_count_and_an_overlap_skip_neither_counts_nor_resets(deployment):
    set_policy(deployment, policy_pause_after_failures=2, policy_overlap="skip")
    gateway = RejectingGateway()
    gateway.refuse = False
    first = only_run(fire(0, gateway))
    gateway.refuse = True
    fire(1, gateway)  # 1 failure
    running(first.session_id)
    assert only_run(fire(2, gateway)).error_type == "previous_run_active_error"
    deployment.refresh_from_db()
    assert (deployment.status, deployment.consecutive_failures) == ("active", 1)
    idle(first.session_id)
    gateway.refuse = False
    fire(3, gateway)  # a success: back to 0
    gateway.refuse = True
    fire(4, gateway)
    deployment.refresh_from_db()
    assert (deployment.status, deployment.consecutive_failures) == ("active", 1)
    fire(5, gateway)
    deployment.refresh_from_db()
    assert deployment.status == "paused" and deployment.paused_reason["consecutive_failures"] == 2


def test_manual_runs_never_count_toward_the_threshold(deployment, tenant):
    set_policy(deployment, policy_pause_after_failures=1)
    Environment.objects.filter(pk=deployment.environment_id).update(archived_at=T0)
    assert firing.run_manually(deployment=deployment).run.error_type == "environment_archived_error"
    deployment.refresh_from_db()
    assert (deployment.status, deployment.consecutive_failures) == ("active", 0)


# --- the DST fold policy through the scheduler -----------------------------------------------------------------


@pytest.mark.parametrize("fold, expected", [
    ("both", [datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)]),
    ("first", [datetime(2026, 11, 1, 5, 30, tzinfo=UTC)]),
    ("last", [datetime(2026, 11, 1, 6, 30, tzinfo=UTC)]),
])
def test_the_scheduler_fires_a_repeated_time_per_the_fold_policy(tenant, fold, expected):
    start, end = datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 1, 12, tzinfo=UTC)
    deployment = make_deployment(tenant, agent=make_agent(tenant), environment=make_environment(tenant),
                                 expression="30 1 * * *", timezone_name="America/New_York", now=start)
    Deployment.objects.filter(pk=deployment.pk).update(
        schedule_dst_fold=fold,
        next_fire_at=schedule.next_fires("30 1 * * *", "America/New_York", start, 1, dst_fold=fold)[0])
    now = start
    while now <= end:
        for fire_id, _, _ in scheduler.claim_due(now).fires:
            firing.execute_fire(fire_id)
        now += timedelta(minutes=10)
    assert list(DeploymentRun.objects.order_by("scheduled_at").values_list("scheduled_at", flat=True)) == expected

"""The fire path in-process against PostgreSQL: scheduler claims, worker execution, the outcome
policy of SPEC §7 made to happen for real through the built-in platform."""

from datetime import datetime, timedelta, timezone

import pytest
from django.utils import timezone as dj_timezone

from deployments_app.models import Deployment
from platform_app.models import Session, Vault
from runs_app import firing, scheduler
from gateways import GatewayUnavailable, SessionGateway, SessionOutcome
from runs_app.models import DeploymentRun, Fire
from tests.factories import make_agent, make_deployment, make_environment, make_vault

pytestmark = pytest.mark.django_db

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)


@pytest.fixture
def setup(tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    deployment = make_deployment(tenant, agent=agent, environment=environment, now=T0 - timedelta(minutes=1))
    return tenant, agent, environment, deployment


def claim_and_fire(now=T0, gateway=None) -> list[firing.FireResult]:
    result = scheduler.claim_due(now)
    return [firing.execute_fire(fire_id, gateway=gateway) for fire_id, _, _ in result.fires]


def test_tick_writes_one_fire_and_advances_next_fire_at(setup):
    _, _, _, deployment = setup
    assert deployment.next_fire_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    result = scheduler.claim_due(T0)
    assert [dep for _, _, dep in result.fires] == [deployment.id]
    fire = Fire.objects.get()
    assert fire.scheduled_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert fire.due_at == fire.scheduled_at + scheduler.jitter_for(deployment)
    deployment.refresh_from_db()
    assert deployment.next_fire_at == datetime(2026, 11, 23, 10, 1, tzinfo=UTC)
    assert scheduler.claim_due(T0).fires == []


def test_jitter_is_fixed_per_deployment_and_below_the_maximum(setup, settings):
    settings.SCHEDULER_MAX_JITTER_SECONDS = 10
    _, _, _, deployment = setup
    deployment.jitter_fraction = 0.75
    assert scheduler.jitter_for(deployment) == timedelta(seconds=7.5)


def test_catch_up_fires_inside_the_window_and_counts_older_ones(setup, settings):
    settings.SCHEDULER_CATCHUP_WINDOW_SECONDS = 300
    _, _, _, deployment = setup
    Deployment.objects.filter(pk=deployment.pk).update(next_fire_at=datetime(2026, 11, 23, 9, 50, tzinfo=UTC))
    result = scheduler.claim_due(T0)
    scheduled = sorted(Fire.objects.values_list("scheduled_at", flat=True))
    # window starts 09:55:30: 09:56..10:00 fire (5), 09:50..09:55 are missed (6)
    assert scheduled == [datetime(2026, 11, 23, 9, 56, tzinfo=UTC) + timedelta(minutes=i) for i in range(5)]
    assert result.missed == 6
    deployment.refresh_from_db()
    assert deployment.missed_fires == 6
    assert deployment.next_fire_at == datetime(2026, 11, 23, 10, 1, tzinfo=UTC)


def test_long_downtime_counts_every_missed_fire(setup, settings):
    settings.SCHEDULER_CATCHUP_WINDOW_SECONDS = 300
    _, _, _, deployment = setup
    Deployment.objects.filter(pk=deployment.pk).update(next_fire_at=datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
    result = scheduler.claim_due(T0)
    # two days of minutes before the window (10:00 two days ago .. 09:55 today)
    assert result.missed == 2 * 24 * 60 - 4
    assert Fire.objects.count() == 5


def test_paused_and_manual_only_deployments_are_not_claimed(setup):
    tenant, agent, environment, deployment = setup
    Deployment.objects.filter(pk=deployment.pk).update(
        status="paused", paused_reason={"type": "manual"}, next_fire_at=None
    )
    make_deployment(tenant, agent=agent, environment=environment, expression=None)
    assert scheduler.claim_due(T0).fires == []
    assert Fire.objects.count() == 0


def test_success_records_one_run_and_one_session(setup):
    tenant, agent, _, deployment = setup
    [result] = claim_and_fire()
    assert result.status == "done"
    run = DeploymentRun.objects.get()
    session = Session.objects.get()
    assert run.session_id == session.id and run.error_type is None
    assert run.trigger_type == "schedule"
    assert run.scheduled_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert (run.agent_id, run.agent_version) == (agent.id, 1)
    assert session.deployment_run_id == run.id
    fire = Fire.objects.get()
    assert fire.status == "done" and fire.run_id == run.id
    deployment.refresh_from_db()
    assert deployment.last_run_at == run.started_at == fire.started_at


def test_executing_a_fire_twice_creates_nothing_more(setup):
    claim_and_fire()
    fire = Fire.objects.get()
    assert firing.execute_fire(fire.id).status == "not_claimed"
    assert DeploymentRun.objects.count() == 1
    assert Session.objects.count() == 1


def test_expired_lease_lets_another_worker_finish_with_the_same_session(setup):
    result = scheduler.claim_due(T0)
    fire_id = result.fires[0][0]
    # A worker claimed it, created the session, then died before recording the run.
    assert firing._claim(fire_id, dj_timezone.now())
    fire = Fire.objects.get(pk=fire_id)
    from platform_app.services import session_create

    deployment = fire.deployment
    session, _ = session_create(
        organization=deployment.organization, workspace=deployment.workspace,
        agent={"type": "agent", "id": deployment.agent_id, "version": deployment.agent_version},
        environment_id=deployment.environment_id, initial_events=deployment.initial_events,
        idempotency_key=fire.id,
    )
    Fire.objects.filter(pk=fire_id).update(lease_expires_at=dj_timezone.now() - timedelta(seconds=1))
    assert firing.execute_fire(fire_id).status == "done"
    run = DeploymentRun.objects.get()
    assert run.session_id == session.id
    assert Session.objects.count() == 1
    assert Fire.objects.get(pk=fire_id).attempts == 2


def test_fire_skipped_when_deployment_paused_since(setup):
    _, _, _, deployment = setup
    result = scheduler.claim_due(T0)
    Deployment.objects.filter(pk=deployment.pk).update(status="paused", paused_reason={"type": "manual"}, next_fire_at=None)
    assert firing.execute_fire(result.fires[0][0]).status == "skipped"
    assert Fire.objects.get().skip_reason == "paused"
    assert DeploymentRun.objects.count() == 0 and Session.objects.count() == 0


def test_fire_skipped_when_deployment_archived_since(setup):
    _, _, _, deployment = setup
    result = scheduler.claim_due(T0)
    Deployment.objects.filter(pk=deployment.pk).update(archived_at=dj_timezone.now(), next_fire_at=None)
    assert firing.execute_fire(result.fires[0][0]).status == "skipped"
    assert DeploymentRun.objects.count() == 0 and Session.objects.count() == 0


# --- SPEC §7, row by row, through the built-in platform ------------------------------------------


def test_own_agent_archived_archives_the_deployment_and_records_no_run(setup):
    _, agent, _, deployment = setup
    type(agent).objects.filter(pk=agent.pk).update(archived_at=dj_timezone.now())
    [result] = claim_and_fire()
    assert result.status == "archived"
    deployment.refresh_from_db()
    assert deployment.archived_at is not None and deployment.next_fire_at is None
    assert DeploymentRun.objects.count() == 0 and Session.objects.count() == 0


def test_own_agent_deleted_archives_the_deployment(setup):
    _, agent, _, deployment = setup
    agent.delete()
    [result] = claim_and_fire()
    assert result.status == "archived"
    deployment.refresh_from_db()
    assert deployment.archived_at is not None
    assert DeploymentRun.objects.count() == 0


def test_archived_subagent_records_agent_archived_error_and_pauses(tenant):
    sub = make_agent(tenant, name="helper")
    lead = make_agent(tenant, name="lead", roster=[sub.id])
    environment = make_environment(tenant)
    deployment = make_deployment(tenant, agent=lead, environment=environment, now=T0 - timedelta(minutes=1))
    type(sub).objects.filter(pk=sub.pk).update(archived_at=dj_timezone.now())
    claim_and_fire()
    run = DeploymentRun.objects.get()
    assert run.error_type == "agent_archived_error" and sub.id in run.error_message
    deployment.refresh_from_db()
    assert deployment.status == "paused"
    assert deployment.paused_reason == {"type": "error", "error": {"type": "agent_archived_error", "message": run.error_message}}
    assert deployment.next_fire_at is None


def test_archived_environment_records_error_naming_it_and_pauses(setup):
    _, _, environment, deployment = setup
    type(environment).objects.filter(pk=environment.pk).update(archived_at=dj_timezone.now())
    claim_and_fire()
    run = DeploymentRun.objects.get()
    assert run.error_type == "environment_archived_error"
    assert environment.id in run.error_message and "archived" in run.error_message
    deployment.refresh_from_db()
    assert deployment.status == "paused" and deployment.paused_reason["error"]["type"] == "environment_archived_error"


def test_deleted_vault_records_vault_not_found_and_pauses(tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    vault = make_vault(tenant)
    deployment = make_deployment(
        tenant, agent=agent, environment=environment, vault_ids=[vault.id], now=T0 - timedelta(minutes=1)
    )
    Vault.objects.filter(pk=vault.pk).delete()
    claim_and_fire()
    run = DeploymentRun.objects.get()
    assert run.error_type == "vault_not_found_error" and vault.id in run.error_message
    deployment.refresh_from_db()
    assert deployment.status == "paused"


def test_rate_limited_fire_records_error_without_retry_or_pause(setup):
    tenant, _, _, deployment = setup
    tenant.organization.session_rate_limit_per_minute = 1
    tenant.organization.save()
    from platform_app.services import session_create

    session_create(
        organization=tenant.organization, workspace=tenant.workspace, agent=deployment.agent_id,
        environment_id=deployment.environment_id, initial_events=deployment.initial_events,
    )
    calls = CountingGateway(firing.get_gateway())
    claim_and_fire(gateway=calls)
    run = DeploymentRun.objects.get()
    assert run.error_type == "session_rate_limited_error"
    assert calls.count == 1
    deployment.refresh_from_db()
    assert deployment.status == "active" and deployment.next_fire_at is not None
    assert deployment.last_run_at == run.started_at


def test_other_refusal_records_session_creation_rejected_and_does_not_pause(setup):
    _, _, _, deployment = setup
    Deployment.objects.filter(pk=deployment.pk).update(agent_version=7)  # a version that does not exist
    claim_and_fire()
    run = DeploymentRun.objects.get()
    assert run.error_type == "session_creation_rejected_error"
    deployment.refresh_from_db()
    assert deployment.status == "active"


def test_unavailable_platform_is_retried_then_recorded(setup, settings):
    settings.GATEWAY_RETRY_ATTEMPTS = 3
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0
    gateway = FailingGateway(GatewayUnavailable("HTTP 503"))
    claim_and_fire(gateway=gateway)
    run = DeploymentRun.objects.get()
    assert run.error_type == "service_unavailable_error" and "503" in run.error_message
    assert gateway.count == 3
    assert Deployment.objects.get().status == "active"


def test_unexpected_failure_records_unknown_error(setup):
    claim_and_fire(gateway=FailingGateway(RuntimeError("kaboom")))
    run = DeploymentRun.objects.get()
    assert run.error_type == "unknown_error"
    assert "kaboom" not in run.error_message
    assert Deployment.objects.get().status == "active"


# --- manual runs --------------------------------------------------------------------------------


def test_manual_run_while_paused_creates_a_session_and_leaves_last_run_at(setup):
    _, _, _, deployment = setup
    Deployment.objects.filter(pk=deployment.pk).update(status="paused", paused_reason={"type": "manual"}, next_fire_at=None)
    deployment.refresh_from_db()
    result = firing.run_manually(deployment=deployment)
    assert result.run.trigger_type == "manual" and result.run.session_id
    assert result.run.scheduled_at is None
    deployment.refresh_from_db()
    assert deployment.last_run_at is None and deployment.status == "paused"


def test_manual_run_failure_never_pauses(setup):
    _, _, environment, deployment = setup
    type(environment).objects.filter(pk=environment.pk).update(archived_at=dj_timezone.now())
    result = firing.run_manually(deployment=deployment)
    assert result.run.error_type == "environment_archived_error"
    deployment.refresh_from_db()
    assert deployment.status == "active" and deployment.paused_reason is None


class CountingGateway(SessionGateway):
    def __init__(self, inner):
        self.inner = inner
        self.count = 0
        self.transactional = inner.transactional

    def create_sessions(self, requests):
        self.count += len(requests)
        return self.inner.create_sessions(requests)


class FailingGateway(SessionGateway):
    transactional = False

    def __init__(self, exc):
        self.exc = exc
        self.count = 0

    def create_sessions(self, requests) -> list[SessionOutcome]:
        self.count += len(requests)
        raise self.exc

"""Fires executed in batches (`runs.fire_batch`): the same outcomes as one at a time — one run and
one session per fire, the outcome policy of SPEC §7 — with the work of the batch shared."""

import threading
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.utils import timezone as dj_timezone

from deployments_app.models import Deployment
from platform_app.models import Session
from platform_app.services import session_create, sessions_create_batch
from runs_app import firing, scheduler
from runs_app.models import DeploymentRun, Fire
from tests.factories import make_agent, make_deployment, make_environment

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)
MINUTE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def make_fleet(tenant, count: int, **kwargs) -> list[Deployment]:
    agent = kwargs.pop("agent", None) or make_agent(tenant)
    environment = kwargs.pop("environment", None) or make_environment(tenant)
    return [
        make_deployment(tenant, agent=agent, environment=environment, now=T0 - timedelta(minutes=1), name=f"d{i}", **kwargs)
        for i in range(count)
    ]


def claim_ids(now=T0) -> list[str]:
    return [fire_id for fire_id, _, _ in scheduler.claim_due(now).fires]


def statuses(results: dict) -> list[str]:
    return sorted(result.status for result in results.values())


@pytest.mark.django_db
def test_a_batch_records_one_run_and_one_session_per_fire(tenant):
    fleet = make_fleet(tenant, 6)
    fire_ids = claim_ids()
    results = firing.execute_fires(fire_ids)
    assert statuses(results) == ["done"] * 6
    runs = {run.fire_id: run for run in DeploymentRun.objects.all()}
    assert set(runs) == set(fire_ids)
    sessions = {session.idempotency_key: session for session in Session.objects.all()}
    assert set(sessions) == set(fire_ids)  # the fire's id is the session's idempotency key
    for fire in Fire.objects.all():
        run = runs[fire.id]
        assert fire.status == "done" and fire.run_id == run.id == results[fire.id].run_id
        assert fire.lease_expires_at is None and fire.attempts == 1
        assert run.session_id == sessions[fire.id].id and sessions[fire.id].deployment_run_id == run.id
        assert run.trigger_type == "schedule" and run.scheduled_at == MINUTE and run.started_at == fire.started_at
        assert sessions[fire.id].title.startswith("d") and sessions[fire.id].initial_events
    for deployment in fleet:
        deployment.refresh_from_db()
        assert deployment.last_run_at == runs[Fire.objects.get(deployment=deployment).id].started_at


@pytest.mark.django_db
def test_delivering_a_batch_again_creates_nothing_more(tenant):
    make_fleet(tenant, 3)
    fire_ids = claim_ids()
    firing.execute_fires(fire_ids)
    assert statuses(firing.execute_fires(fire_ids)) == ["not_claimed"] * 3
    assert statuses(firing.execute_fires(list(reversed(fire_ids)) + fire_ids)) == ["not_claimed"] * 3
    assert DeploymentRun.objects.count() == 3 and Session.objects.count() == 3


@pytest.mark.django_db
def test_a_mixed_batch_applies_the_outcome_policy_to_each_fire(tenant):
    healthy = make_fleet(tenant, 2)
    paused = make_fleet(tenant, 1)[0]
    broken_environment = make_environment(tenant, name="retired")
    broken = make_fleet(tenant, 1, environment=broken_environment)[0]
    lost_agent = make_agent(tenant, name="gone")
    orphan = make_fleet(tenant, 1, agent=lost_agent)[0]
    fire_ids = claim_ids()
    # After the fires were written: one paused, one environment archived, one agent archived.
    Deployment.objects.filter(pk=paused.pk).update(status="paused", paused_reason={"type": "manual"}, next_fire_at=None)
    type(broken_environment).objects.filter(pk=broken_environment.pk).update(archived_at=dj_timezone.now())
    type(lost_agent).objects.filter(pk=lost_agent.pk).update(archived_at=dj_timezone.now())

    results = firing.execute_fires(fire_ids)
    by_deployment = {Fire.objects.get(pk=fire_id).deployment_id: result for fire_id, result in results.items()}
    assert [by_deployment[d.pk].status for d in healthy] == ["done", "done"]
    assert by_deployment[paused.pk].status == "skipped"
    assert Fire.objects.get(deployment=paused).skip_reason == "paused"
    assert by_deployment[broken.pk].status == "done"
    run = DeploymentRun.objects.get(deployment=broken)
    assert run.error_type == "environment_archived_error" and broken_environment.id in run.error_message
    broken.refresh_from_db()
    assert broken.status == "paused" and broken.paused_reason["error"]["type"] == "environment_archived_error"
    assert by_deployment[orphan.pk].status == "archived"
    orphan.refresh_from_db()
    assert orphan.archived_at is not None and not DeploymentRun.objects.filter(deployment=orphan).exists()
    assert Session.objects.count() == 2  # the two healthy deployments only
    assert not Fire.objects.filter(status__in=["pending", "claimed"]).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("batched", [True, False])
def test_a_fire_written_before_a_schedule_change_is_skipped(tenant, batched):
    [deployment] = make_fleet(tenant, 1)
    fire_ids = claim_ids()
    # The schedule changes to one that no longer fires at 10:00 after the fire was written.
    Deployment.objects.filter(pk=deployment.pk).update(schedule_expression="30 * * * *")
    result = firing.execute_fires(fire_ids)[fire_ids[0]] if batched else firing.execute_fire(fire_ids[0])
    assert result.status == "skipped"
    assert Fire.objects.get().skip_reason == "schedule_changed"
    assert DeploymentRun.objects.count() == 0 and Session.objects.count() == 0


@pytest.mark.django_db
def test_a_schedule_change_that_keeps_the_occurrence_still_fires(tenant):
    [deployment] = make_fleet(tenant, 1)
    fire_ids = claim_ids()
    Deployment.objects.filter(pk=deployment.pk).update(schedule_expression="0 10 * * *")
    assert statuses(firing.execute_fires(fire_ids)) == ["done"]


@pytest.mark.django_db
def test_a_session_created_before_a_crash_is_reused_not_doubled(tenant):
    [deployment, other] = make_fleet(tenant, 2)
    fire_ids = claim_ids()
    fire = Fire.objects.get(deployment=deployment)
    # A worker created this fire's session, then died before recording the run.
    earlier, _ = session_create(
        organization=tenant.organization, workspace=tenant.workspace,
        agent={"type": "agent", "id": deployment.agent_id, "version": deployment.agent_version},
        environment_id=deployment.environment_id, initial_events=deployment.initial_events, idempotency_key=fire.id,
    )
    assert statuses(firing.execute_fires(fire_ids)) == ["done", "done"]
    assert DeploymentRun.objects.get(fire=fire).session_id == earlier.id
    assert Session.objects.count() == 2


@pytest.mark.django_db
def test_the_organization_rate_limit_holds_inside_a_batch(tenant):
    tenant.organization.session_rate_limit_per_minute = 3
    tenant.organization.save()
    make_fleet(tenant, 5)
    results = firing.execute_fires(claim_ids())
    assert statuses(results) == ["done"] * 5
    errors = sorted(str(run.error_type) for run in DeploymentRun.objects.all())
    assert errors == ["None"] * 3 + ["session_rate_limited_error"] * 2
    assert Session.objects.count() == 3


@pytest.mark.django_db
def test_batch_session_creation_leaves_every_irregular_request_to_the_one_by_one_path(tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    good = {
        "organization_id": tenant.organization.pk, "workspace_id": tenant.workspace.pk,
        "agent": {"type": "agent", "id": agent.id, "version": 1}, "environment_id": environment.id,
        "initial_events": [], "resources": [], "vault_ids": [], "metadata": {}, "title": "t", "budget": None,
        "idempotency_key": "key-good", "deployment_run_id": None,
    }
    irregular = [
        {**good, "idempotency_key": "k1", "agent": {"type": "agent", "id": "agent_missing", "version": 1}},
        {**good, "idempotency_key": "k2", "agent": {"type": "agent", "id": agent.id, "version": 9}},
        {**good, "idempotency_key": "k3", "environment_id": "env_missing"},
        {**good, "idempotency_key": "k4", "vault_ids": ["vlt_missing"]},
        {**good, "idempotency_key": "k5", "metadata": {"k": "\x00"}},
        {**good, "idempotency_key": None},
        {**good, "idempotency_key": "k7", "workspace_id": "wrkspc_other"},
        {**good, "idempotency_key": "key-good"},  # the same key twice in one batch
    ]
    results = sessions_create_batch([good, *irregular])
    assert results[0] is not None and results[0].idempotency_key == "key-good"
    assert results[1:] == [None] * len(irregular)
    assert Session.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_delivered_the_same_batch_record_each_fire_once(tenant):
    make_fleet(tenant, 20)
    fire_ids = claim_ids()
    # Leases do not expire: a delivery that finds a fire held leaves it alone; a delivery after the
    # leases expired finds them all finished.
    outcomes, errors = [], []
    barrier = threading.Barrier(2)

    def deliver():
        try:
            barrier.wait()
            outcomes.append(statuses(firing.execute_fires(fire_ids)))
        except Exception as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Each fire is claimed by exactly one of the two deliveries (which one may vary per fire).
    assert len(outcomes) == 2
    assert sum(o.count("done") for o in outcomes) == 20 and sum(o.count("not_claimed") for o in outcomes) == 20
    Fire.objects.update(lease_expires_at=dj_timezone.now() - timedelta(seconds=1))
    assert statuses(firing.execute_fires(fire_ids)) == ["not_claimed"] * 20
    assert DeploymentRun.objects.count() == 20 and Session.objects.count() == 20
    assert DeploymentRun.objects.values("fire_id").distinct().count() == 20


@pytest.mark.django_db(transaction=True)
def test_a_claim_that_expired_mid_batch_does_not_double_the_run(tenant):
    """Worker A claims, stalls past its lease; worker B re-claims and finishes; A then finds every
    fire finished under the lock and records nothing."""
    make_fleet(tenant, 4)
    fire_ids = claim_ids()
    held = firing.claim_fires(fire_ids, dj_timezone.now())
    assert len(held) == 4
    Fire.objects.update(lease_expires_at=dj_timezone.now() - timedelta(seconds=1))
    assert statuses(firing.execute_fires(fire_ids)) == ["done"] * 4  # worker B
    results: dict = {}
    firing._execute_claimed(held, firing.get_gateway(), results)  # worker A resumes
    assert results == {}
    assert DeploymentRun.objects.count() == 4 and Session.objects.count() == 4


def test_fire_batches_group_by_due_time_and_size():
    base = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    fires = [(f"f{i}", base + timedelta(milliseconds=ms), "d") for i, ms in enumerate([0, 50, 90, 300, 310, 320, 330, 2000])]
    batches = list(scheduler.fire_batches(list(reversed(fires)), size=3, window=0.1))
    assert [[fire_id for fire_id, _, _ in batch] for batch in batches] == [
        ["f0", "f1", "f2"], ["f3", "f4", "f5"], ["f6"], ["f7"],
    ]


@pytest.mark.django_db
def test_a_batch_costs_the_same_statements_whatever_its_size(tenant, settings):
    from django.test.utils import CaptureQueriesContext

    # The webhook subscriptions are read once per batch, not remembered from an earlier one: the
    # same count on both sides whatever the clock does between them.
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 0

    def statements_for(count: int) -> int:
        make_fleet(tenant, count)  # due at 10:00; earlier fleets have moved on to 10:01
        fire_ids = claim_ids()
        assert len(fire_ids) == count
        with CaptureQueriesContext(connection) as queries:
            assert statuses(firing.execute_fires(fire_ids)) == ["done"] * count
        return len(queries)

    assert statements_for(2) == statements_for(25)


@pytest.mark.django_db
def test_a_network_gateway_gets_the_whole_batch_in_one_call_outside_any_transaction(tenant, monkeypatch):
    """A gateway that calls out (not transactional) is asked for every session of the batch at
    once, with no row locked meanwhile; the scheduler publishes batches whatever the gateway."""
    from django.db import connection as db_connection

    from gateways import SessionGateway, SessionOutcome
    from gateways.local import LocalGateway

    make_fleet(tenant, 3)
    fire_ids = claim_ids()
    calls = []
    depth = len(db_connection.atomic_blocks)  # the test's own transaction

    class Remote(SessionGateway):
        def create_sessions(self, requests):
            calls.append((len(requests), len(db_connection.atomic_blocks) - depth, Fire.objects.filter(status="claimed").count()))
            return [SessionOutcome.success(f"sesn_remote_{request.idempotency_key}") for request in requests]

    results = firing.execute_fires(fire_ids, gateway=Remote())
    assert statuses(results) == ["done"] * 3
    assert calls == [(3, 0, 3)]
    assert sorted(DeploymentRun.objects.values_list("session_id", flat=True)) == sorted(
        f"sesn_remote_{fire_id}" for fire_id in fire_ids
    )

    published = []
    monkeypatch.setattr("runs_app.tasks.fire_batch.apply_async", lambda args, **kw: published.append(args[0]))
    now = dj_timezone.now()
    for gateway in (Remote, LocalGateway):
        monkeypatch.setattr("gateways.get_gateway", gateway)
        published.clear()
        scheduler.publish([(f"f{i}", now, "d") for i in range(3)], now)
        assert published == [["f0", "f1", "f2"]]

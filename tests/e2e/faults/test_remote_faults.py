"""The fault scenarios of docs/reliability.md with the workers in remote mode (SESSION_GATEWAY=anthropic):
sessions are created on a second live instance of this service through the latency and fault
proxy, and counted there (see tests/e2e/faults/remote.py).

R1 no fault, R2 pool children SIGKILLed, R3 the worker SIGKILLed, R4 Redis restarted, R4b Redis
restarted while the worker holds countdown messages, R5a two schedulers, R5b three schedulers with
one frozen, R6 PostgreSQL down 20 s (the upstream shares it: it answers 5xx meanwhile), R7 the
platform misbehaving for 15–20% of fires — 429 with retry-after, 500/502/503/529, resets, hung
connections, answers lost after the session was created, every attempt failing; R8 everything down
past the catch-up window.
"""

import contextlib
import os
import random
import signal
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from deployments_app.models import Deployment
from runs_app.models import DeploymentRun, Fire
from tests.e2e.faults.harness import (
    BASE_ENV, MAX_JITTER, Burst, fires_reclaimed, first_published_by, freeze_first_publisher, minute_floor,
    next_anchor, outage, pg_ready, pg_start, pg_stop, redis_ping, redis_start, redis_stop, start_ready,
    wait_for_log_count, wait_until,
)
from tests.e2e.faults.remote import (
    AS_SEEN_BY_THE_WORKER, PLANS, REMOTE_ENV, anchor_ahead, claims_in_flight, counted, fault_rules, first_due,
    outcome_of, predicted, rate_limited_calls, remote_platform, wait_for_fires, wait_for_runs,
)
from tests.remote.conftest import upstream, upstream_server  # noqa: F401 — fixtures: the upstream instance

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BURST = 200
HELD = 40
CATCHUP_WINDOW = 20
REDIS_DOWN_SECONDS = 5
POSTGRES_DOWN_SECONDS = 20
ATTEMPTS = BASE_ENV["GATEWAY_RETRY_ATTEMPTS"]
MIN_KILLS = 3
KILL_GRACE_SECONDS = 40  # kills go on past the burst's last due time until MIN_KILLS landed
# R3, R4, R6: the fault comes once a quarter of the burst is recorded, or this long after its last due time
FAULT_WAIT_SECONDS = 40


@pytest.fixture
def remote(tenant, upstream):  # noqa: F811 — the fixture imported above
    platform = remote_platform(upstream, tenant)
    yield platform
    platform.proxy.stop()


@pytest.fixture
def remote_processes(start_processes):
    """Workers and schedulers of this test, in remote mode."""
    return lambda **env: start_processes(**{**REMOTE_ENV, **env})


def test_remote_baseline_one_upstream_call_and_one_session_per_fire(remote, remote_processes):
    procs = remote_processes()
    start_ready(procs)
    burst = remote.create_burst(BURST, next_anchor())

    figures = remote.finish(procs, "R1 baseline", burst)
    # No fault: one POST /v1/sessions per fire claimed once, and no look-up at all.
    remote.assert_one_call_per_claim(figures)
    assert set(remote.ledger.routes) == {"POST /v1/sessions"}, remote.ledger.routes


def test_remote_pool_child_sigkilled_with_sessions_in_flight(remote, remote_processes):
    # Each call takes 0.3 s at the proxy. Every second, a pool process whose claimed fires' session
    # requests are at the proxy is SIGKILLed: the upstream creates those sessions all the same, and
    # the fires, claimed again once their lease is over, must get those very sessions back.
    # (Killing at random, as the local scenario does, mostly hits a pool process still importing
    # the SDK, before it claimed anything.)
    remote.proxy.config(latency=0.3, jitter=0.0)
    procs = remote_processes()
    start_ready(procs)
    burst = remote.create_burst(BURST, next_anchor())

    wait_until(burst.anchor)
    kills = 0
    rng = random.Random(2)
    deadline = burst.last_due + timedelta(seconds=KILL_GRACE_SECONDS)
    while timezone.now() < deadline and (timezone.now() < burst.last_due or kills < MIN_KILLS):
        targets = claims_in_flight(procs, remote.proxy.stats()["calls_by_key"])
        if not targets:
            time.sleep(0.05)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(rng.choice(targets), signal.SIGKILL)
            kills += 1
        time.sleep(1)
    cleared = timezone.now()

    figures = remote.finish(procs, "R2 pool child SIGKILL", burst, fault_cleared_at=cleared,
                            notes={"children killed with sessions in flight": kills})
    assert kills >= MIN_KILLS, f"too few pool processes caught with sessions in flight — {figures.line()}"
    assert fires_reclaimed() >= 1, f"no fire was claimed again after a kill — {figures.line()}"
    # Those fires asked the upstream again with the same key, and got the session it had made.
    assert max(remote.ledger.calls.values()) >= 2, figures.line()


def test_remote_whole_worker_sigkilled_mid_burst_and_restarted(remote, remote_processes):
    procs = remote_processes()
    start_ready(procs)
    burst = remote.create_burst(BURST, next_anchor())

    runs_before = wait_for_runs(BURST // 4, until=burst.last_due + timedelta(seconds=FAULT_WAIT_SECONDS))
    procs.kill("worker")
    killed_at = timezone.now()
    time.sleep(2)
    procs.start_worker("worker")
    wait_for_log_count(procs, "worker", "ready.", 2)
    cleared = timezone.now()

    remote.finish(procs, "R3 worker SIGKILL", burst, fault_cleared_at=cleared, notes={
        "runs before the kill": runs_before, "worker down": f"{(cleared - killed_at).total_seconds():.1f}s"})
    assert 0 < runs_before < BURST, "the worker was not killed in the middle of the burst: the fault was not exercised"


def test_remote_redis_restarted_mid_burst(remote, remote_processes):
    procs = remote_processes()
    start_ready(procs)
    burst = remote.create_burst(BURST, next_anchor())

    runs_before = wait_for_runs(BURST // 4, until=burst.last_due + timedelta(seconds=FAULT_WAIT_SECONDS))
    down = outage(redis_stop, redis_start, redis_ping, REDIS_DOWN_SECONDS)

    remote.finish(procs, "R4 Redis restart", burst, fault_cleared_at=down.cleared,
                  notes={"runs before the restart": runs_before, "Redis down": down.note})
    assert 0 < runs_before < BURST, "Redis did not go down in the middle of the burst: the fault was not exercised"


def test_remote_two_schedulers_at_once(remote, remote_processes):
    procs = remote_processes(SCHEDULER_BATCH_SIZE=50)
    start_ready(procs, schedulers=("scheduler-1", "scheduler-2"))
    burst = remote.create_burst(BURST, next_anchor())

    figures = remote.finish(procs, "R5a two schedulers", burst)
    remote.assert_one_call_per_claim(figures)


def test_remote_postgres_down_20s_mid_burst(remote, remote_processes):
    """Our database and the upstream's are one: while it is down the upstream answers 5xx, and
    fires caught in the middle are finished once it is back — never twice upstream."""
    procs = remote_processes()
    start_ready(procs)
    burst = remote.create_burst(BURST, next_anchor())

    runs_before = wait_for_runs(BURST // 4, until=burst.last_due + timedelta(seconds=FAULT_WAIT_SECONDS))
    down = outage(pg_stop, pg_start, pg_ready, POSTGRES_DOWN_SECONDS)

    figures = remote.finish(procs, "R6 PostgreSQL down 20 s", burst, fault_cleared_at=down.cleared, notes={
        "runs before the stop": runs_before, "PostgreSQL down": down.note})
    assert 0 < runs_before < BURST, f"PostgreSQL did not go down in the middle of the burst — {figures.line()}"


def test_remote_platform_faults_by_idempotency_key(remote, remote_processes):
    # A batch holding a hung call and one whose every attempt fails takes ~7 s: a longer lease, so
    # that no fire is claimed again meanwhile (it would ask once more than predicted).
    procs = remote_processes(GATEWAY_RETRY_ATTEMPTS=ATTEMPTS, FIRE_LEASE_SECONDS=20)
    start_ready(procs)
    burst = remote.create_burst(BURST, anchor_ahead(12))

    # The fires are written a few seconds before the anchor: pick the rules' salts for these very
    # keys, and install the rules before the first fire is due.
    fire_ids = wait_for_fires(BURST, before=burst.anchor)
    rules, plan_of = fault_rules(fire_ids, salt=uuid.uuid4().hex[:8])
    remote.proxy.config(rules=rules)
    assert timezone.now() < first_due(), "the fault rules were installed after the first fire was due"

    settled = remote.settle(procs, burst)
    ledger = remote.ledger
    runs = {run.fire_id: run for run in DeploymentRun.objects.filter(trigger_type="schedule")}
    mismatches = []
    for fire_id in fire_ids:
        want = predicted(plan_of.get(fire_id), ATTEMPTS)
        got = (outcome_of(runs.get(fire_id)), ledger.calls.get(fire_id, 0))
        if got != want:
            mismatches.append((fire_id, plan_of.get(fire_id), want, got))
    outcomes = [outcome_of(run) for run in runs.values()]
    figures = remote.report(procs, "R7 platform faults at the proxy", burst, settled, notes={
        "fires hit": f"{len(plan_of)} ({len(plan_of) / BURST:.0%})",
        "faults injected": counted(ledger.faults),
        "runs": counted(outcomes),
        "calls per 429": "/".join(map(str, rate_limited_calls(ledger).values())) or "-",
        "mismatches": len(mismatches),
    })
    # Each plan hit fires of its own, and the proxy applied faults to exactly those fires.
    assert ledger.rule_hits.keys() == PLANS.keys() and min(ledger.rule_hits.values()) >= 1, ledger.rule_hits
    assert set(ledger.faults_by_key) == set(plan_of), figures.line()
    assert set(ledger.faults) == set(AS_SEEN_BY_THE_WORKER), ledger.faults
    # Every fire: the predicted outcome after the predicted number of upstream calls (a lost
    # answer is replayed by its Idempotency-Key: one session upstream, one more call); a 429 is
    # recorded after exactly one call.
    assert mismatches == [], mismatches[:10]
    assert outcomes.count("session_rate_limited_error") >= 1 and outcomes.count("service_unavailable_error") >= 1


def test_remote_redis_restart_while_the_worker_holds_countdowns(remote, remote_processes):
    """4b in remote mode: the worker has reserved every fire (one per message) and waits idle on
    the queue when Redis goes away; every fire runs once, each with one upstream call."""
    procs = remote_processes(FIRE_BATCH_SIZE="1")
    start_ready(procs)
    burst = remote.create_burst(HELD, next_anchor(max_late=1), jitter=(0.5, 1.0))

    wait_for_log_count(procs, "worker", '] received"', HELD, timeout=90)
    assert timezone.now() < burst.at(MAX_JITTER / 2), "a fire became due before Redis went down"
    down = outage(redis_stop, redis_start, redis_ping, REDIS_DOWN_SECONDS)

    figures = remote.finish(procs, "R4b Redis restart, worker holding countdowns", burst, fault_cleared_at=down.cleared,
                            notes={"fires reserved by the worker": HELD, "Redis down": down.note})
    remote.assert_one_call_per_claim(figures)


def test_remote_three_schedulers_one_frozen_after_its_claim(remote, remote_processes):
    procs = remote_processes(SCHEDULER_BATCH_SIZE=50)
    schedulers = ("scheduler-1", "scheduler-2", "scheduler-3")
    start_ready(procs, schedulers=schedulers)
    burst = remote.create_burst(BURST, next_anchor())

    _frozen, frozen_at, published = freeze_first_publisher(procs, schedulers, burst, seconds=15)
    cleared = timezone.now()
    settled = remote.settle(procs, burst)
    figures = remote.report(procs, "R5b three schedulers, one frozen", burst, settled, fault_cleared_at=cleared, notes={
        "frozen": f"{(cleared - frozen_at).total_seconds():.0f}s",
        "published by the frozen one before SIGSTOP": published,
        "first published by each scheduler": "/".join(map(str, first_published_by(procs, schedulers))),
    })
    remote.assert_one_call_per_claim(figures)


def test_remote_downtime_past_the_catchup_window(remote, remote_processes):
    """8 in remote mode: minute M passes with scheduler and worker down (M older than the 20 s
    window when they return: skipped and counted, no upstream call), M+1 fires once upstream."""
    env = {"SCHEDULER_CATCHUP_WINDOW_SECONDS": CATCHUP_WINDOW}
    before = remote_processes(**env)
    start_ready(before)
    before.stop_all()
    stopped_at = timezone.now()
    missed_minute = minute_floor(stopped_at)
    if (stopped_at - missed_minute).total_seconds() > 40:
        missed_minute += timedelta(minutes=1)
    missed = remote.create_burst(BURST, missed_minute, expression="* * * * *")
    inside_minute = missed_minute + timedelta(minutes=1)
    wait_until(inside_minute + timedelta(seconds=2))
    assert not Fire.objects.exists()

    after = remote_processes(**env)
    start_ready(after)
    started_at = timezone.now()
    downtime = (started_at - stopped_at).total_seconds()
    assert downtime > CATCHUP_WINDOW
    burst = Burst(anchor=inside_minute, deployment_ids=missed.deployment_ids)
    figures = remote.finish(after, "R8 downtime past the catch-up window", burst, fault_cleared_at=started_at,
                            missed_counted=BURST, notes={"down": f"{downtime:.0f}s",
                                                         "catch-up window": f"{CATCHUP_WINDOW}s"})
    assert timezone.now() < inside_minute + timedelta(minutes=1), "the next minute may have fired too"
    assert not Fire.objects.filter(scheduled_at=missed_minute).exists()
    assert set(Deployment.objects.filter(pk__in=burst.deployment_ids).values_list("missed_fires", flat=True)) == {1}
    remote.assert_one_call_per_claim(figures)

"""Scenarios 4, 4b and 6: Redis and PostgreSQL go away in the middle of a burst and come back.

Both services are shared with the rest of the suite: they are always started again in a `finally`
and the test waits until they answer. No process of ours is restarted by the test — recovering is
the system's job.
"""

import pytest
from django.utils import timezone

from runs_app.models import DeploymentRun
from tests.e2e.faults.harness import (
    MAX_JITTER, assert_alive, assert_invariants, create_burst, fires_reclaimed, fires_republished, measure,
    next_anchor, outage, pg_ready, pg_start, pg_stop, record, redis_ping, redis_start, redis_stop, start_ready,
    wait_for_log_count, wait_settled, wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BURST = 200
HELD = 40
SETTLE_SECONDS = 120
REDIS_DOWN_SECONDS = 5
POSTGRES_DOWN_SECONDS = 20


def test_redis_restarted_mid_burst_loses_no_fire(tenant, start_processes):
    procs = start_processes()
    start_ready(procs)
    burst = create_burst(tenant, BURST, next_anchor())

    wait_until(burst.at(4))
    runs_before = DeploymentRun.objects.count()
    down = outage(redis_stop, redis_start, redis_ping, REDIS_DOWN_SECONDS)

    settled = wait_settled(BURST, timeout=SETTLE_SECONDS)
    assert_alive(procs)
    procs.stop_all()
    figures = measure(
        "4 Redis restart", expected=burst.expected, fault_cleared_at=down.cleared, last_due=burst.last_due,
        notes={"runs before the restart": runs_before,
               "Redis down": down.note,
               "republished": fires_republished(procs), "fires re-claimed": fires_reclaimed()},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)
    assert runs_before < BURST, "Redis went down after the burst: the fault was not exercised"


def test_worker_holding_countdown_fires_survives_redis_restart(tenant, start_processes):
    """The deterministic form of scenario 4's worst case: the worker has reserved every fire of a
    burst (unacknowledged countdown messages) and waits, idle, on the queue when Redis goes away.
    kombu 5.7.0 stopped such a worker with "Unrecoverable error" (see runs_app/broker.py).
    One fire per message here, so the worker holds one countdown message per fire."""
    procs = start_processes(FIRE_BATCH_SIZE="1")
    start_ready(procs)
    burst = create_burst(tenant, HELD, next_anchor(max_late=1), jitter=(0.5, 1.0))

    wait_for_log_count(procs, "worker", '] received"', HELD, timeout=90)
    assert timezone.now() < burst.at(MAX_JITTER / 2), "a fire became due before Redis went down"
    down = outage(redis_stop, redis_start, redis_ping, REDIS_DOWN_SECONDS)

    settled = wait_settled(HELD, timeout=SETTLE_SECONDS)
    assert_alive(procs)
    procs.stop_all()
    figures = measure(
        "4b Redis restart, worker holding countdowns", expected=burst.expected, fault_cleared_at=down.cleared,
        last_due=burst.last_due,
        notes={"fires reserved by the worker": HELD,
               "Redis down": down.note,
               "worker reconnections": procs.log_text("worker").count("Connected to redis"),
               "republished": fires_republished(procs)},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)


def test_postgres_down_20s_mid_burst_recovers_by_itself(tenant, start_processes):
    procs = start_processes()
    start_ready(procs)
    burst = create_burst(tenant, BURST, next_anchor())

    wait_until(burst.at(4))
    runs_before = DeploymentRun.objects.count()
    down = outage(pg_stop, pg_start, pg_ready, POSTGRES_DOWN_SECONDS)

    settled = wait_settled(BURST, timeout=SETTLE_SECONDS)
    assert_alive(procs)
    procs.stop_all()
    errors = DeploymentRun.objects.filter(error_type__isnull=False).count()
    figures = measure(
        "6 PostgreSQL down 20 s", expected=burst.expected, fault_cleared_at=down.cleared, last_due=burst.last_due,
        notes={"runs before the stop": runs_before,
               "PostgreSQL down": down.note,
               "runs with an error": errors, "republished": fires_republished(procs),
               "fires re-claimed": fires_reclaimed()},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)
    assert runs_before < BURST, "PostgreSQL went down after the burst: the fault was not exercised"
    # The platform is this database: its outage delays sessions, it does not make them fail.
    assert errors == 0, figures.line()

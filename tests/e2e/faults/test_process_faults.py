"""Scenarios 2, 3 and 5: workers killed, several schedulers, a scheduler frozen after its claim."""

import os
import random
import signal
import time

import pytest
from django.utils import timezone

from runs_app.models import DeploymentRun
from tests.e2e.faults.harness import (
    MAX_JITTER, assert_alive, assert_invariants, create_burst, fires_reclaimed, fires_republished,
    first_published_by, freeze_first_publisher, measure, next_anchor, record, start_ready, wait_for_log_count,
    wait_settled, wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BURST = 200
SETTLE_SECONDS = 120


def test_pool_child_sigkilled_every_second_loses_and_doubles_nothing(tenant, start_processes):
    # A platform that takes 0.3 s per call keeps each pool process between claiming its fires and
    # committing their runs most of the time: that is the window the kills must hit.
    procs = start_processes(SESSION_GATEWAY="tests.e2e.faults.fault_gateway:SlowLocalGateway", SLOW_GATEWAY_SECONDS="0.3")
    start_ready(procs)
    burst = create_burst(tenant, BURST, next_anchor())

    wait_until(burst.anchor)
    kills = 0
    rng = random.Random(2)
    while timezone.now() < burst.last_due:
        children = procs.children("worker")
        if children:
            os.kill(rng.choice(children), signal.SIGKILL)
            kills += 1
        time.sleep(1)
    cleared = timezone.now()

    settled = wait_settled(BURST, timeout=SETTLE_SECONDS)
    assert_alive(procs)
    procs.stop_all()
    reclaimed = fires_reclaimed()
    figures = measure(
        "2 pool child SIGKILL", expected=burst.expected, fault_cleared_at=cleared, last_due=burst.last_due,
        notes={"children killed": kills, "fires re-claimed after a kill": reclaimed,
               "republished": fires_republished(procs)},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)
    assert kills >= MAX_JITTER - 1
    assert reclaimed >= 1, "no kill landed between a claim and its commit: the fault was not exercised"


def test_whole_worker_sigkilled_mid_burst_and_restarted(tenant, start_processes):
    procs = start_processes()
    start_ready(procs)
    burst = create_burst(tenant, BURST, next_anchor())

    wait_until(burst.at(MAX_JITTER / 2))
    procs.kill("worker")
    killed_at = timezone.now()
    runs_before = DeploymentRun.objects.count()
    time.sleep(2)
    procs.start_worker("worker")
    wait_for_log_count(procs, "worker", "ready.", 2)
    cleared = timezone.now()

    settled = wait_settled(BURST, timeout=SETTLE_SECONDS)
    assert_alive(procs)
    procs.stop_all()
    figures = measure(
        "3 worker SIGKILL", expected=burst.expected, fault_cleared_at=cleared, last_due=burst.last_due,
        notes={"runs before the kill": runs_before, "worker down": f"{(cleared - killed_at).total_seconds():.1f}s",
               "fires re-claimed": fires_reclaimed(), "republished": fires_republished(procs)},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)
    assert runs_before < BURST, "the worker was killed after the burst: the fault was not exercised"


def test_two_schedulers_at_once_claim_each_occurrence_once(tenant, start_processes):
    procs = start_processes(SCHEDULER_BATCH_SIZE=50)
    schedulers = ("scheduler-1", "scheduler-2")
    start_ready(procs, schedulers=schedulers)
    burst = create_burst(tenant, BURST, next_anchor())

    settled = wait_settled(BURST, timeout=MAX_JITTER + SETTLE_SECONDS)
    assert_alive(procs)
    procs.stop_all()
    claims = first_published_by(procs, schedulers)
    figures = measure(
        "5a two schedulers", expected=burst.expected, fault_cleared_at=None, last_due=burst.last_due,
        notes={"first published by each scheduler": "/".join(map(str, claims)),
               "republished": fires_republished(procs)},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)


def test_three_schedulers_one_frozen_after_its_claim(tenant, start_processes):
    procs = start_processes(SCHEDULER_BATCH_SIZE=50)
    schedulers = ("scheduler-1", "scheduler-2", "scheduler-3")
    start_ready(procs, schedulers=schedulers)
    burst = create_burst(tenant, BURST, next_anchor())

    frozen, frozen_at, published_when_frozen = freeze_first_publisher(procs, schedulers, burst, seconds=15)
    cleared = timezone.now()

    settled = wait_settled(BURST, timeout=SETTLE_SECONDS)
    time.sleep(2)  # let the resumed scheduler publish what it still held
    assert_alive(procs)
    procs.stop_all()
    claims = first_published_by(procs, schedulers)
    figures = measure(
        "5b three schedulers, one frozen", expected=burst.expected, fault_cleared_at=cleared, last_due=burst.last_due,
        notes={"frozen": f"{(cleared - frozen_at).total_seconds():.0f}s",
               "published by the frozen one before SIGSTOP": published_when_frozen,
               "first published by each scheduler": "/".join(map(str, claims)),
               "republished by recovery": fires_republished(procs)},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)

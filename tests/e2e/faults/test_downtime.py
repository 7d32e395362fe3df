"""Scenario 8: everything down for longer than the catch-up window, then up again.

Deployments on `* * * * *` are due at minute M while no scheduler or worker runs; the processes
come back just after M+1. With a 20 s catch-up window, M is older than the window (skipped and
counted in `missed_fires`), M+1 is inside it (fires once, late).
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments_app.models import Deployment
from runs_app.models import Fire
from tests.e2e.faults.harness import (
    MAX_JITTER, assert_alive, assert_invariants, create_burst, measure, minute_floor, record, start_ready,
    wait_settled, wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BURST = 200
CATCHUP_WINDOW = 20


def test_downtime_longer_than_catchup_window_counts_old_fires_and_runs_recent_ones(tenant, start_processes):
    env = {"SCHEDULER_CATCHUP_WINDOW_SECONDS": CATCHUP_WINDOW}
    before = start_processes(**env)
    start_ready(before)
    before.stop_all()
    stopped_at = timezone.now()

    # Minute M passes with everything down (the deployments are due at it), then M+1 does too. M is
    # this minute, or the next one if this one is too old for the downtime to exceed the window.
    missed_minute = minute_floor(stopped_at)
    if (stopped_at - missed_minute).total_seconds() > 40:
        missed_minute += timedelta(minutes=1)
    burst = create_burst(tenant, BURST, missed_minute, expression="* * * * *")
    inside_minute = missed_minute + timedelta(minutes=1)
    wait_until(inside_minute + timedelta(seconds=2))
    assert Fire.objects.count() == 0

    after = start_processes(**env)
    start_ready(after)
    started_at = timezone.now()
    downtime = (started_at - stopped_at).total_seconds()
    assert downtime > CATCHUP_WINDOW

    settled = wait_settled(BURST, timeout=(inside_minute + timedelta(seconds=55) - timezone.now()).total_seconds())
    assert_alive(after)
    after.stop_all()
    assert timezone.now() < inside_minute + timedelta(minutes=1), "the next minute may have fired too"

    deployments = Deployment.objects.filter(pk__in=burst.deployment_ids)
    figures = measure(
        "8 downtime past the catch-up window",
        expected={(deployment_id, inside_minute) for deployment_id in burst.deployment_ids},
        fault_cleared_at=started_at, last_due=inside_minute + timedelta(seconds=MAX_JITTER),
        notes={"down": f"{downtime:.0f}s", "catch-up window": f"{CATCHUP_WINDOW}s",
               "missed counted": sum(deployments.values_list("missed_fires", flat=True)),
               "expected missed": BURST},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures, missed_counted=BURST)
    assert set(deployments.values_list("missed_fires", flat=True)) == {1}
    assert set(deployments.values_list("next_fire_at", flat=True)) == {inside_minute + timedelta(minutes=1)}
    assert not Fire.objects.filter(scheduled_at=missed_minute).exists()

"""Scenario 1: a burst with no fault — the reference for every other scenario's figures."""

import pytest

from tests.e2e.faults.harness import (
    assert_alive, assert_invariants, create_burst, fires_republished, measure, next_anchor, record, start_ready,
    wait_settled,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BURST = 200


def test_baseline_burst_fires_each_deployment_once(tenant, start_processes):
    procs = start_processes()
    start_ready(procs)
    burst = create_burst(tenant, BURST, next_anchor())

    settled = wait_settled(BURST, timeout=(burst.last_due - burst.anchor).total_seconds() + 90 + 60)
    assert_alive(procs)
    procs.stop_all()

    figures = measure(
        "1 baseline", expected=burst.expected, fault_cleared_at=None, last_due=burst.last_due,
        notes={"republished": fires_republished(procs, "scheduler")},
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)

"""Scenario 7: the session platform misbehaves for ~10% of fires.

The worker runs tests.e2e.faults.fault_gateway.FaultGateway in front of the local gateway. It
records which plan of faults each hit fire got and counts every call per idempotency key, so each
fire's outcome and its number of gateway calls can be predicted and checked exactly.
"""

import uuid
from collections import Counter

import pytest
import redis
from django.conf import settings

from runs_app.models import DeploymentRun, Fire
from tests.e2e.faults.fault_gateway import PLANS, expected_outcome, is_faulty, keys
from tests.e2e.faults.harness import (
    MAX_JITTER, assert_alive, assert_invariants, create_burst, fires_republished, measure, next_anchor, record,
    start_ready, wait_settled,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BURST = 200
RATE = 0.10
ATTEMPTS = 3


def _gateway_ledger(namespace: str) -> tuple[dict[str, int], dict[str, int]]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    names = keys(namespace)
    try:
        calls = {key.decode(): int(value) for key, value in client.hgetall(names["calls"]).items()}
        plans = {key.decode(): int(value) for key, value in client.hgetall(names["plans"]).items()}
    finally:
        client.delete(*names.values())
    return calls, plans


def test_gateway_faults_give_one_session_per_fire_and_never_retry_a_429(tenant, start_processes):
    namespace = uuid.uuid4().hex[:12]
    procs = start_processes(
        SESSION_GATEWAY="tests.e2e.faults.fault_gateway:FaultGateway", FAULT_GATEWAY_NAMESPACE=namespace,
        FAULT_GATEWAY_RATE=RATE, FAULT_GATEWAY_TIMEOUT_SECONDS=1, GATEWAY_RETRY_ATTEMPTS=ATTEMPTS,
    )
    start_ready(procs)
    burst = create_burst(tenant, BURST, next_anchor())

    settled = wait_settled(BURST, timeout=MAX_JITTER + 120)
    assert_alive(procs)
    procs.stop_all()
    calls, plans = _gateway_ledger(namespace)

    runs = {run.fire_id: run for run in DeploymentRun.objects.filter(trigger_type="schedule")}
    fire_ids = list(Fire.objects.values_list("id", flat=True))
    mismatches = []
    outcomes = Counter()
    for fire_id in fire_ids:
        plan = PLANS[plans[fire_id]] if fire_id in plans else ()
        want_outcome, want_calls = expected_outcome(plan, ATTEMPTS)
        run = runs.get(fire_id)
        got_outcome = None if run is None else (run.session_id and "session") or run.error_type
        outcomes[got_outcome] += 1
        if (got_outcome, calls.get(fire_id, 0)) != (want_outcome, want_calls):
            mismatches.append((fire_id, plan, (want_outcome, want_calls), (got_outcome, calls.get(fire_id, 0))))
    hit = {fire_id for fire_id in fire_ids if is_faulty(fire_id, RATE)}
    rate_limited = [fire_id for fire_id, run in runs.items() if run.error_type == "session_rate_limited_error"]
    kinds = Counter(fault for fire_id in plans for fault in PLANS[plans[fire_id]][:calls.get(fire_id, 0)])

    figures = measure(
        "7 gateway faults", expected=burst.expected, fault_cleared_at=None, last_due=burst.last_due,
        notes={
            "fires hit": f"{len(plans)} ({len(plans) / max(1, len(fire_ids)):.0%})",
            "faults injected": ",".join(f"{kind}:{count}" for kind, count in sorted(kinds.items())),
            "runs": ",".join(f"{kind}:{count}" for kind, count in sorted(outcomes.items(), key=str)),
            "gateway calls": sum(calls.values()),
            "calls per 429": "/".join(str(calls.get(fire_id)) for fire_id in rate_limited) or "-",
            "mismatches": len(mismatches),
            "republished": fires_republished(procs),
        },
    )
    record(figures)
    assert settled, figures.line()
    assert_invariants(figures)
    # The fault plans were applied to exactly the fires the hash picked, and every plan was used.
    assert set(plans) == hit
    assert set(plans.values()) == set(range(len(PLANS)))
    # A 429 is recorded as such after exactly one call, never retried.
    assert rate_limited and all(calls[fire_id] == 1 for fire_id in rate_limited), figures.line()
    # Every fire: the predicted outcome after the predicted number of calls (a lost answer is
    # replayed by its idempotency key: one session, two calls).
    assert mismatches == [], mismatches[:10]
    assert outcomes["service_unavailable_error"] >= 1 and outcomes["session"] >= len(fire_ids) * 0.85

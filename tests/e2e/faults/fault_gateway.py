"""A session gateway that injects platform faults in front of the local gateway.

A worker uses it with SESSION_GATEWAY="tests.e2e.faults.fault_gateway:FaultGateway".

Which fires are hit is a pure function of the idempotency key (the fire id): a key is faulty when
its hash falls below FAULT_GATEWAY_RATE. Each faulty key gets the next plan of PLANS in turn (a
Redis counter, so every kind of fault is exercised once a handful of keys were hit), and the plan
says what each successive call with that key does. Every call is counted per key and every plan is
recorded, both in Redis under FAULT_GATEWAY_NAMESPACE, so the test can predict each fire's outcome
and check how many calls it took (a 429 must take exactly one).

Faults:
- rate_limited: the platform answers 429; nothing is created.
- server_error: 500; nothing is created.
- timeout: no answer within the client's patience; nothing is created.
- connection_reset: the connection drops before the request is read; nothing is created.
- answer_lost: the platform creates (and commits) the session, then the answer is lost. The retry
  with the same idempotency key must get that very session back.

Non-transactional on purpose: with the local gateway a lost answer would roll the session back
with the failed transaction, which is not what a remote platform does.
"""

import hashlib
import os
import time

from django.conf import settings
from django.db import transaction

from gateways.base import SessionGateway, SessionOutcome, SessionRequest
from gateways.local import LocalGateway

UNAVAILABLE = ("server_error", "timeout", "connection_reset", "answer_lost")

PLANS: tuple[tuple[str, ...], ...] = (
    ("rate_limited",),
    ("server_error",),
    ("timeout",),
    ("connection_reset",),
    ("answer_lost",),
    ("server_error", "timeout", "connection_reset"),  # every quick retry fails
    ("timeout", "server_error"),
)


def is_faulty(key: str, rate: float) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def expected_outcome(plan: tuple[str, ...], attempts: int) -> tuple[str, int]:
    """(outcome, gateway calls) of a fire under `plan` with `attempts` quick tries: outcome is
    "session" or the run's error type."""
    if plan and plan[0] == "rate_limited":
        return "session_rate_limited_error", 1
    failures = 0
    for fault in plan:
        if fault not in UNAVAILABLE:
            break
        failures += 1
    if failures >= attempts:
        return "service_unavailable_error", attempts
    return "session", failures + 1


def keys(namespace: str) -> dict[str, str]:
    prefix = f"faultgw:{namespace}"
    return {"calls": f"{prefix}:calls", "plans": f"{prefix}:plans", "next": f"{prefix}:next"}


class FaultGateway(SessionGateway):
    transactional = False

    def __init__(self):
        self.inner = LocalGateway()
        self.rate = float(os.environ.get("FAULT_GATEWAY_RATE", "0.1"))
        self.timeout = float(os.environ.get("FAULT_GATEWAY_TIMEOUT_SECONDS", "1.0"))
        self.keys = keys(os.environ.get("FAULT_GATEWAY_NAMESPACE", "default"))
        self._redis = None
        self._pid = None

    @property
    def redis(self):
        import redis

        if self._pid != os.getpid():  # never share a socket across a fork
            self._redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
            self._pid = os.getpid()
        return self._redis

    def _fault_for(self, key: str) -> str | None:
        call = self.redis.hincrby(self.keys["calls"], key, 1)
        if not is_faulty(key, self.rate):
            return None
        plan_index = self.redis.hget(self.keys["plans"], key)
        if plan_index is None:
            candidate = (self.redis.incr(self.keys["next"]) - 1) % len(PLANS)
            self.redis.hsetnx(self.keys["plans"], key, candidate)
            plan_index = self.redis.hget(self.keys["plans"], key)
        plan = PLANS[int(plan_index)]
        return plan[call - 1] if call <= len(plan) else None

    def create_sessions(self, requests: list[SessionRequest]) -> list[SessionOutcome]:
        return [self._create(request) for request in requests]

    def _create(self, request: SessionRequest) -> SessionOutcome:
        fault = self._fault_for(request.idempotency_key)
        if fault == "rate_limited":
            return SessionOutcome.failure("session_rate_limited_error", "session creation rate limit exceeded (429)")
        if fault == "server_error":
            return SessionOutcome.unavailable("the session platform answered 500")
        if fault == "timeout":
            time.sleep(self.timeout)
            return SessionOutcome.unavailable(f"no answer from the session platform within {self.timeout:g}s")
        if fault == "connection_reset":
            return SessionOutcome.unavailable("connection reset by the session platform")
        with transaction.atomic():
            [outcome] = self.inner.create_sessions([request])
        if fault == "answer_lost":
            return SessionOutcome.unavailable("connection reset after the request was sent")
        return outcome


class SlowLocalGateway(LocalGateway):
    """The local gateway behind a platform that takes SLOW_GATEWAY_SECONDS per call: a worker then
    spends that long between claiming its fires and committing their runs, the window a SIGKILL must
    hit to test a claim left behind by a dead worker. Transactional like the local gateway, so fires
    still go in batches."""

    def __init__(self):
        self.latency = float(os.environ.get("SLOW_GATEWAY_SECONDS", "0.3"))

    def create_sessions(self, requests: list[SessionRequest]) -> list[SessionOutcome]:
        time.sleep(self.latency)
        return super().create_sessions(requests)

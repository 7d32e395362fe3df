"""The fault scenarios in remote mode: the workers fire with SESSION_GATEWAY=anthropic.

The remote platform is a second live instance of this service (the built-in platform in its own
gunicorn process, `tests/remote/conftest.py::upstream`), reached through the latency and fault
proxy of `upstream_sim` in a process of its own. Our organization has its own upstream
credentials: the key of an organization of the upstream, with the proxy's URL as base URL. The
burst's agent and environment are created on the upstream with the SDK (straight at it, so the
proxy counts only the workers' calls).

What matters is counted where it happens: sessions on the upstream (rows of the upstream
organization, `idempotency_key` = fire id), calls at the proxy (`POST /v1/sessions` per
Idempotency-Key). On top of the harness's invariants: no session in our own platform tables,
every keyed call at the proxy made for a fire of the burst, and a fire recorded as
`session_rate_limited_error` made exactly one upstream call.

Platform faults (scenario R7) are proxy rules, one per plan, each selecting fires by a salted hash
of their Idempotency-Key: the salts are chosen once the fires are written (before the first is
due) so that every plan hits fires of its own, none hits a fire another plan hits, and each fire's
outcome and number of upstream calls can be predicted with `fault_gateway.expected_outcome`.
"""

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Min
from django.utils import timezone

from accounts_app.services import organization_upstream_credentials_set
from platform_app.models import Session
from runs_app.models import DeploymentRun, Fire
from tests.conftest import Tenant
from tests.e2e.faults.fault_gateway import expected_outcome
from tests.e2e.faults.harness import (
    Burst, Figures, assert_alive, assert_invariants, create_burst, fires_reclaimed, fires_republished, measure,
    minute_floor, record, wait_settled,
)
from tests.e2e.procs import Processes
from upstream_sim import key_selected, spawn_proxy
from upstream_sim.proxy import parse_fault

LATENCY = 0.03  # every request through the proxy waits 30–70 ms: 50 ms ± 20 ms
JITTER = 0.04
UPSTREAM_TIMEOUT = 3  # the workers' patience per upstream call (a hung connection costs this)
REMOTE_ENV = {"SESSION_GATEWAY": "anthropic", "UPSTREAM_TIMEOUT_SECONDS": UPSTREAM_TIMEOUT}
SESSIONS_ROUTE = "POST /v1/sessions"
SETTLE_SECONDS = 120

# The fault gateway's names for what the worker sees of each proxy fault.
AS_SEEN_BY_THE_WORKER = {
    "rate_limit": "rate_limited", "status": "server_error", "reset": "connection_reset", "hang": "timeout",
    "answer_lost": "answer_lost",
}


@dataclass
class ProxyLedger:
    """What the proxy saw, and what our own platform tables hold (nothing, in remote mode)."""

    calls: dict[str, int]  # POST /v1/sessions per Idempotency-Key
    routes: dict[str, int]  # every request by route
    faults: dict[str, int]  # faults injected by kind
    faults_by_key: dict[str, dict[str, int]]
    rule_hits: dict[str, int] = field(default_factory=dict)
    local_sessions: int = 0

    @property
    def session_calls(self) -> int:
        return self.routes.get(SESSIONS_ROUTE, 0)

    @property
    def other_requests(self) -> int:
        return sum(self.routes.values()) - self.session_calls


@dataclass
class RemotePlatform:
    upstream: object  # tests.remote.conftest.Upstream
    proxy: object  # upstream_sim ProcessHandle
    ours: Tenant
    theirs: Tenant
    references: tuple[str, int, str]
    ledger: ProxyLedger | None = None

    def create_burst(self, n: int, anchor: datetime, **kwargs) -> Burst:
        return create_burst(self.ours, n, anchor, references=self.references, **kwargs)

    def upstream_sessions(self):
        return Session.objects.filter(organization=self.theirs.organization)

    def read_ledger(self) -> ProxyLedger:
        stats = self.proxy.stats()
        rules = self.proxy.current_config()["rules"]
        self.ledger = ProxyLedger(
            calls=stats["calls_by_key"], routes=stats["requests_by_route"], faults=stats["faults_by_kind"],
            faults_by_key=stats["faults_by_key"], rule_hits={rule.get("name", ""): rule["hits"] for rule in rules},
            local_sessions=Session.objects.exclude(organization=self.theirs.organization).count(),
        )
        return self.ledger

    def finish(
        self, procs: Processes, scenario: str, burst: Burst, *, fault_cleared_at: datetime | None = None,
        notes: dict | None = None, missed_counted: int = 0,
    ) -> Figures:
        settled = self.settle(procs, burst)
        return self.report(procs, scenario, burst, settled, fault_cleared_at=fault_cleared_at, notes=notes,
                           missed_counted=missed_counted)

    def settle(self, procs: Processes, burst: Burst) -> bool:
        """Wait for the burst to be recorded, stop the processes, read the proxy's counters."""
        timeout = max(0.0, (burst.last_due - timezone.now()).total_seconds()) + SETTLE_SECONDS
        settled = wait_settled(len(burst.deployment_ids), timeout=timeout)
        assert_alive(procs)
        procs.stop_all()
        self.read_ledger()
        return settled

    def report(
        self, procs: Processes, scenario: str, burst: Burst, settled: bool, *,
        fault_cleared_at: datetime | None = None, notes: dict | None = None, missed_counted: int = 0,
    ) -> Figures:
        """Count (runs here, sessions on the upstream, calls at the proxy), print and keep the
        figures, assert every invariant."""
        ledger = self.ledger
        fires = max(1, Fire.objects.count())
        errors = DeploymentRun.objects.exclude(error_type=None).values_list("error_type", flat=True)
        figures = measure(
            scenario, expected=burst.expected, fault_cleared_at=fault_cleared_at, last_due=burst.last_due,
            sessions=self.upstream_sessions(),
            notes={
                **(notes or {}),
                "upstream session calls": f"{ledger.session_calls} ({ledger.session_calls / fires:.2f} per fire)",
                "fires asked more than once": sum(1 for count in ledger.calls.values() if count > 1),
                "other upstream requests": ledger.other_requests,
                "runs with an error": counted(errors) or 0,
                "republished": fires_republished(procs), "fires re-claimed": fires_reclaimed(),
            },
        )
        record(figures)
        assert settled, figures.line()
        assert_invariants(figures, missed_counted=missed_counted)
        self.assert_invariants(figures)
        return figures

    def assert_invariants(self, figures: Figures) -> None:
        ledger, where = self.ledger, f"{figures.scenario}: {figures.line()}"
        fire_ids = set(Fire.objects.values_list("id", flat=True))
        assert ledger.local_sessions == 0, f"sessions created in our own platform tables — {where}"
        assert set(ledger.calls) <= fire_ids, f"upstream calls keyed by something else than a fire — {where}"
        assert sum(ledger.calls.values()) == ledger.session_calls, f"a session asked for without a key — {where}"
        with_session = DeploymentRun.objects.filter(fire__isnull=False, session_id__isnull=False)
        unasked = [fire for fire in with_session.values_list("fire_id", flat=True) if not ledger.calls.get(fire)]
        assert unasked == [], f"runs with a session the proxy never saw asked for — {where}"
        assert rate_limited_calls(ledger) == {fire: 1 for fire in rate_limited_fires()}, f"a 429 retried — {where}"

    def assert_one_call_per_claim(self, figures: Figures) -> None:
        """Every fire claimed once asked the upstream once (a fire claimed again after its lease ran
        out — say, a pool process slow to import the SDK — may ask again, and gets the same session)."""
        once = Fire.objects.filter(attempts=1).values_list("id", flat=True)
        asked = Counter(self.ledger.calls.get(fire_id, 0) for fire_id in once)
        assert set(asked) == {1}, f"upstream calls per fire claimed once: {dict(asked)} — {figures.line()}"


def remote_platform(upstream, tenant: Tenant, *, latency: float = LATENCY, jitter: float = JITTER) -> RemotePlatform:
    """Connect `tenant`'s organization, through a new proxy, to a new organization of the upstream
    that owns an agent and an environment. Stop the proxy with `platform.proxy.stop()`."""
    theirs = upstream.organization(f"{tenant.organization.name} upstream")
    proxy = spawn_proxy(target=upstream.url, latency=latency, jitter=jitter, seed=13)
    try:
        organization_upstream_credentials_set(organization=tenant.organization, api_key=theirs.key, base_url=proxy.url)
        with theirs.sdk(upstream.url) as client:
            agent = client.beta.agents.create(name="burst agent", model="claude-sonnet-4-6")
            environment = client.beta.environments.create(name="burst environment")
    except BaseException:
        proxy.stop()
        raise
    return RemotePlatform(upstream, proxy, tenant, theirs, (agent.id, agent.version, environment.id))


def rate_limited_fires() -> list[str]:
    return list(DeploymentRun.objects.filter(error_type="session_rate_limited_error").values_list("fire_id", flat=True))


def rate_limited_calls(ledger: ProxyLedger) -> dict[str, int]:
    return {fire_id: ledger.calls.get(fire_id, 0) for fire_id in rate_limited_fires()}


def claims_in_flight(procs: Processes, calls: dict[str, int], name: str = "worker") -> list[int]:
    """The pool processes of worker `name` that hold claimed fires whose sessions they have asked the
    proxy for (`calls`: its calls per key) and not recorded yet — the proxy forwards a request
    whatever becomes of the process that sent it. From the worker's log: a batch starts with
    `fire claimed` lines and ends with `fire batch of …`."""
    held: dict[int, list[str]] = {}
    for line in procs.log_text(name).splitlines():
        if line.startswith("{") and ('"fire claimed' in line or '"fire batch of' in line):
            entry = json.loads(line)
            fires = held.setdefault(entry["process"], [])
            if entry["message"].startswith("fire claimed"):
                fires.append(entry["fire_id"])
            else:
                fires.clear()
    children = set(procs.children(name))
    return sorted(pid for pid, fires in held.items() if pid in children and any(f in calls for f in fires))


def wait_for_runs(n: int, *, until: datetime) -> int:
    """Until `n` runs are recorded (a fault "in the middle of the burst" lands once the workers are
    busy with it: the first remote fire of a pool process waits for the SDK to be imported, seconds);
    returns how many there are."""
    while True:
        runs = DeploymentRun.objects.count()
        if runs >= n or timezone.now() >= until:
            return runs
        time.sleep(0.1)


# --- bursts whose fires exist before the first is due ------------------------------------------------


def anchor_ahead(seconds: float) -> datetime:
    """The first whole minute at least `seconds` from now."""
    now = timezone.now()
    anchor = minute_floor(now) + timedelta(minutes=1)
    return anchor if (anchor - now).total_seconds() >= seconds else anchor + timedelta(minutes=1)


def wait_for_fires(n: int, *, before: datetime) -> list[str]:
    """The ids of the burst's `n` fires, once the scheduler has written them all (its lookahead
    writes them a few seconds before the anchor)."""
    while timezone.now() < before:
        fire_ids = list(Fire.objects.values_list("id", flat=True))
        if len(fire_ids) >= n:
            return fire_ids
        time.sleep(0.05)
    raise AssertionError(f"the scheduler had not written the burst's {n} fires by {before:%H:%M:%S}")


def first_due() -> datetime:
    return Fire.objects.aggregate(first=Min("due_at"))["first"]


# --- platform faults by Idempotency-Key hash ------------------------------------------------------

HANG = {"kind": "hang", "max_seconds": 10}  # longer than the workers wait (UPSTREAM_TIMEOUT)

# name → (percent of fires, the proxy's answer to the 1st, 2nd, … call with a fire's key; later calls pass)
PLANS: dict[str, tuple[float, list]] = {
    "429": (3.0, [{"kind": "rate_limit", "retry_after": 30}]),
    "500": (1.5, ["status:500"]),
    "502": (1.5, ["status:502"]),
    "503": (1.5, ["status:503"]),
    "reset": (1.5, ["reset"]),
    "hang": (1.5, [HANG]),
    "answer lost": (1.5, ["answer_lost"]),
    "529, answer lost": (1.5, ["status:529", "answer_lost"]),
    "every attempt fails": (3.0, ["status:502", "reset", HANG]),  # as many as GATEWAY_RETRY_ATTEMPTS
}


def as_seen_by_the_worker(plan: list) -> tuple[str, ...]:
    return tuple(AS_SEEN_BY_THE_WORKER[parse_fault(fault, "plan").kind] for fault in plan)


def fault_rules(fire_ids: list[str], *, salt: str, tries: int = 500) -> tuple[list[dict], dict[str, str]]:
    """One proxy rule per plan of PLANS, for POST /v1/sessions, selecting keys by a salted hash;
    each rule's salt is the first that selects at least one of these fires and none another rule
    selects. Returns the rules and the plan name of every fire hit."""
    plan_of: dict[str, str] = {}
    rules = []
    for name, (percent, plan) in PLANS.items():
        for attempt in range(tries):
            rule_salt = f"{salt}:{name}:{attempt}"
            hit = {fire_id for fire_id in fire_ids if key_selected(fire_id, percent, rule_salt)}
            if hit and not hit & plan_of.keys():
                break
        else:
            raise AssertionError(f"no salt in {tries} tries gives plan {name!r} fires of its own")
        plan_of.update(dict.fromkeys(hit, name))
        rules.append({
            "name": name, "method": "POST", "path": "/v1/sessions", "plan": plan,
            "key_hash": {"percent": percent, "salt": rule_salt},
        })
    return rules, plan_of


def predicted(plan_name: str | None, attempts: int) -> tuple[str, int]:
    """(the run's outcome — "session" or its error type —, upstream calls) of a fire under a plan."""
    plan = as_seen_by_the_worker(PLANS[plan_name][1]) if plan_name else ()
    return expected_outcome(plan, attempts)


def outcome_of(run: DeploymentRun | None) -> str | None:
    return None if run is None else (run.session_id and "session") or run.error_type


def counted(items) -> str:
    """`kind:count,…` of an iterable of kinds, or of a mapping kind → count."""
    counts = items if isinstance(items, dict) else Counter(items)
    return ",".join(f"{kind}:{count}" for kind, count in sorted(counts.items(), key=str))

"""Bursts of scheduled fires, fault tools, figures and invariants shared by the fault scenarios.

A burst: N deployments whose `next_fire_at` is one nominal minute (the anchor), each with its own
jitter spread evenly over SCHEDULER_MAX_JITTER_SECONDS, so the scheduler claims them all in the
tick after the anchor and the worker starts them over the following seconds. Their expression
fires at the anchor's minute once an hour, so a scenario never sees a second burst.
"""

import json
import math
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from deployments_app.models import Deployment
from platform_app.models import Session
from runs_app.models import DeploymentRun, Fire
from tests.e2e.procs import LOG_DIR, Processes
from tests.factories import USER_MESSAGE, make_agent, make_environment

MAX_JITTER = 10
LEASE = 8
GRACE = 5
BASE_ENV = {
    "SCHEDULER_MAX_JITTER_SECONDS": MAX_JITTER,
    "FIRE_LEASE_SECONDS": LEASE,
    "FIRE_RECOVERY_GRACE_SECONDS": GRACE,
    "GATEWAY_RETRY_ATTEMPTS": 3,
    "GATEWAY_RETRY_BACKOFF_SECONDS": 0.2,
}

FIGURES_FILE = LOG_DIR / "fault-figures.log"
RESULTS: list["Figures"] = []  # every scenario's figures in this pytest session, in order

REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
    "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]


# --- time ----------------------------------------------------------------------------------------


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def wait_until(moment: datetime) -> None:
    delay = (moment - timezone.now()).total_seconds()
    if delay > 0:
        time.sleep(delay)


def seconds_since(moment: datetime) -> float:
    return (timezone.now() - moment).total_seconds()


def next_anchor(*, max_late: float = 3.0) -> datetime:
    """The nominal minute of the next burst: this minute if it began at most `max_late` seconds ago
    (most of the jitter window is still ahead), else the next one."""
    now = timezone.now()
    floor = minute_floor(now)
    if (now - floor).total_seconds() <= max_late:
        return floor
    return floor + timedelta(minutes=1)


# --- bursts --------------------------------------------------------------------------------------


@dataclass
class Burst:
    anchor: datetime
    deployment_ids: list[str]

    @property
    def expected(self) -> set[tuple[str, datetime]]:
        return {(deployment_id, self.anchor) for deployment_id in self.deployment_ids}

    @property
    def last_due(self) -> datetime:
        return self.anchor + timedelta(seconds=MAX_JITTER)

    def at(self, seconds: float) -> datetime:
        return self.anchor + timedelta(seconds=seconds)


def create_burst(
    tenant, n: int, anchor: datetime, *, expression: str | None = None, jitter: tuple[float, float] = (0.0, 1.0),
    references: tuple[str, int, str] | None = None,
) -> Burst:
    """`n` deployments due at `anchor`, their jitter fractions spread evenly over `jitter`.
    `references`: (agent id, agent version, environment id) that exist on a remote platform; by
    default a new agent and environment of the built-in platform."""
    low, high = jitter
    if references is None:
        agent = make_agent(tenant)
        references = (agent.id, agent.latest_version, make_environment(tenant).id)
    agent_id, agent_version, environment_id = references
    rows = [
        Deployment(
            organization=tenant.organization, workspace=tenant.workspace, name=f"burst {i}",
            agent_id=agent_id, agent_version=agent_version, environment_id=environment_id,
            initial_events=[USER_MESSAGE], schedule_expression=expression or f"{anchor.minute} * * * *",
            schedule_timezone="UTC", next_fire_at=anchor, jitter_fraction=low + (high - low) * (i + 0.5) / n,
        )
        for i in range(n)
    ]
    Deployment.objects.bulk_create(rows, batch_size=500)
    return Burst(anchor=anchor, deployment_ids=[row.id for row in rows])


def start_ready(procs: Processes, *, workers=("worker",), schedulers=("scheduler",), concurrency: int = 2) -> None:
    for name in workers:
        procs.start_worker(name, concurrency=concurrency)
    for name in schedulers:
        procs.start_scheduler(name)
    for name in workers:
        wait_for_log_count(procs, name, "ready.", 1)
    for name in schedulers:
        wait_for_log_count(procs, name, "beat: Starting", 1)


def wait_for_log_count(procs: Processes, name: str, needle: str, count: int, timeout: float = 60) -> None:
    """Until `needle` appears `count` times in the log (a restarted process appends to it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs.log_text(name).count(needle) >= count:
            return
        if procs.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{procs.log_text(name)[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"{needle!r} not seen {count}x in {name} log:\n{procs.log_text(name)[-3000:]}")


def open_fires() -> int:
    return Fire.objects.filter(status__in=[Fire.Status.PENDING, Fire.Status.CLAIMED]).count()


def wait_settled(expected: int, *, timeout: float) -> bool:
    """Until `expected` scheduled runs exist and no fire is pending or claimed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if DeploymentRun.objects.filter(trigger_type="schedule").count() >= expected and open_fires() == 0:
            return True
        time.sleep(0.25)
    return False


def assert_alive(procs: Processes, *names: str) -> None:
    for name in names or tuple(procs.procs):
        code = procs.procs[name].poll()
        assert code is None, f"{name} exited with {code} during the scenario:\n{procs.log_text(name)[-4000:]}"


def fires_republished(procs: Processes, *names: str) -> int:
    """Re-publications by the recovery sweep, from the schedulers' logs."""
    names = names or tuple(name for name in procs.procs if name.startswith("scheduler"))
    return sum(procs.log_text(name).count("fire re-published by recovery") for name in names)


def fires_reclaimed() -> int:
    """Fires claimed more than once: their first attempt died after claiming."""
    return Fire.objects.filter(attempts__gt=1).count()


# --- services ------------------------------------------------------------------------------------


def redis_ping() -> bool:
    try:
        out = subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return out.stdout.strip() == "PONG"


def redis_stop() -> None:
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True, timeout=10)
    _wait(lambda: not redis_ping(), "redis-server to stop", 15)


def redis_start() -> None:
    if not redis_ping():
        os.makedirs("/var/lib/redis", exist_ok=True)
        os.makedirs("/var/log/redis", exist_ok=True)
        subprocess.run(REDIS_START, check=True, capture_output=True, timeout=15)
    _wait(redis_ping, "redis-server to answer PING", 30)


def _pg_cluster() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def pg_ready() -> bool:
    try:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=2"):
            return True
    except psycopg.Error:
        return False


def pg_stop() -> None:
    subprocess.run([*_pg_cluster(), "stop", "-m", "fast"], check=True, capture_output=True, timeout=60)


def pg_start() -> None:
    """Start the cluster unless it answers, wait until it accepts connections, and drop this
    process's broken connection so the next query reconnects."""
    if not pg_ready():
        subprocess.run([*_pg_cluster(), "start"], capture_output=True, timeout=60)
    _wait(pg_ready, "PostgreSQL to accept connections", 60)
    connection.close()


def services_ready(timeout: float = 120) -> None:
    """Until PostgreSQL and Redis both answer (another suite's scenario may have one of them down)."""
    _wait(lambda: pg_ready() and redis_ping(), "PostgreSQL and Redis to answer", timeout)


def stay_down(seconds: float, is_up) -> bool:
    """Keep a stopped service down for `seconds` more, watching it: True if it came back before
    (another process started it, e.g. a concurrent `make test` running scripts/ensure-services.sh)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if is_up():
            return True
        time.sleep(0.5)
    return False


@dataclass(frozen=True)
class Outage:
    stopped_at: datetime
    cleared: datetime
    back_early: bool

    @property
    def note(self) -> str:
        down = (self.cleared - self.stopped_at).total_seconds()
        return f"{down:.1f}s" + (" (started again by another process)" if self.back_early else "")


def outage(stop, start, is_up, seconds: float) -> Outage:
    """Stop a shared service, keep it down `seconds` from the stop request (watching that nothing
    else starts it), and start it again — also when something failed meanwhile."""
    stopped_at = timezone.now()  # unreachable from the stop request on, however long shutting down takes
    try:
        stop()
        back_early = stay_down(seconds - seconds_since(stopped_at), is_up)
    finally:
        start()
    return Outage(stopped_at, timezone.now(), back_early)


def _wait(predicate, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


# --- figures and invariants ----------------------------------------------------------------------


@dataclass
class Figures:
    scenario: str
    expected: int
    runs: int
    duplicate_runs: int
    duplicate_sessions: int
    missed: int
    unexpected: int
    pending: int
    p50: float
    p99: float
    max: float
    recovery: float | None
    missed_counted: int
    sessions: int
    runs_with_session: int
    session_key_mismatches: int
    notes: dict = field(default_factory=dict)

    def line(self) -> str:
        recovery = "-" if self.recovery is None else f"{self.recovery:.1f}s"
        text = (
            f"fires expected={self.expected} runs recorded={self.runs} duplicate runs={self.duplicate_runs} "
            f"duplicate sessions={self.duplicate_sessions} missed fires={self.missed} pending left={self.pending} "
            f"lateness p50={self.p50:.2f}s p99={self.p99:.2f}s max={self.max:.2f}s recovery={recovery}"
        )
        if self.notes:
            text += " | " + "; ".join(f"{key}={value}" for key, value in self.notes.items())
        return text


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def measure(
    scenario: str, *, expected: set[tuple[str, datetime]], fault_cleared_at: datetime | None, last_due: datetime,
    notes: dict | None = None, sessions=None,
) -> Figures:
    """Count what happened, from the database only. Recovery time: from the fault being cleared
    (or the last due time, if later) to the last run recorded. `sessions`: the platform's sessions
    to hold the runs against (a queryset; by default every session of the built-in platform)."""
    runs = list(
        DeploymentRun.objects.filter(trigger_type="schedule").values(
            "deployment_id", "scheduled_at", "session_id", "started_at", "created_at", "fire_id", "fire__due_at"
        )
    )
    per_occurrence = Counter((run["deployment_id"], run["scheduled_at"]) for run in runs)
    per_session = Counter(run["session_id"] for run in runs if run["session_id"])
    sessions = list((Session.objects.all() if sessions is None else sessions).values("id", "idempotency_key"))
    per_key = Counter(session["idempotency_key"] for session in sessions)
    orphans = [session for session in sessions if session["id"] not in per_session]
    key_of = {session["id"]: session["idempotency_key"] for session in sessions}
    lateness = sorted((run["started_at"] - run["fire__due_at"]).total_seconds() for run in runs)
    recovery = None
    if runs:
        since = max(last_due, fault_cleared_at) if fault_cleared_at else last_due
        recovery = max(0.0, (max(run["created_at"] for run in runs) - since).total_seconds())
    return Figures(
        scenario=scenario,
        expected=len(expected),
        runs=len(runs),
        duplicate_runs=sum(count - 1 for count in per_occurrence.values()),
        duplicate_sessions=(
            sum(count - 1 for count in per_key.values())
            + sum(count - 1 for count in per_session.values())
            + len(orphans)
        ),
        missed=len(expected - set(per_occurrence)),
        unexpected=len(set(per_occurrence) - expected),
        pending=open_fires(),
        p50=percentile(lateness, 0.50),
        p99=percentile(lateness, 0.99),
        max=lateness[-1] if lateness else 0.0,
        recovery=recovery,
        missed_counted=Deployment.objects.aggregate(total=Sum("missed_fires"))["total"] or 0,
        sessions=len(sessions),
        runs_with_session=sum(1 for run in runs if run["session_id"]),
        session_key_mismatches=sum(
            1 for run in runs if run["session_id"] and key_of.get(run["session_id"]) != run["fire_id"]
        ),
        notes={**(notes or {}), "load": load_average()},
    )


def record(figures: Figures) -> None:
    """Print the figures line, append it to the results file, keep it for docs/reliability.md."""
    line = f"[faults] {figures.scenario}: {figures.line()}"
    print(line, flush=True)
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(FIGURES_FILE, "a") as out:
        out.write(f"{timezone.now():%Y-%m-%dT%H:%M:%SZ} {line}\n")
    RESULTS.append(figures)


def load_average() -> str:
    """The 1-minute load average at the end of a scenario: the machine is shared, figures depend on it."""
    return f"{os.getloadavg()[0]:.1f}"


def assert_invariants(figures: Figures, *, missed_counted: int = 0) -> None:
    where = f"{figures.scenario}: {figures.line()}"
    assert figures.duplicate_runs == 0, f"duplicate runs — {where}"
    assert figures.duplicate_sessions == 0, f"duplicate or orphan sessions — {where}"
    assert figures.sessions == figures.runs_with_session, f"sessions != runs with a session — {where}"
    assert figures.session_key_mismatches == 0, f"a run's session was made for another fire — {where}"
    assert figures.missed == 0, f"fires inside the catch-up window never ran — {where}"
    assert figures.unexpected == 0, f"runs for occurrences that should not have fired — {where}"
    assert figures.pending == 0, f"fires left pending or claimed — {where}"
    assert figures.runs == figures.expected, where
    assert figures.missed_counted == missed_counted, f"missed_fires counted {figures.missed_counted} — {where}"


# --- schedulers ------------------------------------------------------------------------------------


def publications(procs, name: str) -> list[tuple[str, str]]:
    """(timestamp, fire id) of every publication in a scheduler's log, first ones and recoveries."""
    found = []
    for line in procs.log_text(name).splitlines():
        if line.startswith("{") and '"fire published"' in line:
            entry = json.loads(line)
            found.append((entry["ts"], entry["fire_id"]))
    return found


def first_published_by(procs, names) -> list[int]:
    """How many fires each scheduler published first, i.e. claimed."""
    first: dict[str, tuple[str, str]] = {}
    for name in names:
        for ts, fire_id in publications(procs, name):
            if fire_id not in first or ts < first[fire_id][0]:
                first[fire_id] = (ts, name)
    return [sum(1 for _, owner in first.values() if owner == name) for name in names]


def freeze_first_publisher(procs: Processes, schedulers, burst: Burst, *, seconds: float) -> tuple[str, datetime, int]:
    """SIGSTOP the first scheduler seen publishing the burst (its claim has committed; the rest of
    what it claimed is not published yet), keep it frozen `seconds` while the others must stay
    alive, then SIGCONT. Returns (its name, when it was frozen, how many it had published)."""
    wait_until(burst.at(-1))
    frozen = None
    deadline = time.monotonic() + 30
    while frozen is None and time.monotonic() < deadline:
        for name in schedulers:
            if '"fire published"' in procs.log_text(name):
                procs.signal(name, signal.SIGSTOP)
                frozen = name
                break
        else:
            time.sleep(0.01)
    assert frozen, "no scheduler published the burst"
    frozen_at = timezone.now()
    published = len(publications(procs, frozen))
    try:
        time.sleep(seconds)
        assert_alive(procs, *[name for name in schedulers if name != frozen])
    finally:
        procs.signal(frozen, signal.SIGCONT)
    return frozen, frozen_at, published

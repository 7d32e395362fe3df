"""Fixtures of the fault-injection suite, and the report it leaves behind.

Every scenario prints one figures line and appends it to $E2E_LOG_DIR/fault-figures.log. With
WRITE_RELIABILITY_DOC=1, a session in which every scenario ran and passed (the remote ones too)
rewrites docs/reliability.md from those lines (plain CI runs leave the tree alone).
"""

import fcntl
import os
import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from django.db import connection

from tests.e2e.faults.harness import BASE_ENV, RESULTS, services_ready
from tests.e2e.procs import Processes

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "reliability.md"

SCENARIOS = {
    "1 baseline": "no fault: one worker (2 pool processes) and one scheduler.",
    "2 pool child SIGKILL": "a worker pool process is SIGKILLed every second from the burst's start until "
    "its last due time, usually while it is creating sessions (the platform takes 0.3 s per call here, so the "
    "kills land between a claim and its commit).",
    "3 worker SIGKILL": "the whole worker (main process and pool) is SIGKILLed in the middle of the burst, "
    "with every message it had reserved, and started again 2 s later.",
    "4 Redis restart": "redis-server is shut down without saving in the middle of the burst (every queued "
    "and reserved message is lost) and started again 5 s later.",
    "4b Redis restart, worker holding countdowns": "the deterministic form of 4's worst case: the worker has "
    "reserved every fire of a small burst (unacknowledged countdown messages, all due 5–10 s later) and waits idle "
    "on the queue when redis-server is shut down for 5 s.",
    "5a two schedulers": "two scheduler processes at once, claiming in batches of 50.",
    "5b three schedulers, one frozen": "three scheduler processes; the first one seen publishing the burst is "
    "frozen with SIGSTOP right after its claim committed, kept frozen for 15 s, then resumed with SIGCONT.",
    "6 PostgreSQL down 20 s": "the PostgreSQL cluster is stopped (fast shutdown) in the middle of the burst "
    "and started 20 s later; no process is restarted by the test.",
    "7 gateway faults": "a fault-injecting gateway in the worker hits ~10% of fires (by a hash of the "
    "idempotency key) with 429, 500, timeouts, connection resets, a session created whose answer is lost, "
    "and 500s on every quick retry; each fire's outcome and its number of gateway calls are checked.",
    "8 downtime past the catch-up window": "deployments due at minute M (`* * * * *`) while scheduler and worker "
    "are stopped; they stay down until 2 s past M+1 (catch-up window 20 s): M, now older than the window, must "
    "be skipped and counted in `missed_fires` (exactly once per deployment), M+1 must fire exactly once.",
}

REMOTE_SCENARIOS = {
    "R1 baseline": "scenario 1: no fault.",
    "R2 pool child SIGKILL": "every second, a pool process whose claimed fires' session requests are at the "
    "proxy (0.3 s per call here) is SIGKILLed, at least 3 times: the upstream creates those sessions all the same, "
    "and the fires claimed again must get them back.",
    "R3 worker SIGKILL": "scenario 3, once a quarter of the burst is recorded (the first remote fire of a pool "
    "process waits seconds for the SDK to be imported: at the burst's middle the workers may not have started yet).",
    "R4 Redis restart": "scenario 4, once a quarter of the burst is recorded.",
    "R5a two schedulers": "scenario 5a: two scheduler processes at once.",
    "R6 PostgreSQL down 20 s": "scenario 6, once a quarter of the burst is recorded; the upstream shares this "
    "PostgreSQL, so it answers 5xx meanwhile.",
    "R7 platform faults at the proxy": "proxy rules, one per plan, select 15–20% of fires by a salted hash of their "
    "Idempotency-Key (salts chosen once the fires are written, so every plan hits fires of its own): 429 with "
    "`retry-after`, 500, 502, 503, a connection reset, a hung connection, an answer lost after the session was "
    "created (alone, and after a 529), every attempt failing; each fire's outcome and its number of upstream calls "
    "are checked.",
}

REMOTE_INTRO = """
## Remote platform

The same scenarios with the workers in remote mode (`SESSION_GATEWAY=anthropic`,
`tests/e2e/faults/test_remote_faults.py`): the remote platform is a second live instance of this
service (built-in platform, its own gunicorn process), reached through the latency and fault
proxy `upstream_sim.proxy` ({latency}) with the organization's own upstream
credentials; the workers wait {timeout} s for an upstream answer. Sessions are counted on the upstream
(rows of the upstream organization, `idempotency_key` = fire id) and calls at the proxy: besides
the invariants above, no session in our own platform tables, every upstream call keyed by a fire,
and each fire recorded as `session_rate_limited_error` made exactly one upstream
`POST /v1/sessions` call.

{scenarios}

| scenario | figures | date (UTC) | machine |
|---|---|---|---|
"""

INTRO = """\
# Reliability under faults

`tests/e2e/faults/` (run by `make test`, markers `e2e` and `faults`) starts real Celery workers and
`celery beat` schedulers against PostgreSQL and Redis, makes a burst of scheduled fires — every
deployment due at the same nominal minute, each with its own jitter spread over
`SCHEDULER_MAX_JITTER_SECONDS={jitter}` — injects one fault while the burst runs, waits for the system to
recover by itself, and counts from the database. Settings for all scenarios: fire lease
`FIRE_LEASE_SECONDS={lease}`, recovery grace `FIRE_RECOVERY_GRACE_SECONDS={grace}`, 3 quick gateway
attempts. The scenarios:

{scenarios}

Invariants asserted in every scenario:

- **no duplicate run**: at most one run per (deployment, `scheduled_at`);
- **no duplicate session**: at most one session per fire (idempotency key), no session without a run,
  sessions == runs with a `session_id`, and each run's session was created for that run's fire;
- **no missed fire** inside the catch-up window: every expected occurrence has exactly one run, and
  `Deployment.missed_fires` equals the number of occurrences older than the window (0 except scenario 8);
- **nothing left pending or claimed** once recovered;
- **a 429 is never retried**: exactly one gateway call for each fire recorded as `session_rate_limited_error`.

Figures: *lateness* is `run.started_at − fire.due_at` (due = nominal time + jitter; `started_at` is
the first claim of the fire, so a fire re-run after a crash keeps its first start), *recovery* is the
time from the fault being cleared (or the burst's last due time, if later) to the last run recorded.
Lines are produced by `WRITE_RELIABILITY_DOC=1 make test PYTEST_ARGS="tests/e2e/faults -q -s"`; the
machine is shared, so lateness depends on its load (`load` = 1-minute load average at the end).

Two defects were found by these scenarios and fixed: the recovery sweep re-published every fire
still waiting in a worker's backlog once per grace period (hundreds of duplicate messages per
burst; it now backs off, `runs_app/scheduler.py::recover`), and a worker holding countdown fires
died with "Unrecoverable error" when Redis restarted (a kombu 5.7.0 bug, worked around in
`runs_app/broker.py`; scenario 4b fails without it).

| scenario | figures | date (UTC) | machine |
|---|---|---|---|
"""


LOCK_FILE = Path(os.environ.get("E2E_LOG_DIR", "/tmp/sd-e2e-logs")) / "faults.lock"


@pytest.fixture(autouse=True)
def exclusive_services(request):
    """One fault scenario at a time on this machine: they stop the shared PostgreSQL and Redis, and
    concurrent suites (other checkouts, parallel `make test`) would wreck each other's scenarios.
    Taken before the test touches the database; the connection is renewed once the lock is ours,
    since another suite's scenario may have restarted PostgreSQL meanwhile."""
    if request.node.get_closest_marker("faults") is None:
        yield
        return
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            services_ready()
            connection.close()
            yield
        finally:
            services_ready()
            connection.close()  # a connection broken by the scenario must not break the flush
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def start_processes(transactional_db):
    """Start a set of this test's own processes (own queue); all of them are stopped at the end,
    and only them."""
    started: list[Processes] = []

    def start(**env) -> Processes:
        processes = Processes(**{**BASE_ENV, **env})
        started.append(processes)
        return processes

    yield start
    for processes in started:
        for name in processes.procs:
            try:
                processes.signal(name, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            except ProcessLookupError:
                pass
        processes.stop_all()
        _drop_queue(processes.queue)


def _drop_queue(queue: str) -> None:
    """Messages left in this test's own queue (duplicates nobody needs any more)."""
    import redis
    from django.conf import settings

    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5)
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    except redis.RedisError:
        pass


def _machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    mem_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return f"{cores} cores, {mem_kb / 1024 / 1024:.1f} GiB RAM"


def write_reliability_doc() -> None:
    from tests.e2e.faults.harness import GRACE, LEASE, MAX_JITTER
    from tests.e2e.faults.remote import JITTER, LATENCY, UPSTREAM_TIMEOUT

    machine = _machine()
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    scenarios = "\n".join(f"- **{name}** — {text}" for name, text in SCENARIOS.items())
    text = INTRO.format(jitter=MAX_JITTER, lease=LEASE, grace=GRACE, scenarios=scenarios)
    latest = {figures.scenario: figures for figures in RESULTS}
    for name in SCENARIOS:
        text += f"| {name} | {latest[name].line()} | {date} | {machine} |\n"
    text += REMOTE_INTRO.format(
        latency=f"{LATENCY * 1000 + JITTER * 500:.0f} ms ± {JITTER * 500:.0f} ms per request", timeout=UPSTREAM_TIMEOUT,
        scenarios="\n".join(f"- **{name}** — {about}" for name, about in REMOTE_SCENARIOS.items()),
    )
    for name in REMOTE_SCENARIOS:
        text += f"| {name} | {latest[name].line()} | {date} | {machine} |\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def pytest_terminal_summary(terminalreporter):
    if RESULTS:
        terminalreporter.section("fault-injection figures")
        for figures in RESULTS:
            terminalreporter.write_line(f"{figures.scenario}: {figures.line()}")


def pytest_sessionfinish(session, exitstatus):
    ran = {figures.scenario for figures in RESULTS}
    every = set(SCENARIOS) | set(REMOTE_SCENARIOS)
    if os.environ.get("WRITE_RELIABILITY_DOC") == "1" and ran >= every and exitstatus == 0:
        write_reliability_doc()

"""Fire burst: N deployments all due in the same minute, real scheduler and workers.

Usage (from the repository root; PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python bench/fire_burst.py [--deployments 10000] [--workers 1,2,4] [--runs 3]
        [--capacity-runs 1] [--capacity-workers 1,2,4,8] [--no-write]

Set-up: N deployments (bulk_create, one organization per 1,000 — the product's per-organization
limit — each with one agent and one environment), every one with a schedule that fires once, at
the next whole minute M, and a random jitter fraction (SCHEDULER_MAX_JITTER_SECONDS, default 10 s).
For each worker count W and each run: the run tables are emptied, ONE scheduler is started
(`celery beat` with runs_app.scheduler:FireScheduler) and W worker processes (`celery worker
-P prefork -c W` by default; `--pool solo` starts W separate `-P solo` workers instead), on a
queue of their own, with the local session gateway. The bench waits for M, polls the
DeploymentRun count, and computes every figure from the database:

- last: the last DeploymentRun.created_at minus M;
- lateness: Fire.started_at (first claim) minus Fire.due_at (M + jitter): p50, p99, max;
- fires/s: runs recorded / (last run − first run), i.e. the rate sustained over the burst;
- duplicates: a second run, or a second session, for one deployment and minute; misses: a
  deployment without a run for M. Both must be 0.
- CPU seconds spent during the burst by the workers, the scheduler, the PostgreSQL backends
  serving this database and Redis, against the machine's capacity (cores × seconds): where the
  time goes, hence what saturates.

With jitter on, fires fall due spread over the jitter (10,000 over 10 s: 1,000/s), so fires/s can
not exceed that rate; after the jittered runs, `--capacity-runs` (default 1) bursts per W with
jitter 0 put every fire due at M at once: the rate they sustain is the capacity, which the
≥ 1,000 fires/s target is judged on. `--jitter 0` alone runs only capacity bursts.
Prints one summary line and appends a dated section to docs/benchmarks.md (unless --no-write).

Remote mode, `--gateway anthropic [--upstream-latency 0.1] [--upstream-jitter 0]`: the workers fire
through the `anthropic` gateway (SESSION_GATEWAY=anthropic, the shared default ANTHROPIC_API_KEY /
ANTHROPIC_BASE_URL; the bench organizations have no credentials of their own) against
`upstream_sim.stub`, started once as a process of its own and answering after the given latency.
Its ceiling (`bench/upstream_stub_ceiling.py`) is measured first. Before each burst the stub's
counters and sessions are reset; after it, its counters give, besides every figure above:

- upstream calls per fire: the stub's `POST /v1/sessions` and `GET /v1/…` look-ups ÷ runs recorded;
- sessions created at the stub, runs with a session and distinct idempotency keys: a key asked for
  more than once is a retry and fine, a second session for one fire is not; with the stub's
  idempotency that shows as sessions ≠ runs with a session, counted as duplicates (the local
  platform_app_session table stays empty in this mode);
- the most calls in flight at the stub at once, answers other than 200, the workers' CPU per fire
  and the stub's own CPU.

`--compare-local` (on by default in remote mode) follows each remote capacity burst (jitter 0) with the
built-in gateway's burst at the same W, so the two run under the same load from whatever else shares
the machine, and reports remote fires/s as a share of local.
`--profile DIR` samples the workers with py-spy through each burst and prints where their time goes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/sd-bench-logs"))
LEAD_SECONDS = 20  # processes need this long to be up before the minute
UPSTREAM_CALL_ROUTES = ("POST /v1/sessions", "GET /v1/")  # what the gateway asks the platform


@dataclass
class Burst:
    workers: int
    pool: str
    minute: datetime
    recorded: int = 0
    expected: int = 0
    last_s: float = float("nan")
    first_s: float = float("nan")
    lateness: list[float] = field(default_factory=list)
    rate: float = float("nan")
    duplicates: int = 0
    misses: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    window_s: float = 0.0
    load: tuple = ()
    scheduler_done_s: float = float("nan")
    gateway: str = "local"
    upstream: dict = field(default_factory=dict)  # the stub's counters after the burst (remote mode)
    with_session: int = 0  # runs that recorded a session (remote mode)
    profile: str = ""  # py-spy's stacks of the workers (--profile)

    @property
    def upstream_calls(self) -> int:
        routes = self.upstream.get("requests_by_route", {})
        return sum(n for route, n in routes.items() if route.startswith(UPSTREAM_CALL_ROUTES))

    @property
    def calls_per_fire(self) -> float:
        return self.upstream_calls / self.recorded if self.recorded else float("nan")

    @property
    def lookups(self) -> int:
        routes = self.upstream.get("requests_by_route", {})
        return sum(n for route, n in routes.items() if route.startswith("GET /v1/"))

    @property
    def upstream_errors(self) -> int:
        return sum(n for status, n in self.upstream.get("responses_by_status", {}).items() if status != "200")

    @property
    def p50(self) -> float:
        return common.percentile(self.lateness, 50)

    @property
    def p99(self) -> float:
        return common.percentile(self.lateness, 99)

    @property
    def max(self) -> float:
        return max(self.lateness) if self.lateness else float("nan")


class RunAborted(Exception):
    """A worker or the scheduler died mid-burst (e.g. Redis restarted under it): the run is void."""


class Processes:
    """The worker(s) and the scheduler of one run. Only PIDs started here are ever signalled."""

    def __init__(self, env: dict[str, str], queue: str):
        self.env = env
        self.queue = queue
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        LOG_DIR.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str]) -> None:
        path = LOG_DIR / f"{self.queue}-{name}.log"
        self.logs[name] = path
        self.procs[name] = subprocess.Popen(
            argv, cwd=common.ROOT, env=self.env, stdout=path.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self, name: str, concurrency: int, pool: str) -> None:
        self.start(name, [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", self.queue, "-c", str(concurrency),
            "-P", pool, "-n", f"{name}-{self.queue}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "INFO",
        ])

    def start_scheduler(self) -> None:
        self.start("scheduler", [
            sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO", "--pidfile=",
            "-s", str(LOG_DIR / f"{self.queue}-beat.schedule"),
        ])

    def wait_for(self, name: str, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.logs[name].read_text(errors="replace"):
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited early; see {self.logs[name]}")
            time.sleep(0.1)
        raise TimeoutError(f"{needle!r} not seen in {self.logs[name]}")

    def pids(self, prefix: str) -> list[int]:
        out = []
        for name, proc in self.procs.items():
            if name.startswith(prefix) and proc.poll() is None:
                out.extend(common.group_pids(proc.pid))
        return out

    def stop(self) -> None:
        from tests.e2e.procs import stop_process_groups

        stop_process_groups(self.procs.values())


class Upstream:
    """The remote platform of a remote-mode bench: `upstream_sim.stub` in a process of its own,
    started once per bench and reset before each burst. Only the process started here is stopped."""

    def __init__(self, latency: float, jitter: float):
        import secrets

        from upstream_sim import spawn_stub

        self.latency = latency
        self.jitter = jitter
        # A throwaway key for a stub on loopback: never stored, different every bench.
        self.api_key = f"sk-bench-{secrets.token_urlsafe(16)}"
        self.handle = spawn_stub(latency=latency, jitter=jitter, api_key=self.api_key)
        self.url = self.handle.url
        self.pid = self.handle.process.pid

    def env(self) -> dict[str, str]:
        return {"ANTHROPIC_API_KEY": self.api_key, "ANTHROPIC_BASE_URL": self.url}

    def reset(self) -> None:
        self.handle.reset()

    def stats(self) -> dict:
        return self.handle.stats()

    def alive(self) -> bool:
        return self.handle.process.poll() is None

    def stop(self) -> None:
        self.handle.stop()


def stub_ceiling(latency: float) -> str:
    """bench/upstream_stub_ceiling.py's summary line at this latency (the stub's own limit)."""
    argv = [sys.executable, str(Path(__file__).resolve().parent / "upstream_stub_ceiling.py"),
            "--latency", f"{latency:g}", "--duration", "5"]
    # A group of its own, stopped whole on a timeout or an interrupt: the script's stub included.
    proc = subprocess.Popen(argv, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except BaseException as exc:
        from tests.e2e.procs import stop_process_groups

        stop_process_groups([proc], grace=5)
        if isinstance(exc, subprocess.TimeoutExpired):
            return "upstream stub ceiling: not measured (timed out)"
        raise
    lines = stdout.strip().splitlines()
    return lines[-1] if lines else f"upstream stub ceiling: not measured (exit {proc.returncode}: {stderr[-300:]})"


def start_profiler(path: Path, pid: int | None) -> subprocess.Popen | None:
    """py-spy (the `bench` extra) recording a worker and its pool processes until stopped: only the
    thread holding the GIL, so a sample is Python CPU, not a thread waiting for its turn. The stacks
    go to `path` in py-spy's collapsed format; `profile_summary` reads them."""
    spy = Path(sys.executable).with_name("py-spy")
    if pid is None or not spy.exists():
        print("  profile: py-spy not installed (pip install -e '.[bench]') or no prefork worker", file=sys.stderr)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--gil", "--rate", "100",
         "--format", "raw", "--output", str(path)],
        stdout=subprocess.DEVNULL, stderr=(LOG_DIR / "py-spy.log").open("ab"), start_new_session=True,
    )


def stop_profiler(profiler: subprocess.Popen) -> None:
    if profiler.poll() is None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            profiler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait()


# Where a fire's CPU goes in the workers, by the first of these frames on the stack (inclusive).
PROFILE_PARTS = [
    ("sessions.create: parse the answer", "_process_response (anthropic/_base_client.py"),
    ("sessions.create: HTTP (httpx2, httpcore2, h11)", "Client.send (httpx2/_client.py"),
    ("sessions.create: build the request", "_build_request (anthropic/_base_client.py"),
    ("sessions.create: rest of the SDK call", "_create_session (gateways/anthropic.py"),
    ("built-in platform: create the sessions", "sessions_create_batch ("),
    ("record the runs (one transaction)", "_record (runs_app/firing.py"),
    ("lock the deployments", "_lock_deployments (runs_app/firing.py"),
    ("claim the fires", "claim_fires (runs_app/firing.py"),
    ("log lines and metrics after commit", "_announce (runs_app/firing.py"),
    ("rest of the fire path", "execute_fires (runs_app/firing.py"),
    ("log lines elsewhere", "Logger._log (logging/__init__.py"),
]


def profile_summary(path: Path) -> list[tuple[str, int, float]]:
    """(part, samples, share of the samples) from py-spy's collapsed stacks; the rest is Celery's
    own work (messages, the pool) and anything else."""
    counts = {name: 0 for name, _ in PROFILE_PARTS}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        total += int(number)
        for name, needle in PROFILE_PARTS:
            if needle in stack:
                counts[name] += int(number)
                break
    rest = total - sum(counts.values())
    rows = [(name, n, n / total if total else 0.0) for name, n in counts.items() if n]
    return rows + [("Celery and everything else", rest, rest / total if total else 0.0)]


# --- data --------------------------------------------------------------------------------------


def seed(count: int) -> None:
    """Organizations of 1,000 deployments each, with an agent and an environment each."""
    import random

    from accounts_app.services import default_workspace, organization_get_or_create
    from deployments_app.models import Deployment
    from tests.factories import USER_MESSAGE, make_agent, make_environment

    common.truncate(
        "runs_app_deploymentrun", "runs_app_fire", "platform_app_session", "deployments_app_deployment",
        "platform_app_agentversion", "platform_app_agent", "platform_app_environment",
    )

    class Tenant:
        def __init__(self, index: int):
            self.organization = organization_get_or_create(name=f"bench-org-{index}")
            self.workspace = default_workspace(self.organization)

    rng = random.Random(20261123)
    rows = []
    for org_index in range((count + 999) // 1000):
        tenant = Tenant(org_index)
        agent = make_agent(tenant, name=f"bench agent {org_index}")
        environment = make_environment(tenant, name=f"bench env {org_index}")
        for i in range(min(1000, count - org_index * 1000)):
            rows.append(Deployment(
                organization=tenant.organization, workspace=tenant.workspace, name=f"burst {org_index}-{i}",
                agent_id=agent.id, agent_version=agent.latest_version, environment_id=environment.id,
                initial_events=[USER_MESSAGE], schedule_expression="0 0 1 1 *", schedule_timezone="UTC",
                next_fire_at=None, jitter_fraction=rng.random(),
            ))
    Deployment.objects.bulk_create(rows, batch_size=2000)


def arm(minute: datetime) -> None:
    """Empty the run tables and make every deployment due at `minute` (once a year thereafter)."""
    from deployments_app.models import Deployment

    common.truncate("runs_app_deploymentrun", "runs_app_fire", "platform_app_session")
    expression = f"{minute.minute} {minute.hour} {minute.day} {minute.month} *"
    Deployment.objects.update(
        schedule_expression=expression, schedule_timezone="UTC", next_fire_at=minute, last_run_at=None,
        missed_fires=0, status="active", paused_reason=None, archived_at=None,
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE deployments_app_deployment")


def backend_pids() -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


def redis_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def cpu_snapshot(procs: Processes, extra: dict[str, list[int]] | None = None) -> dict[str, dict[int, float]]:
    groups = {
        "workers": procs.pids("worker"),
        "scheduler": procs.pids("scheduler"),
        "postgres": backend_pids(),
        "redis": redis_pids(),
        **(extra or {}),
    }
    return {name: {pid: common.proc_cpu_seconds([pid]) for pid in pids} for name, pids in groups.items()}


def merge_cpu(into: dict, snapshot: dict) -> None:
    for name, pids in snapshot.items():
        group = into.setdefault(name, {})
        for pid, seconds in pids.items():
            group[pid] = max(seconds, group.get(pid, 0.0))


def cpu_delta(before, after) -> dict[str, float]:
    return {
        name: sum(seconds - before.get(name, {}).get(pid, 0.0) for pid, seconds in pids.items())
        for name, pids in after.items()
    }


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies summed over every core, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def retrying(fn, attempts: int = 60):
    """fn() again after a dropped connection (other people's fault tests restart PostgreSQL)."""
    from django.db import OperationalError, InterfaceError, connection

    for attempt in range(attempts):
        try:
            return fn()
        except (OperationalError, InterfaceError):
            if attempt + 1 == attempts:
                raise
            connection.close()
            time.sleep(1.0)


def lookahead() -> float:
    """How far ahead of the minute the scheduler claims the burst (SCHEDULER_LOOKAHEAD_SECONDS)."""
    from django.conf import settings

    return float(settings.SCHEDULER_LOOKAHEAD_SECONDS)


# --- one run -----------------------------------------------------------------------------------


def one_burst(count: int, workers: int, pool: str, max_jitter: float, timeout: float,
              upstream: Upstream | None = None, profile_dir: Path | None = None) -> Burst:
    """One burst; through the stub upstream with the `anthropic` gateway when `upstream` is given.
    With `profile_dir`, py-spy samples the workers through the burst (collapsed stacks, one file)."""
    from django.db import connection
    from django.utils import timezone

    from runs_app.models import DeploymentRun, Fire

    now = timezone.now()
    lead = LEAD_SECONDS + lookahead()
    minute = (now + timedelta(seconds=lead + 60)).replace(second=0, microsecond=0) - timedelta(minutes=1)
    if (minute - now).total_seconds() < lead:
        minute += timedelta(minutes=1)
    arm(minute)
    queue = f"bench-{uuid.uuid4().hex[:10]}"
    gateway = "anthropic" if upstream else "local"
    env = common.bench_env(CELERY_QUEUE=queue, SCHEDULER_MAX_JITTER_SECONDS=max_jitter, SESSION_GATEWAY=gateway,
                           **(upstream.env() if upstream else {}))
    procs = Processes(env, queue)
    burst = Burst(workers=workers, pool=pool, minute=minute, expected=count, gateway=gateway)
    profiler: subprocess.Popen | None = None
    extra_cpu = {"stub": [upstream.pid]} if upstream else None
    if upstream:
        upstream.reset()
    try:
        if pool == "solo":
            for index in range(workers):
                procs.start_worker(f"worker{index}", 1, "solo")
        else:
            procs.start_worker("worker", workers, pool)
        procs.start_scheduler()
        for name in procs.procs:
            procs.wait_for(name, "ready." if name.startswith("worker") else "beat: Starting")
        # From before the scheduler's lookahead claim, so its work on the burst is counted.
        delay = (minute - timezone.now()).total_seconds() - lookahead() - 1.0
        if delay > 0:
            time.sleep(delay)
        if profile_dir:
            profiler = start_profiler(profile_dir / f"{gateway}-W{workers}-jitter{max_jitter:g}-{queue}.txt",
                                      procs.procs["worker"].pid if "worker" in procs.procs else None)
        connection.close()
        load_before = common.loadavg()
        cpu_before = retrying(lambda: cpu_snapshot(procs, extra_cpu))
        busy_before = machine_busy()
        clock_before = time.monotonic()
        deadline = minute + timedelta(seconds=max_jitter + timeout)
        cpu_after: dict[str, dict[int, float]] = {}
        polls = 0
        while timezone.now() < deadline:
            if polls % 4 == 0:
                # Sampled as it goes: a process that ends (a database connection recycled after
                # CONN_MAX_AGE) keeps the CPU it had at its last sample.
                merge_cpu(cpu_after, retrying(lambda: cpu_snapshot(procs, extra_cpu)))
            polls += 1
            gone = [name for name, proc in procs.procs.items() if proc.poll() is not None]
            if gone:
                raise RunAborted(f"{', '.join(gone)} exited during the burst; see {LOG_DIR}")
            if upstream and not upstream.alive():
                raise RuntimeError("the stub upstream exited during the burst")
            if retrying(lambda: DeploymentRun.objects.count() >= count
                        and not Fire.objects.exclude(status="done").exists()):
                break
            time.sleep(0.25)
        merge_cpu(cpu_after, retrying(lambda: cpu_snapshot(procs, extra_cpu)))
        busy_after = machine_busy()
        burst.window_s = time.monotonic() - clock_before
        burst.load = (load_before, common.loadavg())
        time.sleep(1.0)  # anything doubled would show up now
    finally:
        if profiler is not None:
            stop_profiler(profiler)
        procs.stop()
    if profiler is not None and Path(profiler.args[-1]).exists():
        burst.profile = str(profiler.args[-1])
    if upstream:
        burst.upstream = upstream.stats()  # after the workers stopped: nothing is in flight any more
    burst.cpu = cpu_delta(cpu_before, cpu_after)
    cores = len(os.sched_getaffinity(0))
    burst.cpu["machine"] = (busy_after[0] - busy_before[0]) / os.sysconf("SC_CLK_TCK")
    burst.cpu["capacity"] = cores * burst.window_s

    retrying(lambda: analyze(burst, count, minute))
    log = procs.logs.get("scheduler")
    burst.scheduler_done_s = scheduler_publish_end(log, minute, count) if log else float("nan")
    return burst


def analyze(burst: Burst, count: int, minute: datetime) -> None:
    """Every figure from the database's timestamps."""
    from django.db.models import Count, Max, Min

    from runs_app.models import DeploymentRun, Fire

    runs = DeploymentRun.objects.filter(trigger_type="schedule", scheduled_at=minute)
    burst.recorded = runs.count()
    span = runs.aggregate(first=Min("created_at"), last=Max("created_at"))
    if span["last"] is not None:
        burst.last_s = (span["last"] - minute).total_seconds()
        burst.first_s = (span["first"] - minute).total_seconds()
        window = (span["last"] - span["first"]).total_seconds()
        burst.rate = burst.recorded / window if window > 0 else float("nan")
    burst.lateness = [
        (started - due).total_seconds()
        for started, due in Fire.objects.filter(scheduled_at=minute, started_at__isnull=False)
        .values_list("started_at", "due_at")
    ]
    doubled_runs = (
        DeploymentRun.objects.filter(trigger_type="schedule").values("deployment_id", "scheduled_at")
        .annotate(n=Count("id")).filter(n__gt=1).count()
    )
    if burst.gateway == "local":
        from platform_app.models import Session

        sessions = Session.objects.count()
        burst.duplicates = doubled_runs + max(0, sessions - DeploymentRun.objects.count())
    else:
        # The sessions live upstream: each stub session is one fire's, unless it is a second one.
        burst.with_session = DeploymentRun.objects.filter(session_id__isnull=False).count()
        burst.duplicates = doubled_runs + abs(burst.upstream.get("sessions_created", 0) - burst.with_session)
    burst.misses = count - runs.values("deployment_id").distinct().count()
    fires = Fire.objects.filter(scheduled_at=minute).values_list("status").annotate(n=Count("id"))
    if dict(fires).get("done", 0) != burst.recorded:
        print(f"  note: fire states {dict(fires)}", file=sys.stderr)


def scheduler_publish_end(log: Path, minute: datetime, count: int) -> float:
    """Seconds after the minute at which the scheduler logged its count-th 'fire published' (the
    end of the burst's first publication; later lines are the recovery's re-publications)."""
    import json

    last = None
    seen = 0
    for line in log.read_text(errors="replace").splitlines():
        if '"fire published"' not in line:
            continue
        try:
            last = json.loads(line)["ts"]
        except (ValueError, KeyError):
            continue
        seen += 1
        if seen >= count:
            break
    if last is None:
        return float("nan")
    stamp = datetime.fromisoformat(last.replace("Z", "+00:00"))
    return (stamp - minute).total_seconds()


# --- report ------------------------------------------------------------------------------------


def summarize(bursts: list[Burst]) -> dict:
    med = common.median
    cpu_keys = ["workers", "scheduler", "postgres", "redis", "machine", "capacity"]
    summary = {
        "runs": len(bursts),
        "last": med(b.last_s for b in bursts),
        "p50": med(b.p50 for b in bursts),
        "p99": med(b.p99 for b in bursts),
        "max": med(b.max for b in bursts),
        "rate": med(b.rate for b in bursts),
        "published": med(b.scheduler_done_s for b in bursts),
        "duplicates": sum(b.duplicates for b in bursts),
        "misses": sum(b.misses for b in bursts),
        "recorded": min(b.recorded for b in bursts),
        "cpu": {k: med(b.cpu.get(k, 0.0) for b in bursts) for k in cpu_keys},
        "load": max(b.load[0][0] for b in bursts),
    }
    if bursts[0].gateway != "local":
        summary["cpu"]["stub"] = med(b.cpu.get("stub", 0.0) for b in bursts)
        summary["upstream"] = {
            "calls_per_fire": med(b.calls_per_fire for b in bursts),
            "worst_calls_per_fire": max(b.calls_per_fire for b in bursts),
            "creates": med(b.upstream.get("requests_by_route", {}).get("POST /v1/sessions", 0) for b in bursts),
            "lookups": med(b.lookups for b in bursts),
            "sessions": med(b.upstream.get("sessions_created", 0) for b in bursts),
            "with_session": med(b.with_session for b in bursts),
            "keys": med(b.upstream.get("idempotency_keys", 0) for b in bursts),
            "errors": sum(b.upstream_errors for b in bursts),
            "max_in_flight": med(b.upstream.get("max_in_flight", 0) for b in bursts),
            "connections": med(b.upstream.get("connections_opened", 0) for b in bursts),
        }
    return summary


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # so the `finally` that stops the worker and scheduler runs


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--runs", type=int, default=3, help="runs per worker count (medians are reported)")
    parser.add_argument("--pool", choices=["prefork", "solo"], default="prefork")
    parser.add_argument("--jitter", type=float, default=10.0, help="SCHEDULER_MAX_JITTER_SECONDS (0: all due at once)")
    parser.add_argument("--capacity-runs", type=int, default=1,
                        help="runs per worker count with jitter 0 after the jittered ones (the capacity; 0: none)")
    parser.add_argument("--capacity-workers", default="1,2,4,8",
                        help="worker counts of the capacity runs (beyond the cores: where throughput stops growing)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds past the last due time to wait")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    parser.add_argument("--gateway", choices=["local", "anthropic"], default="local",
                        help="local: the built-in platform; anthropic: a remote platform (the stub upstream)")
    parser.add_argument("--upstream-latency", type=float, default=0.1,
                        help="seconds the stub upstream holds every answer back (--gateway anthropic)")
    parser.add_argument("--upstream-jitter", type=float, default=0.0,
                        help="up to this many more seconds per answer, uniform (--gateway anthropic)")
    parser.add_argument("--compare-local", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the capacity bursts with the built-in gateway (default: on with --gateway anthropic)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample the workers with py-spy through each burst, one stacks file per burst in DIR")
    args = parser.parse_args(argv)
    if not (0 <= args.upstream_latency <= 10 and 0 <= args.upstream_jitter <= 10):
        parser.error("--upstream-latency and --upstream-jitter: 0 to 10 seconds")
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if args.gateway == "anthropic":
        return main_remote(args, worker_counts)

    common.configure()
    load_start = common.loadavg()
    seed(args.deployments)
    voided: list[str] = []
    results = run_phase(args, worker_counts, args.jitter, args.runs, voided)
    capacity_counts = [int(w) for w in (args.capacity_workers or args.workers).split(",") if w.strip()]
    capacity = run_phase(args, capacity_counts, 0.0, args.capacity_runs, voided) if args.capacity_runs and args.jitter else {}
    load_end = common.loadavg()

    limit = args.jitter + 2.0
    rates = capacity or results
    met = {
        "all recorded": all(r["recorded"] == args.deployments for r in [*results.values(), *capacity.values()]),
        f"last ≤ {limit:g}s": all(r["last"] <= limit for r in results.values()),
        "p99 ≤ 1s": all(r["p99"] <= 1.0 for r in results.values()),
        "≥1000 fires/s": max(r["rate"] for r in rates.values()) >= 1000,
        "0 dup/miss": all(r["duplicates"] == 0 and r["misses"] == 0 for r in [*results.values(), *capacity.values()]),
    }
    print(
        f"fire_burst: N={args.deployments} jitter {args.jitter:g}s {args.pool} | "
        + " | ".join(
            f"W={w} last +{r['last']:.2f}s p50 {r['p50'] * 1000:.0f}ms p99 {r['p99'] * 1000:.0f}ms "
            f"max {r['max'] * 1000:.0f}ms {r['rate']:.0f}/s dup {r['duplicates']} miss {r['misses']}"
            for w, r in results.items()
        )
        + (" | capacity (jitter 0): " + ", ".join(f"W={w} {r['rate']:.0f}/s" for w, r in capacity.items())
           if capacity else "")
        + " | targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items())
    )

    if not args.no_write:
        pool_text = (
            "one `celery worker -P prefork -c W`" if args.pool == "prefork"
            else "W separate `celery worker -P solo` processes"
        )
        lines = [
            f"## fire_burst — {common.stamp()}",
            "",
            f"Machine: {common.machine()}; {common.load_note(load_start, load_end)}. "
            f"{args.deployments:,} deployments due at the same minute, PostgreSQL + Redis, local gateway, one "
            f"scheduler (`celery beat`, FireScheduler, SCHEDULER_LOOKAHEAD_SECONDS={lookahead():g}) and {pool_text}; "
            f"medians of the runs per W (duplicates and misses: totals over the runs).",
            "",
        ]
        lines += phase_table(f"Jitter up to {args.jitter:g} s (the product's setting), {args.runs} run(s) per W. "
                             f"With the fires spread over {args.jitter:g} s, fires/s cannot exceed "
                             f"{args.deployments / args.jitter:,.0f} (the rate they fall due at)." if args.jitter else
                             f"Jitter 0: every fire due at the minute, {args.runs} run(s) per W.", results)
        if capacity:
            lines += phase_table(f"Capacity: jitter 0, every fire due at the minute at once, {args.capacity_runs} "
                                 "run(s) per W; fires/s here is what the machine sustains.", capacity)
        if voided:
            lines += ["Runs voided and repeated (a process died under them): " + "; ".join(voided) + ".", ""]
        lines += ["Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items())
                  + (" (fires/s from the capacity runs)." if capacity else ".")]
        common.append_report(lines)
    return 0 if all(met.values()) else 2


def main_remote(args, worker_counts: list[int]) -> int:
    """`--gateway anthropic`: the jittered phase through the stub upstream, then the capacity
    bursts, each W's remote burst followed at once by the built-in gateway's (unless
    --no-compare-local), so the two share whatever else the machine is doing at the time."""
    from django.conf import settings

    compare = args.compare_local is not False
    load_start = common.loadavg()
    ceiling = stub_ceiling(args.upstream_latency)
    print(f"  {ceiling}", file=sys.stderr, flush=True)
    common.configure()
    seed(args.deployments)
    voided: list[str] = []
    upstream = Upstream(args.upstream_latency, args.upstream_jitter)
    # With --jitter 0 the capacity bursts are the whole bench (--workers, --runs).
    capacity_counts = ([int(w) for w in (args.capacity_workers or args.workers).split(",") if w.strip()]
                       if args.jitter else worker_counts)
    capacity_runs = args.capacity_runs if args.jitter else args.runs
    capacity: dict[int, dict] = {}
    local_capacity: dict[int, dict] = {}
    try:
        results = run_phase(args, worker_counts, args.jitter, args.runs, voided, upstream) if args.jitter else {}
        for workers in capacity_counts if capacity_runs else []:
            capacity.update(run_phase(args, [workers], 0.0, capacity_runs, voided, upstream))
            if compare:
                local_capacity.update(run_phase(args, [workers], 0.0, capacity_runs, voided))
    finally:
        upstream.stop()
    load_end = common.loadavg()

    limit = args.jitter + 2.0
    remote_phases = [*results.values(), *capacity.values()]
    share = (max(r["rate"] for r in capacity.values()) / max(r["rate"] for r in local_capacity.values())
             if capacity and local_capacity else float("nan"))
    met = {
        "all recorded": all(r["recorded"] == args.deployments for r in [*remote_phases, *local_capacity.values()]),
        f"last ≤ {limit:g}s": all(r["last"] <= limit for r in results.values()) if results else None,
        "p99 ≤ 1s": all(r["p99"] <= 1.0 for r in results.values()) if results else None,
        "upstream calls per fire ≤ 1.1": all(r["upstream"]["worst_calls_per_fire"] <= 1.1 for r in remote_phases),
        "capacity ≥ 50% of local": share >= 0.5 if capacity and local_capacity else None,
        "0 dup/miss": all(r["duplicates"] == 0 and r["misses"] == 0
                          for r in [*remote_phases, *local_capacity.values()]),
    }
    verdicts = {k: "met" if v else "not measured" if v is None else "NOT met" for k, v in met.items()}
    parts = [
        f"fire_burst: N={args.deployments} gateway anthropic, upstream latency {args.upstream_latency:g}s"
        f"{f' + up to {args.upstream_jitter:g}s' if args.upstream_jitter else ''}, jitter {args.jitter:g}s {args.pool}",
        *(
            f"W={w} last +{r['last']:.2f}s p50 {r['p50'] * 1000:.0f}ms p99 {r['p99'] * 1000:.0f}ms "
            f"max {r['max'] * 1000:.0f}ms {r['rate']:.0f}/s {r['upstream']['calls_per_fire']:.2f} calls/fire "
            f"dup {r['duplicates']} miss {r['misses']}"
            for w, r in results.items()
        ),
    ]
    if capacity:
        parts.append("capacity (jitter 0): " + ", ".join(
            f"W={w} {r['rate']:.0f}/s ({r['upstream']['calls_per_fire']:.2f} calls/fire)" for w, r in capacity.items()))
    if local_capacity:
        parts.append("local capacity: " + ", ".join(f"W={w} {r['rate']:.0f}/s" for w, r in local_capacity.items())
                     + f" (remote {share:.0%} of local)")
    parts.append("targets: " + ", ".join(f"{k} {v}" for k, v in verdicts.items()))
    print(" | ".join(parts))

    if not args.no_write:
        pool_text = (
            "one `celery worker -P prefork -c W`" if args.pool == "prefork"
            else "W separate `celery worker -P solo` processes"
        )
        jitter_text = f" plus up to {args.upstream_jitter:g} s (uniform)" if args.upstream_jitter else ""
        lines = [
            f"## fire_burst through a remote platform — {common.stamp()}",
            "",
            f"Machine: {common.machine()}; {common.load_note(load_start, load_end)}. "
            f"{args.deployments:,} deployments due at the same minute, PostgreSQL + Redis, the `anthropic` gateway "
            f"(SESSION_GATEWAY=anthropic, UPSTREAM_MAX_IN_FLIGHT={settings.UPSTREAM_MAX_IN_FLIGHT} per worker process, "
            f"FIRE_BATCH_SIZE={settings.FIRE_BATCH_SIZE}, FIRE_BATCH_WINDOW_SECONDS={settings.FIRE_BATCH_WINDOW_SECONDS:g}) "
            f"against `upstream_sim.stub` (its own process, every answer held back {args.upstream_latency:g} s{jitter_text}), "
            f"one scheduler (`celery beat`, FireScheduler, SCHEDULER_LOOKAHEAD_SECONDS={lookahead():g}) and {pool_text}; "
            f"medians of the runs per W (duplicates and misses: totals over the runs).",
            "",
            f"The stub's own ceiling, measured first (`bench/upstream_stub_ceiling.py --latency {args.upstream_latency:g} "
            f"--duration 5`): {ceiling.removeprefix('upstream stub ceiling: ')}.",
            "",
        ]
        if results:
            lines += phase_table(f"Remote, jitter up to {args.jitter:g} s (the product's setting), {args.runs} run(s) "
                                 f"per W. With the fires spread over {args.jitter:g} s, fires/s cannot exceed "
                                 f"{args.deployments / args.jitter:,.0f} (the rate they fall due at).", results)
            lines += upstream_table(results)
        if capacity:
            lines += phase_table(f"Remote capacity: jitter 0, every fire due at the minute at once, {capacity_runs} "
                                 "run(s) per W.", capacity)
            lines += upstream_table(capacity)
        if local_capacity:
            lines += phase_table(f"Built-in (local) gateway, same data: jitter 0, {capacity_runs} run(s) per W, each "
                                 "right after the remote burst of the same W.", local_capacity)
        if capacity and local_capacity:
            lines += compare_table(capacity, local_capacity)
        if voided:
            lines += ["Runs voided and repeated (a process died under them): " + "; ".join(voided) + ".", ""]
        lines += ["Targets: " + "; ".join(f"{k}: {v}" for k, v in verdicts.items())
                  + " (capacity: the best W of each gateway)."]
        common.append_report(lines)
    return 0 if all(v is not False for v in met.values()) else 2


def run_phase(args, worker_counts: list[int], jitter: float, runs: int, voided: list[str],
              upstream: Upstream | None = None) -> dict[int, dict]:
    """`runs` bursts per worker count with the given jitter; their medians per worker count."""
    results: dict[int, dict] = {}
    for workers in worker_counts:
        bursts = []
        attempts = 0
        while len(bursts) < runs:
            attempts += 1
            try:
                burst = one_burst(args.deployments, workers, args.pool, jitter, args.timeout, upstream,
                                  args.profile)
            except RunAborted as exc:
                voided.append(f"W={workers}: {exc}")
                print(f"  W={workers}: run void, {exc}", file=sys.stderr, flush=True)
                if attempts >= runs + 2:
                    raise
                continue
            bursts.append(burst)
            remote = ""
            if upstream:
                stats = burst.upstream
                remote = (
                    f"{burst.gateway}: {burst.upstream_calls} upstream calls ({burst.calls_per_fire:.3f}/fire, "
                    f"{burst.lookups} look-ups), {stats.get('sessions_created', 0)} sessions created, "
                    f"{burst.with_session} runs with a session, {stats.get('idempotency_keys', 0)} keys, "
                    f"{burst.upstream_errors} non-200, max in flight {stats.get('max_in_flight', 0)}, "
                )
            elif args.gateway != "local":
                remote = "local: "
            print(
                f"  {remote}jitter {jitter:g}s W={workers} run {len(bursts)}: {burst.recorded}/{burst.expected} recorded, "
                f"last +{burst.last_s:.2f}s, lateness p50 {burst.p50:.3f}s p99 {burst.p99:.3f}s max {burst.max:.3f}s, "
                f"{burst.rate:.0f} fires/s, published by +{burst.scheduler_done_s:.2f}s, dup {burst.duplicates}, "
                f"miss {burst.misses}, cpu {', '.join(f'{k} {v:.1f}s' for k, v in burst.cpu.items())}, "
                f"load {burst.load[0][0]:.2f}",
                file=sys.stderr, flush=True,
            )
            if burst.profile:
                print(f"  profile of the workers ({burst.profile}), samples at 100/s of the thread holding the GIL:",
                      file=sys.stderr)
                for name, samples, share in profile_summary(Path(burst.profile)):
                    print(f"    {share:6.1%} {samples / 100 / max(1, burst.recorded) * 1000:6.3f} ms/fire  {name}",
                          file=sys.stderr)
        results[workers] = summarize(bursts)
    return results


def phase_table(title: str, results: dict[int, dict]) -> list[str]:
    lines = [
        title,
        "",
        "| W | recorded | last run after the minute | lateness p50 | p99 | max | fires/s | "
        "last publish after the minute | duplicates | misses | max 1-min load |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workers, r in results.items():
        lines.append(
            f"| {workers} | {r['recorded']:,} | {r['last']:.2f} s | {r['p50'] * 1000:.0f} ms | "
            f"{r['p99'] * 1000:.0f} ms | {r['max'] * 1000:.0f} ms | {r['rate']:.0f} | "
            f"{r['published']:.2f} s | {r['duplicates']} | {r['misses']} | {r['load']:.2f} |"
        )
    lines += [
        "",
        "CPU from one second before the scheduler's claim to the last run, median run: seconds, and in brackets "
        "milliseconds per fire. The capacity is cores × that wall time; 'whole machine' includes whatever else ran.",
        "",
        "| W | workers | scheduler | PostgreSQL backends | Redis | whole machine | capacity |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workers, r in results.items():
        c = r["cpu"]
        per = {k: c[k] / max(1, r["recorded"]) * 1000 for k in c}
        lines.append(
            f"| {workers} | {c['workers']:.1f} ({per['workers']:.2f}) | {c['scheduler']:.1f} "
            f"({per['scheduler']:.2f}) | {c['postgres']:.1f} ({per['postgres']:.2f}) | {c['redis']:.1f} "
            f"({per['redis']:.2f}) | {c['machine']:.1f} ({per['machine']:.2f}) | {c['capacity']:.1f} |"
        )
    return lines + [""]


def upstream_table(results: dict[int, dict]) -> list[str]:
    """What the stub upstream saw, per W (remote mode)."""
    lines = [
        "Counted at the stub upstream, median run (non-200 answers: total over the runs). Calls per fire = "
        "(`POST /v1/sessions` + `GET` look-ups) ÷ runs recorded; a second session for one fire would show as "
        "sessions created ≠ runs with a session.",
        "",
        "| W | calls per fire | sessions.create | look-ups | sessions created | runs with a session | "
        "distinct idempotency keys | non-200 answers | max in flight | connections opened | "
        "workers CPU per fire | stub CPU (per fire) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workers, r in results.items():
        u, c = r["upstream"], r["cpu"]
        fires = max(1, r["recorded"])
        lines.append(
            f"| {workers} | {u['calls_per_fire']:.3f} | {u['creates']:,.0f} | {u['lookups']:,.0f} | "
            f"{u['sessions']:,.0f} | {u['with_session']:,.0f} | {u['keys']:,.0f} | {u['errors']} | "
            f"{u['max_in_flight']:.0f} | {u['connections']:.0f} | {c['workers'] / fires * 1000:.2f} ms | "
            f"{c['stub']:.1f} s ({c['stub'] / fires * 1000:.2f} ms) |"
        )
    return lines + [""]


def compare_table(remote: dict[int, dict], local: dict[int, dict]) -> list[str]:
    lines = [
        "Capacity side by side (jitter 0, same data, back to back per W): remote fires/s as a share of the "
        "built-in gateway's.",
        "",
        "| W | remote fires/s | local fires/s | remote ÷ local | workers CPU per fire, remote | local |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workers, r in remote.items():
        l = local.get(workers)
        if l is None:
            continue
        lines.append(
            f"| {workers} | {r['rate']:.0f} | {l['rate']:.0f} | {r['rate'] / l['rate']:.0%} | "
            f"{r['cpu']['workers'] / max(1, r['recorded']) * 1000:.2f} ms | "
            f"{l['cpu']['workers'] / max(1, l['recorded']) * 1000:.2f} ms |"
        )
    best_remote = max(r["rate"] for r in remote.values())
    best_local = max(r["rate"] for r in local.values())
    lines.append(f"| best | {best_remote:.0f} | {best_local:.0f} | {best_remote / best_local:.0%} | | |")
    return lines + [""]


if __name__ == "__main__":
    sys.exit(main())

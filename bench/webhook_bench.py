"""Outgoing webhooks: events delivered per second to a local receiver, and what a 30-second endpoint
does to a fire burst.

Usage (from the repository root; PostgreSQL and Redis on 127.0.0.1)::

    .venv/bin/python bench/webhook_bench.py [--events 10000] [--runs 3] [--per-transaction 100]
        [--threads 8] [--fire-burst 1000] [--no-write]

Throughput (target: at least 500 events/s on 2 cores): one organization with one endpoint subscribed
to every event, on a receiver in a process of its own (asyncio, answers 200 at once) on 127.0.0.1;
one webhooks worker (`celery worker -Q <queue> -P threads -c --threads`), no scheduler. Each run
records `--events` events with `events_record`, `--per-transaction` per transaction (a fire batch
of 50 runs writes 100: started + succeeded), as fast as this process can, and waits until the
receiver has seen every event id. Figures per run:

- delivered/s: events ÷ (last event received − first transaction committed);
- latency: receipt − the event's `created_at`, p50 and p99;
- duplicates (an event id received twice: at least once allows it, none expected here);
- the worker's and PostgreSQL's CPU seconds.

Fire burst (`--fire-burst N`, 0 to skip; default 1,000): bench/fire_burst.py's burst (N deployments
due in the same minute, jitter 10 s, real scheduler and 2 prefork workers) twice, first with no
endpoint, then with one endpoint per organization subscribed to `deployment_run.*` on a receiver
that answers after 30 s, and a webhooks worker delivering to it during the burst. The issue's
target: the burst's p99 lateness unchanged within noise.

Prints one summary line and appends a dated section to docs/benchmarks.md (unless --no-write).
Exit status 0 when the throughput target is met, 2 when not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/sd-bench-logs"))
TARGET_PER_SECOND = 500
RUN_EVENTS = ("deployment_run.started", "deployment_run.succeeded", "deployment_run.failed")


# --- the receiver, a process of its own --------------------------------------------------------------


class Receiver:
    def __init__(self, delay: float = 0.0):
        ctx = multiprocessing.get_context("spawn")
        self.port = ctx.Value("i", 0)
        self.count = ctx.Value("i", 0)
        self.arrived = ctx.Value("i", 0)
        self.ready, self.stop_event = ctx.Event(), ctx.Event()
        self.parent, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(self.port, self.count, self.arrived, self.ready, self.stop_event, child, delay),
                                   daemon=True)
        self.process.start()
        if not self.ready.wait(10):
            raise RuntimeError("the receiver did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.value}/hooks"

    def received(self) -> int:
        return self.count.value

    def stop(self) -> list[tuple[str, float, str]]:
        self.stop_event.set()
        seen = self.parent.recv() if self.parent.poll(30) else []
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
        return seen


def _serve(port, count, arrived, ready, stop, results, delay: float) -> None:
    seen: list[tuple[str, float, str]] = []
    handlers: set[asyncio.Task] = set()

    async def handle(reader, writer):
        """HTTP/1.1 with keep-alive, as most web frameworks serve it: requests one after another
        on a connection until the client closes it."""
        handlers.add(asyncio.current_task())
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = time.time()
                with arrived.get_lock():
                    arrived.value += 1
                if delay:
                    await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                seen.append((headers.get("webhook-id", ""), received, json.loads(body).get("created_at", "")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError,
                asyncio.CancelledError):
            pass
        finally:
            writer.close()
            handlers.discard(asyncio.current_task())

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port.value = server.sockets[0].getsockname()[1]
        ready.set()
        while not stop.is_set():
            count.value = len(seen)
            await asyncio.sleep(0.02)
        server.close()
        for task in list(handlers):  # requests still waiting out the delay
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    asyncio.run(main())
    results.send(seen)


# --- processes ---------------------------------------------------------------------------------------


class Worker:
    """One webhooks worker on a queue of its own. Only the PID started here is ever signalled."""

    def __init__(self, queue: str, threads: int, env: dict[str, str], name: str = "webhooks"):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log = LOG_DIR / f"{queue}-{name}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "-P", "threads", "-c", str(threads),
             "-n", f"{name}-{queue}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel", "WARNING"],
            cwd=common.ROOT, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "ready" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the webhooks worker did not start; see {self.log}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        return common.group_pids(self.process.pid) if self.process.poll() is None else []

    def stop(self) -> None:
        from tests.e2e.procs import stop_process_groups

        stop_process_groups([self.process], grace=10)


# --- throughput ---------------------------------------------------------------------------------------


def _clear_webhooks() -> None:
    common.truncate("webhooks_app_webhookattempt", "webhooks_app_webhookdelivery", "webhooks_app_webhookevent",
                    "webhooks_app_webhookendpoint")


def _backend_pids() -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return [row[0] for row in cursor.fetchall()]


def throughput_run(events: int, per_transaction: int, threads: int, timeout: float, workers: int = 1) -> dict:
    from django.db import transaction

    from accounts_app.services import default_workspace, organization_get_or_create
    from webhooks_app import services
    from webhooks_app.events import EVENT_TYPES

    _clear_webhooks()
    queue = f"bench-wh-{uuid.uuid4().hex[:10]}"
    os.environ["WEBHOOK_QUEUE"] = queue
    from django.conf import settings

    settings.WEBHOOK_QUEUE = queue
    receiver = Receiver()
    env = common.bench_env(WEBHOOK_QUEUE=queue, WEBHOOK_ALLOW_PRIVATE_TARGETS=1)
    worker_procs = [Worker(queue, threads, env, name=f"webhooks{index}") for index in range(workers)]
    try:
        organization = organization_get_or_create(name="bench-webhooks")
        workspace = default_workspace(organization)
        services.webhook_endpoint_create(organization=organization, workspace=None, url=receiver.url,
                                         enabled_events=list(EVENT_TYPES))
        load_before = common.loadavg()
        worker_pids, backend_pids = [pid for w in worker_procs for pid in w.pids()], _backend_pids()
        worker_before, backend_before = common.proc_cpu_seconds(worker_pids), common.proc_cpu_seconds(backend_pids)
        own_before = time.process_time()
        first_commit = None
        record_started = time.monotonic()
        for start in range(0, events, per_transaction):
            size = min(per_transaction, events - start)
            with transaction.atomic():
                services.events_record(events=[
                    (RUN_EVENTS[(start + i) % 2], organization.pk, workspace.pk, f"drun_bench_{start + i}")
                    for i in range(size)
                ])
            if first_commit is None:
                first_commit = time.time()
        record_s = time.monotonic() - record_started
        deadline = time.monotonic() + timeout
        while receiver.received() < events and time.monotonic() < deadline:
            time.sleep(0.05)
        own_cpu = time.process_time() - own_before
        worker_cpu = common.proc_cpu_seconds(worker_pids) - worker_before
        backend_pids = sorted(set(backend_pids + _backend_pids()))  # connections opened meanwhile count from 0
        backend_cpu = common.proc_cpu_seconds(backend_pids) - backend_before
        load_after = common.loadavg()
    finally:
        seen = receiver.stop()
        for worker in worker_procs:
            worker.stop()
    ids = [webhook_id for webhook_id, _, _ in seen]
    last = max((at for _, at, _ in seen), default=float("nan"))
    latencies = [at - datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
                 for _, at, created in seen if created]
    return {
        "events": events,
        "workers": workers,
        "received": len(set(ids)),
        "duplicates": len(ids) - len(set(ids)),
        "rate": len(set(ids)) / (last - first_commit) if seen and first_commit else float("nan"),
        "record_rate": events / record_s if record_s > 0 else float("nan"),
        "p50": common.percentile(latencies, 50),
        "p99": common.percentile(latencies, 99),
        "cpu": worker_cpu + backend_cpu,
        "cpu_worker": worker_cpu,
        "cpu_postgres": backend_cpu,
        "cpu_recorder": own_cpu,
        "load": (load_before, load_after),
    }


# --- fire burst with and without a 30-second endpoint ------------------------------------------------------


def fire_burst_pair(count: int, workers: int, delay: float, runs: int) -> dict[str, list[dict]]:
    """bench/fire_burst.py's burst, without and with a slow endpoint on every organization,
    alternately (`runs` of each), so both see the same machine."""
    import fire_burst

    from accounts_app.models import Organization
    from webhooks_app import services

    queue = f"bench-wh-{uuid.uuid4().hex[:10]}"
    # The burst's own workers read these from the environment: their run events go to this queue.
    os.environ.update(WEBHOOK_QUEUE=queue, WEBHOOK_ALLOW_PRIVATE_TARGETS="1", WEBHOOK_TIMEOUT_SECONDS=str(delay + 5),
                      WEBHOOK_DELIVERY_LEASE_SECONDS=str(delay * 4 + 30), WEBHOOK_SUBSCRIPTION_CACHE_SECONDS="1")
    from django.conf import settings

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    fire_burst.seed(count)
    results: dict[str, list[dict]] = {"without": [], "with": []}
    for label in [label for _ in range(runs) for label in ("without", "with")]:
        _clear_webhooks()
        receiver = worker = None
        try:
            if label == "with":
                receiver = Receiver(delay=delay)
                worker = Worker(queue, 8, common.bench_env())
                for organization in Organization.objects.filter(name__startswith="bench-org-"):
                    services.webhook_endpoint_create(organization=organization, workspace=None, url=receiver.url,
                                                     enabled_events=list(RUN_EVENTS))
            burst = fire_burst.one_burst(count, workers, "prefork", 10.0, 300.0)
        finally:
            seen = receiver.stop() if receiver else []
            if worker:
                worker.stop()
        from webhooks_app.models import WebhookEvent

        results[label].append({
            "recorded": burst.recorded, "misses": burst.misses, "duplicates": burst.duplicates,
            "p50": common.percentile(burst.lateness, 50), "p99": common.percentile(burst.lateness, 99),
            "max": max(burst.lateness, default=float("nan")), "last": burst.last_s,
            "events": WebhookEvent.objects.count(), "arrived": receiver.arrived.value if receiver else 0,
            "answered": len(seen),
        })
        print(f"  burst {label} a {delay:g}-s endpoint: lateness p50 {results[label][-1]['p50']:.3f} s, "
              f"p99 {results[label][-1]['p99']:.3f} s, {burst.recorded} runs, {burst.misses} missed, "
              f"{burst.duplicates} duplicates", file=sys.stderr, flush=True)
    return results


# --- main ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-transaction", type=int, default=100)
    parser.add_argument("--threads", type=int, default=8, help="threads of each webhooks worker")
    parser.add_argument("--workers", type=int, default=1, help="webhooks worker processes")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every delivery")
    parser.add_argument("--fire-burst", type=int, default=1000, help="deployments in the burst comparison (0: skip)")
    parser.add_argument("--fire-burst-workers", type=int, default=2)
    parser.add_argument("--fire-burst-runs", type=int, default=2, help="bursts of each kind, alternately")
    parser.add_argument("--slow-seconds", type=float, default=30.0, help="how long the slow endpoint takes to answer")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)

    common.configure(WEBHOOK_SUBSCRIPTION_CACHE_SECONDS=0, WEBHOOK_ALLOW_PRIVATE_TARGETS=1)
    started = common.stamp()
    machine = common.machine()
    runs = []
    for index in range(args.runs):
        result = throughput_run(args.events, args.per_transaction, args.threads, args.timeout, args.workers)
        runs.append(result)
        print(f"  run {index + 1}: {result['rate']:.0f} delivered/s, {result['received']}/{result['events']} received, "
              f"{result['duplicates']} duplicates, latency p50 {result['p50']:.2f} s p99 {result['p99']:.2f} s, "
              f"CPU s: worker {result['cpu_worker']:.1f}, PostgreSQL {result['cpu_postgres']:.1f}, recording "
              f"{result['cpu_recorder']:.1f}", file=sys.stderr, flush=True)
    rate = common.median(r["rate"] for r in runs)
    complete = all(r["received"] == r["events"] for r in runs)
    met = bool(runs) and complete and rate >= TARGET_PER_SECOND
    burst = (fire_burst_pair(args.fire_burst, args.fire_burst_workers, args.slow_seconds, args.fire_burst_runs)
             if args.fire_burst else {})
    p99 = {label: common.median(b["p99"] for b in bursts) for label, bursts in burst.items()}

    parts = []
    if runs:
        parts.append(f"{rate:.0f} events/s delivered (median of {len(runs)} × {args.events:,}; target ≥ "
                     f"{TARGET_PER_SECOND}: {'met' if met else 'missed'})")
    if burst:
        parts.append(f"{args.fire_burst:,}-fire burst p99 lateness (median) {p99['without']:.2f} s without, "
                     f"{p99['with']:.2f} s with a {args.slow_seconds:g}-s endpoint")
    summary = "webhook_bench: " + "; ".join(parts)
    print(summary, flush=True)
    if not args.no_write:
        lines = [f"## webhook_bench — {started}", "", f"{machine}."]
        if runs:
            lines[-1] += (f" Receiver: asyncio on 127.0.0.1 in a process of its own, keep-alive; {args.workers} "
                          f"webhooks worker process(es) (`-P threads -c {args.threads}`); {args.per_transaction} "
                          "events per `events_record` transaction.")
            lines += ["", "| run | delivered/s | received | duplicates | latency p50 | latency p99 | CPU ms per event: "
                      "worker, PostgreSQL, recording | load |", "|---|---|---|---|---|---|---|---|"]
        for index, r in enumerate(runs, 1):
            per = 1000 / r["events"]
            lines.append(f"| {index} | {r['rate']:.0f} | {r['received']:,}/{r['events']:,} | {r['duplicates']} | "
                         f"{r['p50']:.2f} s | {r['p99']:.2f} s | {r['cpu_worker'] * per:.2f}, "
                         f"{r['cpu_postgres'] * per:.2f}, {r['cpu_recorder'] * per:.2f} | "
                         f"{r['load'][0][0]:.2f} → {r['load'][1][0]:.2f} |")
        if runs:
            lines += ["", f"Median: **{rate:.0f} events/s** (target ≥ {TARGET_PER_SECOND}: "
                          f"{'met' if met else 'missed'})."]
        if burst:
            lines += [
                "", f"Fire burst of {args.fire_burst:,} deployments (jitter 10 s, {args.fire_burst_workers} workers), "
                f"without and with an endpoint per organization subscribed to `deployment_run.*` that answers after "
                f"{args.slow_seconds:g} s:", "",
                "| burst | endpoint | runs | misses | duplicates | lateness p50 | p99 | max | last run | run events "
                "| requests at the endpoint (answered) |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for index in range(args.fire_burst_runs):
                for label in ("without", "with"):
                    b = burst[label][index]
                    lines.append(f"| {index + 1} | {label} | {b['recorded']:,} | {b['misses']} | {b['duplicates']} | "
                                 f"{b['p50']:.3f} s | {b['p99']:.3f} s | {b['max']:.3f} s | {b['last']:.1f} s | "
                                 f"{b['events']:,} | {b['arrived']} ({b['answered']}) |")
            lines += ["", f"Median p99 lateness: {p99['without']:.3f} s without, {p99['with']:.3f} s with the "
                          f"{args.slow_seconds:g}-s endpoint."]
        common.append_report(lines)
    return 0 if met or not runs else 2


if __name__ == "__main__":
    sys.exit(main())

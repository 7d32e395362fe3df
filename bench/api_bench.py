"""Deployments API under gunicorn (2 workers) on PostgreSQL, against a bare DRF ceiling.

Usage (from the repository root; PostgreSQL on 127.0.0.1)::

    .venv/bin/python bench/api_bench.py [--runs 5] [--seconds 4] [--no-write]

Set-up: one organization (its scheduled-deployment limit raised, so creates never hit it), an API
key, an agent, an environment and 1,000 scheduled deployments (bulk_create). gunicorn serves the product with
DJANGO_SETTINGS_MODULE=bench.api_settings, whose urlconf (bench/api_urls.py) is the product's plus
GET /bench/ceiling: a DRF view that returns a constant, without authentication or database, behind
the same middleware — the most a request can cost less than.

For each operation — create (POST /v1/deployments, with a cron schedule), retrieve (GET
/v1/deployments/{id}), list (GET /v1/deployments?limit=100), update (POST /v1/deployments/{id}, a
schedule change) — and the ceiling: latency p50/p99 with one client (requests one after another)
and requests/s with 4 concurrent clients (2 per gunicorn worker), each phase `--seconds` long,
medians of `--runs` runs. Clients are threads of this process, one new connection per request
(gunicorn's sync workers close it anyway).

SQL queries per request are counted in-process (django.test.utils.CaptureQueriesContext around
the same requests through DRF's test client); list is counted at limit 10 and 100 and must not
grow with the page size.

Prints one summary line and appends a dated section to docs/benchmarks.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

BETA = "managed-agents-2026-04-01"
SEED = 1_000
TARGETS = {"create_p50_ms": 15.0, "list_p50_ms": 30.0, "retrieve_vs_ceiling": 0.5}
SCHEDULES = [("0 9 * * 1-5", "America/New_York"), ("*/15 * * * *", "UTC")]
LOG = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/sd-bench-logs")) / "api-gunicorn.log"


def seed():
    import random

    from django.utils import timezone

    from accounts_app.services import api_key_create, default_workspace, organization_get_or_create
    from deployments_app import schedule
    from deployments_app.models import Deployment
    from tests.factories import USER_MESSAGE, make_agent, make_environment

    common.truncate("deployments_app_deployment")

    class Tenant:
        organization = organization_get_or_create(name="bench-api")
        workspace = default_workspace(organization)

    Tenant.organization.scheduled_deployment_limit = 10**9
    Tenant.organization.save(update_fields=["scheduled_deployment_limit"])
    _, key = api_key_create(organization=Tenant.organization, name="api bench")
    agent = make_agent(Tenant, name="api bench agent")
    environment = make_environment(Tenant, name="api bench env")
    expression, tz = SCHEDULES[0]
    next_fire_at = schedule.next_fires(expression, tz, timezone.now(), 1)[0]
    Deployment.objects.bulk_create(
        [
            Deployment(
                organization=Tenant.organization, workspace=Tenant.workspace, name=f"seeded {i}",
                agent_id=agent.id, agent_version=1, environment_id=environment.id, initial_events=[USER_MESSAGE],
                metadata={"team": "bench", "index": str(i)}, schedule_expression=expression, schedule_timezone=tz,
                next_fire_at=next_fire_at, jitter_fraction=random.random(),
            )
            for i in range(SEED)
        ],
        batch_size=1000,
    )
    ids = list(Deployment.objects.filter(organization=Tenant.organization).values_list("pk", flat=True))
    # Fresh planner statistics, as the other benchmarks take and as autovacuum keeps in service:
    # with those of the truncated table, PostgreSQL may read a deployment by id through the
    # workspace index and filter all 1,000 rows of the workspace.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE deployments_app_deployment")
    create_body = {
        "name": "api bench",
        "agent": agent.id,
        "environment_id": environment.id,
        "initial_events": [USER_MESSAGE],
        "metadata": {"team": "bench"},
        "schedule": {"type": "cron", "expression": SCHEDULES[0][0], "timezone": SCHEDULES[0][1]},
    }
    return key, ids, create_body


def headers(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-beta": BETA, "anthropic-version": "2023-06-01",
            "content-type": "application/json"}


class Operation:
    """A named request factory: request(i) -> (method, path, body bytes or None)."""

    def __init__(self, name, request, expect=200):
        self.name, self.request, self.expect = name, request, expect


def operations(ids, create_body) -> list[Operation]:
    update_bodies = [
        json.dumps({"schedule": {"type": "cron", "expression": e, "timezone": tz}}).encode() for e, tz in SCHEDULES
    ]
    create = json.dumps(create_body).encode()
    return [
        Operation("create", lambda i: ("POST", "/v1/deployments", create)),
        Operation("retrieve", lambda i: ("GET", f"/v1/deployments/{ids[i % len(ids)]}", None)),
        # Right after retrieve, so each run compares the two under the same background load.
        Operation("ceiling (bare DRF)", lambda i: ("GET", "/bench/ceiling", None)),
        Operation("list (limit 100)", lambda i: ("GET", "/v1/deployments?limit=100", None)),
        # Each request updates another deployment, so concurrent clients never wait on one row lock.
        Operation("update", lambda i: ("POST", f"/v1/deployments/{ids[(i * 7) % len(ids)]}", update_bodies[i % 2])),
    ]


def drive(port: int, op: Operation, hdrs: dict, clients: int, seconds: float, offset: int) -> tuple[list[float], float, int]:
    """Each client sends requests back to back for `seconds`. (latencies ms, wall s, errors)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = [offset]
    stop_at = time.perf_counter() + seconds

    def client():
        mine = []
        while time.perf_counter() < stop_at:
            with lock:
                counter[0] += 1
                index = counter[0]
            method, path, body = op.request(index)
            start = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=hdrs)
                response = conn.getresponse()
                response.read()
                ok = response.status == op.expect
            except OSError:
                ok = False
            finally:
                conn.close()
            mine.append((time.perf_counter() - start) * 1000)
            if not ok:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, errors[0]


def count_queries(key, ids, create_body) -> dict[str, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient(HTTP_HOST="127.0.0.1")  # an allowed host: DEBUG is off
    client.credentials(HTTP_X_API_KEY=key, HTTP_ANTHROPIC_BETA=BETA, HTTP_ANTHROPIC_VERSION="2023-06-01")
    client.get(f"/v1/deployments/{ids[0]}")  # warm: content types, caches
    calls = {
        "create": lambda: client.post("/v1/deployments", create_body, format="json"),
        "retrieve": lambda: client.get(f"/v1/deployments/{ids[1]}"),
        "list (limit 10)": lambda: client.get("/v1/deployments?limit=10"),
        "list (limit 100)": lambda: client.get("/v1/deployments?limit=100"),
        "update": lambda: client.post(f"/v1/deployments/{ids[2]}", {"schedule": {
            "type": "cron", "expression": SCHEDULES[1][0], "timezone": SCHEDULES[1][1]}}, format="json"),
    }
    out = {}
    for name, call in calls.items():
        with CaptureQueriesContext(connection) as captured:
            response = call()
        assert response.status_code == 200, (name, response.status_code, response.content[:300])
        out[name] = len(captured.captured_queries)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(port: int) -> subprocess.Popen:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    env = common.bench_env(DJANGO_SETTINGS_MODULE="bench.api_settings", LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application", "--workers", "2",
         "--bind", f"127.0.0.1:{port}", "--chdir", str(common.ROOT), "--pythonpath", str(common.ROOT),
         "--access-logfile", "-" if os.environ.get("BENCH_ACCESS_LOG") else "/dev/null", "--log-level", "warning"],
        cwd=common.ROOT, env=env, stdout=LOG.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/bench/ceiling")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited; see {LOG}")
    raise TimeoutError(f"gunicorn did not answer; see {LOG}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured phase")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the throughput phase")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)

    common.configure(LOG_LEVEL="WARNING")
    load_start = common.loadavg()
    key, ids, create_body = seed()
    queries = count_queries(key, ids, create_body)
    ops = operations(ids, create_body)
    hdrs = headers(key)
    port = free_port()
    proc = start_gunicorn(port)
    results: dict[str, dict[str, list[float]]] = {op.name: {"p50": [], "p99": [], "rps": [], "cp50": [], "cp99": []}
                                                  for op in ops}
    errors = 0
    try:
        for op in ops:  # warm every worker and code path
            _, _, errs = drive(port, op, hdrs, args.clients, 0.5, 10**6)
            errors += errs
        for run in range(args.runs):
            for op in ops:
                lat, _, errs1 = drive(port, op, hdrs, 1, args.seconds, run * 10**5)
                clat, wall, errs2 = drive(port, op, hdrs, args.clients, args.seconds, run * 10**5 + 5 * 10**4)
                errors += errs1 + errs2
                r = results[op.name]
                r["p50"].append(common.percentile(lat, 50))
                r["p99"].append(common.percentile(lat, 99))
                r["rps"].append(len(clat) / wall)
                r["cp50"].append(common.percentile(clat, 50))
                r["cp99"].append(common.percentile(clat, 99))
            print(f"  run {run + 1}: " + ", ".join(
                f"{name} {r['p50'][-1]:.1f}ms/{r['rps'][-1]:.0f}rps" for name, r in results.items()),
                file=sys.stderr, flush=True)
    finally:
        stop(proc)
    load_end = common.loadavg()

    med = {name: {k: common.median(v) for k, v in r.items()} for name, r in results.items()}
    # The ratio of each run (retrieve and the ceiling measured back to back), then its median: a
    # ratio of two medians taken minutes apart moves with whatever else the machine does.
    ratio = common.median(
        retrieve / ceiling for retrieve, ceiling in zip(results["retrieve"]["rps"], results["ceiling (bare DRF)"]["rps"])
    )
    met = {
        f"create p50 ≤ {TARGETS['create_p50_ms']:g} ms": med["create"]["p50"] <= TARGETS["create_p50_ms"],
        f"list(100) p50 ≤ {TARGETS['list_p50_ms']:g} ms": med["list (limit 100)"]["p50"] <= TARGETS["list_p50_ms"],
        "retrieve ≥ 50% of the ceiling's requests/s": ratio >= TARGETS["retrieve_vs_ceiling"],
        "list queries constant in page size": queries["list (limit 10)"] == queries["list (limit 100)"],
        "no request failed": errors == 0,
    }
    print(
        "api_bench: "
        + " | ".join(f"{name} p50 {m['p50']:.1f}ms p99 {m['p99']:.1f}ms {m['rps']:.0f} rps"
                     for name, m in med.items())
        + f" | retrieve = {ratio * 100:.0f}% of ceiling | queries " + ", ".join(f"{k} {v}" for k, v in queries.items())
        + " | targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items())
    )
    if not args.no_write:
        lines = [
            f"## api_bench — {common.stamp()}",
            "",
            f"Machine: {common.machine()}; {common.load_note(load_start, load_end)}. gunicorn 2 sync workers, "
            f"PostgreSQL, {SEED:,} deployments in the organization; latency with 1 client, requests/s (and its "
            f"latency) with {args.clients} concurrent clients; {args.seconds:g} s per phase, medians of {args.runs} "
            "runs; the client runs on the same 2 cores.",
            "",
            "| operation | p50 (1 client) | p99 (1 client) | requests/s | p50 / p99 at "
            f"{args.clients} clients | SQL queries |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        query_for = {"create": queries["create"], "retrieve": queries["retrieve"],
                     "list (limit 100)": f"{queries['list (limit 100)']} (limit 10: {queries['list (limit 10)']})",
                     "update": queries["update"], "ceiling (bare DRF)": 0}
        for name, m in med.items():
            lines.append(f"| {name} | {m['p50']:.1f} ms | {m['p99']:.1f} ms | {m['rps']:.0f} | "
                         f"{m['cp50']:.1f} / {m['cp99']:.1f} ms | {query_for[name]} |")
        lines += [
            "",
            f"Retrieve serves {ratio * 100:.0f}% of the ceiling's requests/s (median of the runs' ratios). Failed requests: {errors}.",
            "",
            "Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items()) + ".",
        ]
        common.append_report(lines)
    return 0 if all(met.values()) else 2


if __name__ == "__main__":
    sys.exit(main())

"""Shared set-up for the benchmarks that need PostgreSQL (and Redis).

Every benchmark uses its own database and Redis DB number, never the ones tests use:

- BENCH_DATABASE_URL, else DATABASE_URL's server with the database `bench_sd`
  (created and migrated here when missing), else postgres://postgres@127.0.0.1:5432/bench_sd;
- BENCH_BROKER_URL, else CELERY_BROKER_URL's server with DB 14, else redis://127.0.0.1:6379/14;
- a queue name of its own per run (CELERY_QUEUE), so a stray worker elsewhere never takes a message.

`configure()` must run before anything imports Django settings.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BENCH_DB_NAME = "bench_sd"
BENCH_REDIS_DB = 14
UTC = timezone.utc

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def bench_database_url() -> str:
    if os.environ.get("BENCH_DATABASE_URL"):
        return os.environ["BENCH_DATABASE_URL"]
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        base = "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + BENCH_DB_NAME, parts.query, parts.fragment))


def bench_broker_url() -> str:
    if os.environ.get("BENCH_BROKER_URL"):
        return os.environ["BENCH_BROKER_URL"]
    base = os.environ.get("CELERY_BROKER_URL", "")
    if not base.startswith("redis"):
        base = "redis://127.0.0.1:6379/0"
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{BENCH_REDIS_DB}", parts.query, parts.fragment))


def bench_env(**overrides) -> dict[str, str]:
    """The environment every bench process (this one, workers, scheduler, gunicorn) runs with."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": bench_database_url(),
            "CELERY_BROKER_URL": bench_broker_url(),
            "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-only-secret",
            "DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("CACHE_URL", None)
    env.pop("REDIS_URL", None)
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def ensure_database(url: str) -> None:
    """CREATE DATABASE when missing (connecting to the server's `postgres` database)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit((parts.scheme.replace("postgres", "postgresql", 1) if parts.scheme == "postgres" else parts.scheme,
                        parts.netloc, "/postgres", parts.query, parts.fragment))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def configure(**overrides) -> None:
    """Point this process at the bench database and broker, create/migrate the database, set up Django."""
    os.environ.update(bench_env(**overrides))
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def truncate(*tables: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE " + ", ".join(tables) + " CASCADE")


def loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as f:
        one, five, fifteen = f.read().split()[:3]
    return float(one), float(five), float(fifteen)


def machine() -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    ram = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    pg = "?"
    try:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg = cursor.fetchone()[0].split()[0]
    except Exception:  # noqa: BLE001 — machine() also runs before Django is set up
        pass
    return f"{cores} cores, {ram} RAM, Python {platform.python_version()}, PostgreSQL {pg}"


def load_note(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    return f"1-min load average {before[0]:.2f} at start, {after[0]:.2f} at end"


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def median(values):
    values = list(values)
    return statistics.median(values) if values else float("nan")


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def append_report(lines: list[str]) -> None:
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    new_file = not DOCS.exists()
    with DOCS.open("a", encoding="utf-8") as f:
        if new_file:
            f.write("# Benchmarks\n")
        f.write("\n" + "\n".join(lines) + "\n")


def proc_cpu_seconds(pids) -> float:
    """user + system CPU seconds of live processes (from /proc; 0 for any that is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def group_pids(pgid: int) -> list[int]:
    """PIDs of every live process in one process group."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return pids

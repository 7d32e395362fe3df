"""Benchmark deployments_app.schedule.next_fires and dst_notes.

Usage (from the repository root)::

    .venv/bin/python bench/schedule_bench.py [--no-write] [--repeats N]

Prints one summary line and appends a dated section to docs/benchmarks.md
(unless --no-write).  Each timing calls next_fires(n=5) for a set of `after`
instants spread over 2026, so no per-instant result can be reused; the
module's own caches (parsed expressions, zones, per-year transition tables)
are warmed first, as they would be in a running server.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import timeit
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deployments_app.schedule import dst_notes, next_fires  # noqa: E402

UTC = timezone.utc
TARGET_US = 300.0
CASES = [
    ("* * * * *", "America/New_York"),
    ("*/15 * * * *", "America/New_York"),
    ("0 9 * * 1-5", "America/New_York"),
    ("30 2 * * *", "America/New_York"),
    ("0 0 29 2 *", "UTC"),
]
TARGET_CASES = {"* * * * *", "*/15 * * * *", "0 9 * * 1-5", "30 2 * * *"}


def instants(count: int) -> list[datetime]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=365) / count
    # odd minutes/seconds so instants don't line up with fire times
    return [start + step * i + timedelta(minutes=7 * i % 60, seconds=i % 60) for i in range(count)]


def bench_next_fires(expression: str, tz: str, afters: list[datetime], repeats: int) -> list[float]:
    for after in afters:  # warm the module's caches (parse, zone, transition tables)
        next_fires(expression, tz, after, 5)

    def run():
        for after in afters:
            next_fires(expression, tz, after, 5)

    times = timeit.repeat(run, number=1, repeat=repeats)
    return [t / len(afters) * 1e6 for t in times]


def bench_dst_notes(repeats: int) -> dict[str, list[float]]:
    out = {}
    for expression in ("* * * * *", "30 2 * * *"):
        afters = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=37 * i) for i in range(10)]
        for after in afters:
            dst_notes(expression, "America/New_York", after)

        def run():
            for after in afters:
                dst_notes(expression, "America/New_York", after, days=366)

        times = timeit.repeat(run, number=1, repeat=repeats)
        out[expression] = [t / len(afters) * 1e3 for t in times]
    return out


def machine() -> str:
    cores = os.cpu_count() or 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    load = "?"
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
    except OSError:
        pass
    return f"{cores} cores, {ram} RAM, Python {platform.python_version()}, 1-min load average {load}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--instants", type=int, default=200)
    args = parser.parse_args(argv)

    afters = instants(args.instants)
    results = {}
    for expression, tz in CASES:
        results[(expression, tz)] = bench_next_fires(expression, tz, afters, args.repeats)
    notes = bench_dst_notes(args.repeats)

    medians = {key: statistics.median(v) for key, v in results.items()}
    met = all(medians[(e, tz)] <= TARGET_US for e, tz in CASES if e in TARGET_CASES)
    parts = [f"{e} {medians[(e, tz)]:.0f}µs" for e, tz in CASES]
    parts.append(f"dst_notes(* * * * *, 1y) {statistics.median(notes['* * * * *']):.2f}ms")
    print(
        "schedule_bench: " + " | ".join(parts)
        + f" | target ≤{TARGET_US:.0f}µs: {'met' if met else 'NOT met'}"
    )

    if not args.no_write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            "",
            f"## schedule_bench — {stamp}",
            "",
            f"Machine: {machine()}. `next_fires(..., n=5)`, {len(afters)} `after` instants "
            f"spread over 2026, {args.repeats} repeats after warm-up; µs per call.",
            "",
            "| expression | time zone | median µs | min µs | max µs |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for (expression, tz), values in results.items():
            lines.append(
                f"| `{expression}` | {tz} | {statistics.median(values):.1f} | "
                f"{min(values):.1f} | {max(values):.1f} |"
            )
        for expression, values in notes.items():
            lines.append(
                f"| `dst_notes` `{expression}`, 366 days (ms) | America/New_York | "
                f"{statistics.median(values):.2f} ms | {min(values):.2f} ms | {max(values):.2f} ms |"
            )
        lines += ["", f"Target ≤{TARGET_US:.0f}µs median for the four New York cases: "
                  f"{'met' if met else 'NOT met'}.", ""]
        path = ROOT / "docs" / "benchmarks.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not path.exists()
        with path.open("a", encoding="utf-8") as f:
            if new_file:
                f.write("# Benchmarks\n")
            f.write("\n".join(lines))
    return 0 if met else 2


if __name__ == "__main__":
    sys.exit(main())

"""How many session creates per second the stub upstream (upstream_sim.stub) can answer.

Usage (from the repository root; nothing else needed)::

    .venv/bin/python bench/upstream_stub_ceiling.py [--latency 0.1] [--clients 256] [--duration 10]

The stub runs in a process of its own (`python -m upstream_sim.stub --latency L`); this process
drives it with `--clients` keep-alive connections on loopback, each sending `POST /v1/sessions`
(a fresh Idempotency-Key every time, the body the anthropic gateway sends) as soon as its previous
answer is in. Answers in the first `--warmup` seconds are not counted. With latency L and C
clients the rate cannot exceed C / L, so the summary also gives the stub's CPU time per create
(from /proc) and the rate that CPU cost alone would allow on one core: the stub's own ceiling.

Prints one summary line. Exit status 0, or 1 if any answer was not a 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from upstream_sim import spawn_stub  # noqa: E402

BODY = json.dumps(
    {
        "agent": {"type": "agent", "id": "agent_01BENCHAGENT", "version": 1},
        "environment_id": "env_01BENCHENV",
        "initial_events": [{"type": "user.message", "content": [{"type": "text", "text": "Run the weekly compliance scan."}]}],
        "resources": [],
        "vault_ids": ["vlt_01BENCHVAULT"],
        "metadata": {"deployment": "depl_01BENCH"},
        "title": "Weekly compliance scan",
    },
    separators=(",", ":"),
).encode()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _client(index: int, host: str, port: int, start: float, count_from: float, until: float, out: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        "POST /v1/sessions HTTP/1.1\r\nHost: {host}:{port}\r\nx-api-key: sk-bench\r\n"
        "anthropic-beta: managed-agents-2026-04-01\r\nanthropic-version: 2023-06-01\r\n"
        "Content-Type: application/json\r\nContent-Length: {length}\r\nIdempotency-Key: bench-{index}-{{n}}\r\n\r\n"
    ).format(host=host, port=port, length=len(BODY), index=index)
    n = 0
    try:
        while time.monotonic() < until:
            n += 1
            sent = time.monotonic()
            writer.write(head.format(n=n).encode() + BODY)
            response_head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in response_head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            done = time.monotonic()
            if done < count_from:
                continue
            if response_head.startswith(b"HTTP/1.1 200 ") and body.startswith(b'{"type":"session"'):
                out["ok"] += 1
                out["latencies"].append(done - sent)
            else:
                out["errors"] += 1
    finally:
        writer.close()


async def _drive(url: str, clients: int, warmup: float, duration: float) -> dict:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    start = time.monotonic()
    count_from = start + warmup
    until = count_from + duration
    out = {"ok": 0, "errors": 0, "latencies": []}
    await asyncio.wait_for(
        asyncio.gather(*(_client(i, host, int(port), start, count_from, until, out) for i in range(clients))),
        timeout=warmup + duration + 60,
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.1, help="the stub's answer latency, seconds")
    parser.add_argument("--clients", type=int, default=256, help="concurrent keep-alive connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds counted")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted, first")
    args = parser.parse_args()
    if not (0 < args.clients <= 20000 and 0 < args.duration <= 600 and 0 <= args.warmup <= 60 and 0 <= args.latency <= 10):
        parser.error("clients 1..20000, duration 0..600 s, warmup 0..60 s, latency 0..10 s")

    stub = spawn_stub(latency=args.latency)
    try:
        pid = stub.process.pid
        cpu_before = None

        async def run() -> dict:
            nonlocal cpu_before
            loop_task = asyncio.ensure_future(_drive(stub.url, args.clients, args.warmup, args.duration))
            await asyncio.sleep(args.warmup)
            cpu_before = _cpu_seconds(pid), stub.stats()["requests_total"]
            return await loop_task

        out = asyncio.run(run())
        stats = stub.stats()
        cpu_after = _cpu_seconds(pid), stats["requests_total"]
    finally:
        stub.stop()

    rate = out["ok"] / args.duration
    cpu_per_request = (cpu_after[0] - cpu_before[0]) / max(1, cpu_after[1] - cpu_before[1])
    latencies = sorted(out["latencies"]) or [0.0]
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    bound = args.clients / args.latency if args.latency else float("inf")
    print(
        f"upstream stub ceiling: {rate:,.0f} session creates/s with {args.clients} keep-alive clients and "
        f"{args.latency:g} s latency (bound {bound:,.0f}/s) over {args.duration:g} s; p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
        f"{out['errors']} errors; stub max in flight {stats['max_in_flight']}; stub CPU {cpu_per_request * 1e6:.0f} µs "
        f"per create, so about {1 / cpu_per_request if cpu_per_request else float('inf'):,.0f} creates/s on one core "
        f"({os.cpu_count()} cores, 1-min load {os.getloadavg()[0]:.2f} at the end)"
    )
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

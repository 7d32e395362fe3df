"""Latency and fault proxy: an HTTP/1.1 reverse proxy in front of a Managed Agents platform.

    python -m upstream_sim.proxy --listen 127.0.0.1:0 --target http://127.0.0.1:8001 \\
        --latency 0.1 --jitter 0.02 --seed 7 --faults '{"rules": [{"path": "/v1/sessions", "fault": "rate_limit", "burst": 3}]}'

The first stdout line is `listening on http://HOST:PORT`. Each request waits `latency` plus a
uniform 0..`jitter` seconds, then is either answered by a fault or forwarded over a pool of
keep-alive connections to the target. Request bodies (Content-Length or chunked) are read whole and
forwarded with a Content-Length; responses are relayed as they arrive — a Content-Length body
piece by piece, a chunked or close-delimited one (an SSE stream) chunk by chunk — so a stream is
never held back until it ends. Hop-by-hop headers (and those named in `Connection`) are dropped on
both legs; `Host` is the target's.

Faults are rules, tried in order; the first one that selects a request decides its fault:

    {"method": "POST",                 # optional, any method when absent
     "path": "/v1/sessions",           # optional: the exact path, its template (/v1/agents/{id}) or a glob
     "fault": "rate_limit",            # or "status", "status:502", "reset", "hang", "answer_lost", or
                                       # {"kind": "status", "status": 529, "message": "…", "retry_after": 2}
     "plan": ["answer_lost", "pass"],  # instead of "fault": per Idempotency-Key, the fault of its
                                       # 1st, 2nd, … call through this rule; later calls pass
     "probability": 0.2,               # optional: a seeded coin per selected request
     "key_hash": {"percent": 30},      # optional: only keys with key_selected(key, 30) (needs a key)
     "burst": 5}                       # optional: only the next 5 requests the rule selects

- `rate_limit`: 429 with `retry-after` and a `rate_limit_error` envelope; nothing forwarded.
- `status`: 500/502/503/529… with an `api_error` (500, 502) or `overloaded_error` (503, 529) envelope; nothing forwarded.
- `reset`: the connection is reset (RST) before any answer; nothing forwarded.
- `hang`: no answer until the client gives up (or `max_seconds`, default `max_hang`, 120 s).
- `answer_lost`: forwarded, the upstream's whole answer read, then the client connection reset.

Control API on the same port, never forwarded: `GET|POST /__proxy__/config` (fields `latency`,
`jitter`, `seed`, `max_hang`, `rules`; a POST changes only the fields it sends and restarts the
rules it replaces), `GET /__proxy__/stats` (`?keys=0` leaves out the per-key maps),
`POST /__proxy__/reset` (counters to zero, every rule's burst and plans from the start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import itertools
import json
import logging
import math
import random
import socket
import struct
import sys
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from upstream_sim._common import (
    LOOPBACK,
    ProcessHandle,
    error_body,
    key_selected,
    parse_listen,
    parse_target,
    path_template,
    reason,
    run_in_thread,
    serve_main,
    spawn,
)

logger = logging.getLogger("upstream_sim.proxy")

CONTROL_PREFIX = "/__proxy__"
FAULT_KINDS = ("rate_limit", "status", "reset", "hang", "answer_lost")
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
     "proxy-authenticate", "proxy-authorization"}
)
MAX_HEAD = 1 << 20
MAX_BODY = 64 << 20
MAX_REQUESTS_PER_CONNECTION = 1_000_000
IDLE_TIMEOUT = 75.0
UPSTREAM_TIMEOUT = 120.0
CONNECT_TIMEOUT = 10.0
MAX_IDLE_UPSTREAM = 1024
MAX_HANG_LIMIT = 600.0
PIECE = 65536


# --- configuration -------------------------------------------------------------------------------


class ConfigError(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Fault:
    kind: str
    status: int = 0
    error_type: str = ""
    message: str = ""
    retry_after: str | None = None
    max_seconds: float | None = None

    def describe(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "status":
            out.update(status=self.status, error_type=self.error_type)
        if self.message:
            out["message"] = self.message
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.max_seconds is not None:
            out["max_seconds"] = self.max_seconds
        return out


_FAULT_FIELDS = {
    "rate_limit": {"message", "retry_after"},
    "status": {"status", "error_type", "message", "retry_after"},
    "reset": set(),
    "hang": {"max_seconds"},
    "answer_lost": set(),
}
_ERROR_TYPES = ("api_error", "overloaded_error")


def _number(value: Any, field_name: str, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(field_name, "must be a number")
    if not low <= value <= high:
        raise ConfigError(field_name, f"must be between {low:g} and {high:g}")
    return float(value)


def _integer(value: Any, field_name: str, *, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field_name, "must be an integer")
    if not low <= value <= high:
        raise ConfigError(field_name, f"must be between {low} and {high}")
    return value


def _retry_after(value: Any, field_name: str) -> str:
    seconds = _number(float(value) if isinstance(value, str) and _is_float(value) else value, field_name, low=0, high=86400)
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_fault(value: Any, field_name: str) -> Fault | None:
    """A fault from `"kind"`, `"kind:arg"` or `{"kind": …}`; None for "pass"."""
    if isinstance(value, str):
        kind, _, arg = value.partition(":")
        data: dict[str, Any] = {"kind": kind}
        if arg:
            arg_field = {"status": "status", "rate_limit": "retry_after", "hang": "max_seconds"}.get(kind)
            if arg_field is None:
                raise ConfigError(field_name, f"{kind!r} takes no argument after ':'")
            data[arg_field] = float(arg) if arg_field == "max_seconds" and _is_float(arg) else arg
    elif isinstance(value, dict):
        data = dict(value)
    else:
        raise ConfigError(field_name, "must be a fault name such as \"rate_limit\" or an object with a \"kind\"")
    kind = data.pop("kind", None)
    if kind == "pass" and not data:
        return None
    if kind not in FAULT_KINDS:
        kinds = ", ".join(FAULT_KINDS)
        raise ConfigError(f"{field_name}.kind", f"must be one of {kinds} (or \"pass\" in a plan), got {kind!r}")
    unknown = set(data) - _FAULT_FIELDS[kind]
    if unknown:
        raise ConfigError(f"{field_name}.{sorted(unknown)[0]}", f"is not a field of a {kind} fault")
    message = data.get("message", "")
    if not isinstance(message, str) or len(message) > 2000:
        raise ConfigError(f"{field_name}.message", "must be a string of at most 2000 characters")
    retry_after = None
    if "retry_after" in data:
        retry_after = _retry_after(data["retry_after"], f"{field_name}.retry_after")
    if kind == "rate_limit":
        return Fault(kind, status=429, error_type="rate_limit_error", message=message, retry_after=retry_after or "1")
    if kind == "status":
        status = _integer(data.get("status", 503), f"{field_name}.status", low=500, high=599)
        error_type = data.get("error_type") or ("overloaded_error" if status in (503, 529) else "api_error")
        if error_type not in _ERROR_TYPES:
            raise ConfigError(f"{field_name}.error_type", f"must be one of {', '.join(_ERROR_TYPES)}")
        return Fault(kind, status=status, error_type=error_type, message=message, retry_after=retry_after)
    if kind == "hang":
        max_seconds = None
        if data.get("max_seconds") is not None:
            max_seconds = _number(data["max_seconds"], f"{field_name}.max_seconds", low=0, high=MAX_HANG_LIMIT)
        return Fault(kind, max_seconds=max_seconds)
    return Fault(kind)


_RULE_FIELDS = {"name", "method", "path", "fault", "plan", "probability", "key_hash", "burst"}


class Rule:
    def __init__(self, spec: Any, field_name: str):
        if not isinstance(spec, dict):
            raise ConfigError(field_name, "must be an object")
        unknown = set(spec) - _RULE_FIELDS
        if unknown:
            fields = ", ".join(sorted(_RULE_FIELDS))
            raise ConfigError(f"{field_name}.{sorted(unknown)[0]}", f"is not a rule field (fields: {fields})")
        self.name = spec.get("name")
        if self.name is not None and not isinstance(self.name, str):
            raise ConfigError(f"{field_name}.name", "must be a string")
        method = spec.get("method")
        if method is not None and (not isinstance(method, str) or not method.strip()):
            raise ConfigError(f"{field_name}.method", "must be an HTTP method such as \"POST\" (or \"*\")")
        self.method = None if method in (None, "*") else method.strip().upper()
        path = spec.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise ConfigError(f"{field_name}.path", "must be a path starting with \"/\" (exact, template or glob)")
        self.path = path
        self._glob = path is not None and any(c in path for c in "*?[")
        if ("fault" in spec) == ("plan" in spec):
            raise ConfigError(field_name, "needs exactly one of \"fault\" and \"plan\"")
        self.fault = parse_fault(spec["fault"], f"{field_name}.fault") if "fault" in spec else None
        if "fault" in spec and self.fault is None:
            raise ConfigError(f"{field_name}.fault", "\"pass\" is only meaningful inside a plan")
        self.plan: list[Fault | None] | None = None
        if "plan" in spec:
            plan = spec["plan"]
            if not isinstance(plan, list) or not 1 <= len(plan) <= 100:
                raise ConfigError(
                    f"{field_name}.plan", "must be a list of 1 to 100 faults (\"pass\" for a call that goes through)"
                )
            self.plan = [parse_fault(item, f"{field_name}.plan[{i}]") for i, item in enumerate(plan)]
        self.probability = None
        if spec.get("probability") is not None:
            self.probability = _number(spec["probability"], f"{field_name}.probability", low=0, high=1)
        self.key_percent = None
        self.key_salt = ""
        if spec.get("key_hash") is not None:
            key_hash = spec["key_hash"]
            if isinstance(key_hash, (int, float)) and not isinstance(key_hash, bool):
                key_hash = {"percent": key_hash}
            if not isinstance(key_hash, dict) or set(key_hash) - {"percent", "salt"} or "percent" not in key_hash:
                raise ConfigError(f"{field_name}.key_hash", "must be {\"percent\": P} with an optional \"salt\"")
            self.key_percent = _number(key_hash["percent"], f"{field_name}.key_hash.percent", low=0, high=100)
            self.key_salt = key_hash.get("salt", "")
            if not isinstance(self.key_salt, str):
                raise ConfigError(f"{field_name}.key_hash.salt", "must be a string")
        self.burst = None
        if spec.get("burst") is not None:
            self.burst = _integer(spec["burst"], f"{field_name}.burst", low=0, high=10**9)
        self.reset_state()

    def reset_state(self) -> None:
        self.remaining = self.burst
        self.hits = 0
        self.plan_calls: dict[str, int] = {}

    def _matches(self, method: str, path: str, template: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.path is None:
            return True
        if self._glob:
            return fnmatch.fnmatchcase(path, self.path) or fnmatch.fnmatchcase(template, self.path)
        return path == self.path or template == self.path

    def select(self, method: str, path: str, template: str, key: str | None, rng: random.Random) -> Fault | None:
        if self.remaining == 0 or not self._matches(method, path, template):
            return None
        if (self.plan is not None or self.key_percent is not None) and key is None:
            return None
        if self.key_percent is not None and not key_selected(key, self.key_percent, self.key_salt):
            return None
        if self.plan is not None:
            call = self.plan_calls.get(key, 0)
            self.plan_calls[key] = call + 1
            fault = self.plan[call] if call < len(self.plan) else None
            if fault is None:
                return None
        else:
            fault = self.fault
        if self.probability is not None and rng.random() >= self.probability:
            return None
        if self.remaining is not None:
            self.remaining -= 1
        self.hits += 1
        return fault

    def describe(self) -> dict:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        out["method"] = self.method
        out["path"] = self.path
        if self.plan is not None:
            out["plan"] = [f.describe() if f else "pass" for f in self.plan]
        else:
            out["fault"] = self.fault.describe()
        if self.probability is not None:
            out["probability"] = self.probability
        if self.key_percent is not None:
            out["key_hash"] = {"percent": self.key_percent, "salt": self.key_salt}
        if self.burst is not None:
            out["burst"] = self.burst
            out["remaining"] = self.remaining
        out["hits"] = self.hits
        return out


_CONFIG_FIELDS = ("latency", "jitter", "seed", "max_hang", "rules")


class ProxyConfig:
    def __init__(self):
        self.latency = 0.0
        self.jitter = 0.0
        self.seed: int | None = None
        self.max_hang = 120.0
        self.rules: list[Rule] = []
        self._seed_rngs()

    def _seed_rngs(self) -> None:
        # Two streams, so how many requests got jitter never changes which ones a probability hits.
        self.fault_rng = random.Random(self.seed)
        self.delay_rng = random.Random(None if self.seed is None else self.seed + 1)

    def update(self, data: Any) -> None:
        """Validate everything, then apply: a bad field changes nothing."""
        if isinstance(data, list):
            data = {"rules": data}
        if not isinstance(data, dict):
            raise ConfigError("config", "must be a JSON object (or a list of rules)")
        unknown = set(data) - set(_CONFIG_FIELDS)
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"is not a proxy setting (settings: {', '.join(_CONFIG_FIELDS)})")
        new: dict[str, Any] = {}
        if "latency" in data:
            new["latency"] = _number(data["latency"], "latency", low=0, high=600)
        if "jitter" in data:
            new["jitter"] = _number(data["jitter"], "jitter", low=0, high=600)
        if "max_hang" in data:
            new["max_hang"] = _number(data["max_hang"], "max_hang", low=0, high=MAX_HANG_LIMIT)
        if "seed" in data:
            seed = data["seed"]
            new["seed"] = None if seed is None else _integer(seed, "seed", low=-(2**63), high=2**63 - 1)
        if "rules" in data:
            rules = data["rules"]
            if rules is None:
                rules = []
            if not isinstance(rules, list) or len(rules) > 1000:
                raise ConfigError("rules", "must be a list of at most 1000 rules")
            new["rules"] = [Rule(spec, f"rules[{i}]") for i, spec in enumerate(rules)]
        for name, value in new.items():
            setattr(self, name, value)
        if "seed" in new:
            self._seed_rngs()

    def select(self, method: str, path: str, template: str, key: str | None) -> Fault | None:
        for rule in self.rules:
            fault = rule.select(method, path, template, key, self.fault_rng)
            if fault is not None:
                return fault
        return None

    def delay(self) -> float:
        return self.latency + (self.delay_rng.uniform(0, self.jitter) if self.jitter else 0.0)

    def reset_state(self) -> None:
        for rule in self.rules:
            rule.reset_state()

    def describe(self) -> dict:
        return {
            "latency": self.latency,
            "jitter": self.jitter,
            "seed": self.seed,
            "max_hang": self.max_hang,
            "rules": [rule.describe() for rule in self.rules],
        }


# --- counters ------------------------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.in_flight = 0
        self.client_connections_open = 0
        self.clear()

    def clear(self) -> None:
        self.requests_by_route: Counter[str] = Counter()
        self.forwarded_by_route: Counter[str] = Counter()
        self.faults_by_kind: Counter[str] = Counter()
        self.faults_by_route: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.calls_by_key: Counter[str] = Counter()
        self.forwarded_by_key: Counter[str] = Counter()
        self.faults_by_key: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.max_in_flight = self.in_flight
        self.upstream_errors: Counter[str] = Counter()
        self.upstream_connections_opened = 0
        self.upstream_retries = 0
        self.client_connections_opened = 0

    def snapshot(self, *, keys: bool = True) -> dict:
        out = {
            "requests_total": sum(self.requests_by_route.values()),
            "requests_by_route": dict(self.requests_by_route),
            "forwarded_total": sum(self.forwarded_by_route.values()),
            "forwarded_by_route": dict(self.forwarded_by_route),
            "faults_total": sum(self.faults_by_kind.values()),
            "faults_by_kind": dict(self.faults_by_kind),
            "faults_by_route": {route: dict(kinds) for route, kinds in self.faults_by_route.items()},
            "idempotency_keys": len(self.calls_by_key),
            "max_calls_per_key": max(self.calls_by_key.values(), default=0),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "upstream_connections_opened": self.upstream_connections_opened,
            "upstream_retries": self.upstream_retries,
            "upstream_errors": dict(self.upstream_errors),
            "client_connections_opened": self.client_connections_opened,
            "client_connections_open": self.client_connections_open,
        }
        if keys:
            out["calls_by_key"] = dict(self.calls_by_key)
            out["forwarded_by_key"] = dict(self.forwarded_by_key)
            out["faults_by_key"] = {key: dict(kinds) for key, kinds in self.faults_by_key.items()}
        return out


# --- HTTP plumbing -------------------------------------------------------------------------------


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class BadResponse(Exception):
    pass


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    body: bytes = b""
    fields: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.fields.get(name)


def _parse_header_lines(lines: list[str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    headers: list[tuple[str, str]] = []
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest(400, f"malformed header line {line[:80]!r}")
        value = value.strip()
        headers.append((name, value))
        lower = name.lower()
        fields[lower] = f"{fields[lower]}, {value}" if lower in fields else value
    return headers, fields


def _tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",") if token.strip()}


def parse_request_head(head: bytes) -> Request:
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, f"malformed request line {lines[0][:120]!r}")
    method, target, version = parts
    if target.startswith(("http://", "https://")):  # absolute form: keep the origin form only
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    if not target.startswith("/"):
        raise BadRequest(400, f"unsupported request target {target[:120]!r}")
    headers, fields = _parse_header_lines(lines[1:])
    connection = _tokens(fields.get("connection"))
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    path, _, query = target.partition("?")
    return Request(method, target, path, query, version, headers, keep_alive, fields=fields)


async def read_request_body(reader: asyncio.StreamReader, request: Request) -> bytes:
    transfer_encoding = request.header("transfer-encoding")
    if transfer_encoding is not None:
        if [t.strip().lower() for t in transfer_encoding.split(",")][-1] != "chunked":
            raise BadRequest(501, f"transfer-encoding {transfer_encoding!r} is not supported")
        return await read_chunked(reader, MAX_BODY)
    length = request.header("content-length")
    if length is None:
        return b""
    values = {v.strip() for v in length.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise BadRequest(400, f"invalid content-length {length[:40]!r}")
    size = int(values.pop())
    if size > MAX_BODY:
        raise BadRequest(413, f"request body of {size} bytes is over the proxy's limit of {MAX_BODY}")
    return await reader.readexactly(size) if size else b""


async def _chunk_size(reader: asyncio.StreamReader) -> int:
    line = await reader.readuntil(b"\r\n")
    text = line.split(b";", 1)[0].strip()
    try:
        size = int(text, 16)
    except ValueError:
        raise BadRequest(400, f"malformed chunk size {text[:20]!r}") from None
    if size < 0:
        raise BadRequest(400, "negative chunk size")
    return size


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    for _ in range(100):
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return
    raise BadRequest(400, "too many trailer lines")


async def read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size = await _chunk_size(reader)
        if size == 0:
            await _skip_trailers(reader)
            return b"".join(parts)
        total += size
        if total > limit:
            raise BadRequest(413, f"chunked request body is over the proxy's limit of {limit} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest(400, "chunk not followed by CRLF")


@dataclass
class Response:
    status: int
    version: str
    headers: list[tuple[str, str]]
    fields: dict[str, str]


async def read_response_head(reader: asyncio.StreamReader) -> Response:
    for _ in range(10):  # interim 1xx answers are skipped
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit():
            raise BadResponse(f"malformed status line {lines[0][:120]!r}")
        status = int(parts[1])
        try:
            headers, fields = _parse_header_lines(lines[1:])
        except BadRequest as exc:
            raise BadResponse(exc.message) from None
        if 100 <= status < 200 and status != 101:
            continue
        return Response(status, parts[0], headers, fields)
    raise BadResponse("too many interim responses")


def _abort(writer: asyncio.StreamWriter) -> None:
    """Reset the connection (RST, not FIN): what a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Upstream:
    __slots__ = ("reader", "writer", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.reused = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.transport.abort()


class UpstreamPool:
    def __init__(self, host: str, port: int, stats: Stats):
        self.host = host
        self.port = port
        self.stats = stats
        self.idle: deque[_Upstream] = deque()

    async def acquire(self) -> _Upstream:
        while self.idle:
            conn = self.idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=MAX_HEAD), CONNECT_TIMEOUT
        )
        self.stats.upstream_connections_opened += 1
        return _Upstream(reader, writer)

    def release(self, conn: _Upstream) -> None:
        if conn.usable() and len(self.idle) < MAX_IDLE_UPSTREAM:
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class _ClientGone(Exception):
    pass


# --- the proxy -----------------------------------------------------------------------------------


class Proxy:
    control_prefix = CONTROL_PREFIX

    def __init__(
        self,
        *,
        target: tuple[str, int],
        config: ProxyConfig,
        idle_timeout: float = IDLE_TIMEOUT,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
    ):
        self.target_host, self.target_port = target
        host = f"[{self.target_host}]" if ":" in self.target_host else self.target_host
        self.host_header = f"{host}:{self.target_port}"
        self.config = config
        self.stats = Stats()
        self.pool = UpstreamPool(self.target_host, self.target_port, self.stats)
        self.idle_timeout = idle_timeout
        self.upstream_timeout = upstream_timeout
        self._writers: set[asyncio.StreamWriter] = set()
        self._request_ids = itertools.count(1)

    async def listen(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD, backlog=2048)

    def close(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self.pool.close()

    # one client connection: requests one after the other while it is kept alive
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.stats.client_connections_opened += 1
        self.stats.client_connections_open += 1
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
                except asyncio.LimitOverrunError:
                    await self._send_error(writer, None, 431, "invalid_request_error", "request head too large")
                    break
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    break
                try:
                    request = parse_request_head(head)
                    if (request.header("expect") or "").lower() == "100-continue":
                        # the body is read here and forwarded with a length: the client may send it now
                        await self._write(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
                    request.body = await asyncio.wait_for(read_request_body(reader, request), self.idle_timeout)
                except BadRequest as exc:
                    error_type = "request_too_large" if exc.status == 413 else "invalid_request_error"
                    await self._send_error(writer, None, exc.status, error_type, exc.message)
                    break
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
                    break
                if not await self._handle(request, reader, writer):
                    break
        except (ConnectionError, _ClientGone):
            pass
        except asyncio.CancelledError:
            # Shutting down: this task is the whole connection, so ending it here is the cancellation.
            writer.transport.abort()
        except Exception:  # a bug here must end one connection, not the proxy
            logger.exception("proxy connection failed")
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            self.stats.client_connections_open -= 1
            if not writer.is_closing():
                writer.close()

    async def _handle(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the client connection must end."""
        if request.path == self.control_prefix or request.path.startswith(self.control_prefix + "/"):
            return await self._control(request, writer)
        key = request.header("idempotency-key")
        template = path_template(request.path)
        route = f"{request.method} {template}"
        stats = self.stats
        stats.requests_by_route[route] += 1
        if key is not None:
            stats.calls_by_key[key] += 1
        fault = self.config.select(request.method, request.path, template, key)
        delay = self.config.delay()
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            if fault is None:
                return await self._forward(request, writer, route, key, deliver=True)
            stats.faults_by_kind[fault.kind] += 1
            stats.faults_by_route[route][fault.kind] += 1
            if key is not None:
                stats.faults_by_key[key][fault.kind] += 1
            if fault.kind in ("rate_limit", "status"):
                message = fault.message or (
                    "rate limited by the fault proxy" if fault.kind == "rate_limit"
                    else f"upstream failure injected by the fault proxy ({fault.status})"
                )
                extra = [("retry-after", fault.retry_after)] if fault.retry_after is not None else []
                await self._send_error(writer, request, fault.status, fault.error_type, message, extra)
                return request.keep_alive
            if fault.kind == "hang":
                await self._hang(reader, fault)
            elif fault.kind == "answer_lost":
                await self._forward(request, writer, route, key, deliver=False)
            _abort(writer)
            return False
        finally:
            stats.in_flight -= 1

    async def _hang(self, reader: asyncio.StreamReader, fault: Fault) -> None:
        limit = fault.max_seconds if fault.max_seconds is not None else self.config.max_hang

        async def until_client_leaves() -> None:
            while await reader.read(PIECE):
                pass

        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(until_client_leaves(), limit)

    def _upstream_head(self, request: Request) -> bytes:
        drop = HOP_BY_HOP | _tokens(request.header("connection")) | {"host", "content-length", "expect"}
        lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {self.host_header}"]
        lines.extend(f"{name}: {value}" for name, value in request.headers if name.lower() not in drop)
        if request.body or request.method in ("POST", "PUT", "PATCH") or request.header("content-length") is not None:
            lines.append(f"Content-Length: {len(request.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _forward(
        self, request: Request, writer: asyncio.StreamWriter, route: str, key: str | None, *, deliver: bool
    ) -> bool:
        """Send the request upstream and relay the answer (or, deliver=False, read and drop it)."""
        payload = self._upstream_head(request) + request.body
        self.stats.forwarded_by_route[route] += 1
        if key is not None:
            self.stats.forwarded_by_key[key] += 1
        for attempt in range(2):
            try:
                conn = await self.pool.acquire()
            except (OSError, asyncio.TimeoutError) as exc:
                self.stats.upstream_errors["connect"] += 1
                reason_text = str(exc) or type(exc).__name__
                return await self._upstream_failed(writer, request, deliver, 502, f"upstream {self.host_header} unreachable: {reason_text}")
            try:
                conn.writer.write(payload)
                await conn.writer.drain()
                response = await asyncio.wait_for(read_response_head(conn.reader), self.upstream_timeout)
            except asyncio.TimeoutError:
                conn.close()
                self.stats.upstream_errors["timeout"] += 1
                message = f"upstream {self.host_header} did not answer within {self.upstream_timeout:g} s"
                return await self._upstream_failed(writer, request, deliver, 504, message)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadResponse) as exc:
                conn.close()
                # A pooled connection the upstream closed while idle: try once more on a new one.
                nothing_received = isinstance(exc, ConnectionError) or (
                    isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
                )
                if conn.reused and attempt == 0 and nothing_received:
                    self.stats.upstream_retries += 1
                    continue
                self.stats.upstream_errors["connection"] += 1
                message = f"upstream {self.host_header} failed: {type(exc).__name__}"
                return await self._upstream_failed(writer, request, deliver, 502, message)
            return await self._relay(request, response, conn, writer, deliver)
        return False  # not reached: the second attempt always returns

    async def _upstream_failed(self, writer, request: Request, deliver: bool, status: int, message: str) -> bool:
        if not deliver:
            return False
        await self._send_error(writer, request, status, "api_error", message)
        return request.keep_alive

    async def _relay(
        self, request: Request, response: Response, conn: _Upstream, writer: asyncio.StreamWriter, deliver: bool
    ) -> bool:
        status = response.status
        transfer_encoding = response.fields.get("transfer-encoding")
        length = response.fields.get("content-length")
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            mode = "none"
        elif transfer_encoding is not None:
            mode = "chunked"
        elif length is not None and length.strip().isdigit():
            mode = "length"
        else:
            mode = "close"
        upstream_tokens = _tokens(response.fields.get("connection"))
        upstream_keep = mode != "close" and (
            "close" not in upstream_tokens if response.version == "HTTP/1.1" else "keep-alive" in upstream_tokens
        )
        client_keep = request.keep_alive
        rechunk = False
        if deliver:
            drop = HOP_BY_HOP | upstream_tokens
            lines = [f"HTTP/1.1 {status} {reason(status)}"]
            lines.extend(f"{name}: {value}" for name, value in response.headers if name.lower() not in drop)
            if mode in ("chunked", "close"):
                if request.version == "HTTP/1.1":
                    lines.append("Transfer-Encoding: chunked")
                    rechunk = True
                else:
                    client_keep = False
            lines.append("Connection: keep-alive" if client_keep else "Connection: close")
            await self._write(writer, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

        async def emit(data: bytes) -> None:
            if deliver:
                await self._write(writer, b"%x\r\n%s\r\n" % (len(data), data) if rechunk else data)

        reader = conn.reader
        timeout = self.upstream_timeout
        try:
            if mode == "length":
                remaining = int(length.strip())
                while remaining > 0:
                    data = await asyncio.wait_for(reader.read(min(remaining, PIECE)), timeout)
                    if not data:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    remaining -= len(data)
                    await emit(data)
            elif mode == "chunked":
                while True:
                    size = await asyncio.wait_for(_chunk_size(reader), timeout)
                    if size == 0:
                        await asyncio.wait_for(_skip_trailers(reader), timeout)
                        break
                    while size > 0:
                        data = await asyncio.wait_for(reader.read(min(size, PIECE)), timeout)
                        if not data:
                            raise asyncio.IncompleteReadError(b"", size)
                        size -= len(data)
                        await emit(data)
                    if await asyncio.wait_for(reader.readexactly(2), timeout) != b"\r\n":
                        raise BadResponse("chunk not followed by CRLF")
            elif mode == "close":
                while data := await asyncio.wait_for(reader.read(PIECE), timeout):
                    await emit(data)
            if rechunk:
                await self._write(writer, b"0\r\n\r\n")
        except _ClientGone:
            conn.close()
            return False
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                BadRequest, BadResponse):
            # The upstream broke off mid-answer: the client must not take a truncated body as whole.
            conn.close()
            self.stats.upstream_errors["broken_answer"] += 1
            if deliver:
                _abort(writer)
            return False
        if upstream_keep:
            self.pool.release(conn)
        else:
            conn.close()
        return client_keep

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise _ClientGone() from exc

    async def _send(self, writer, request: Request | None, status: int, body: bytes, request_id: str, extra=()) -> None:
        keep = request is not None and request.keep_alive
        lines = [
            f"HTTP/1.1 {status} {reason(status)}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"request-id: {request_id}",
            *(f"{name}: {value}" for name, value in extra),
            "Connection: keep-alive" if keep else "Connection: close",
        ]
        with contextlib.suppress(_ClientGone):
            await self._write(writer, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def _send_error(self, writer, request: Request | None, status: int, error_type: str, message: str, extra=()) -> None:
        request_id = f"req_proxy_{next(self._request_ids):08d}"
        await self._send(writer, request, status, error_body(error_type, message, request_id), request_id, extra)

    async def _send_json(self, writer, request: Request, status: int, payload: Any) -> None:
        request_id = f"req_proxy_{next(self._request_ids):08d}"
        await self._send(writer, request, status, json.dumps(payload).encode(), request_id)

    async def _control(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        action = (request.method, request.path[len(self.control_prefix):])
        if action == ("GET", "/stats"):
            keys = parse_qs(request.query).get("keys", ["1"])[-1] not in ("0", "false", "no")
            await self._send_json(writer, request, 200, self.stats.snapshot(keys=keys))
        elif action == ("GET", "/config"):
            await self._send_json(writer, request, 200, self.config.describe())
        elif action == ("POST", "/config"):
            try:
                data = json.loads(request.body or b"{}")
                self.config.update(data)
            except (ValueError, UnicodeDecodeError) as exc:
                message = str(exc) if isinstance(exc, ConfigError) else f"body is not valid JSON: {exc}"
                await self._send_error(writer, request, 400, "invalid_request_error", message)
            else:
                await self._send_json(writer, request, 200, self.config.describe())
        elif action == ("POST", "/reset"):
            self.stats.clear()
            self.config.reset_state()
            await self._send_json(writer, request, 200, {"reset": True})
        else:
            await self._send_error(
                writer, request, 404, "not_found_error",
                f"no control endpoint {request.method} {request.path}: GET|POST {CONTROL_PREFIX}/config, "
                f"GET {CONTROL_PREFIX}/stats, POST {CONTROL_PREFIX}/reset",
            )
        return request.keep_alive


# --- starting it ---------------------------------------------------------------------------------


def _config_from(latency: float, jitter: float, seed: int | None, faults: Any, max_hang: float | None) -> ProxyConfig:
    config = ProxyConfig()
    settings: dict[str, Any] = {"latency": latency, "jitter": jitter, "seed": seed}
    if max_hang is not None:
        settings["max_hang"] = max_hang
    config.update(settings)
    if faults is not None:
        if isinstance(faults, str):
            faults = json.loads(faults)
        config.update(faults)
    return config


def start_proxy(
    *,
    target: str,
    latency: float = 0.0,
    jitter: float = 0.0,
    seed: int | None = None,
    faults: Any = None,
    max_hang: float | None = None,
    host: str = LOOPBACK,
    port: int = 0,
    idle_timeout: float = IDLE_TIMEOUT,
    upstream_timeout: float = UPSTREAM_TIMEOUT,
):
    """Run a proxy on a background thread; returns a Handle (`url`, `config()`, `stats()`,
    `reset()`, `stop()`; a context manager). `faults`: a config object or a list of rules."""
    config = _config_from(latency, jitter, seed, faults, max_hang)
    proxy = Proxy(target=parse_target(target), config=config, idle_timeout=idle_timeout, upstream_timeout=upstream_timeout)

    async def start():
        return await proxy.listen(host, port), proxy

    return run_in_thread(start, name="upstream-sim-proxy")


def spawn_proxy(
    *,
    target: str,
    latency: float = 0.0,
    jitter: float = 0.0,
    seed: int | None = None,
    faults: Any = None,
    max_hang: float | None = None,
    host: str = LOOPBACK,
    port: int = 0,
) -> ProcessHandle:
    """Run a proxy as `python -m upstream_sim.proxy` in a process of its own."""
    _config_from(latency, jitter, seed, faults, max_hang)  # fail here, not in the child
    args = ["--listen", f"{host}:{port}", "--target", target, "--latency", str(latency), "--jitter", str(jitter)]
    if seed is not None:
        args += ["--seed", str(seed)]
    if faults is not None:
        args += ["--faults", faults if isinstance(faults, str) else json.dumps(faults)]
    if max_hang is not None:
        args += ["--max-hang", str(max_hang)]
    return spawn("upstream_sim.proxy", args, control_prefix=CONTROL_PREFIX)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m upstream_sim.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default=f"{LOOPBACK}:0", help="HOST:PORT (port 0: a free one, printed)")
    parser.add_argument("--target", required=True, help="the upstream, http://HOST:PORT")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before each request")
    parser.add_argument("--jitter", type=float, default=0.0, help="up to this many more seconds, uniform")
    parser.add_argument("--seed", type=int, default=None, help="seed of the probability and jitter draws")
    parser.add_argument("--faults", default=None, help="JSON: a config object (see the module doc) or a list of rules")
    parser.add_argument("--max-hang", type=float, default=None, help="longest a hang fault holds a request (default 120 s)")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT, help="close an idle client connection after this")
    parser.add_argument("--upstream-timeout", type=float, default=UPSTREAM_TIMEOUT, help="longest wait for an upstream read")
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
        target = parse_target(args.target)
        config = _config_from(args.latency, args.jitter, args.seed, args.faults, args.max_hang)
    except ConfigError as exc:
        parser.error(f"--faults: {exc}" if exc.field.startswith(("rules", "config")) else str(exc))
    except ValueError as exc:
        parser.error(str(exc))
    proxy = Proxy(target=target, config=config, idle_timeout=args.idle_timeout, upstream_timeout=args.upstream_timeout)

    async def start():
        return await proxy.listen(host, port), proxy

    serve_main(start)


if __name__ == "__main__":
    sys.exit(main())

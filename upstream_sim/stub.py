"""A minimal, fast stub of the Managed Agents endpoints the `anthropic` gateway calls.

    python -m upstream_sim.stub --listen 127.0.0.1:0 --latency 0.1 [--jitter 0.02] [--api-key K]

The first stdout line is `listening on http://HOST:PORT`. Answers, in the SDK's shapes
(`BetaManagedAgentsSession`, `BetaManagedAgentsAgent`, `BetaEnvironment`, `BetaManagedAgentsVault`):

- `POST /v1/sessions` — creates a session; the same `Idempotency-Key` returns the same session and
  creates nothing.
- `GET /v1/sessions/{id}` (a session created here), `GET /v1/agents/{id}` (`?version=N`),
  `GET /v1/environments/{id}`, `GET /v1/vaults/{id}`.

Every agent, environment and vault exists, is active and has version 1, unless
`POST /__stub__/config` says otherwise: `{"missing": [ids], "archived": [ids],
"agent_versions": {"agent_…": 3}, "rosters": {"agent_…": ["agent_sub…"]}, "latency": s,
"jitter": s}` (each field given replaces that setting). `sessions.create` then answers as the
platform does: 404 `not_found_error` for a missing agent, agent version, environment, vault or
file, 400 `invalid_request_error` for an archived one, each naming the resource.
`GET /__stub__/stats`: requests by route, answers by status, sessions created, distinct
idempotency keys, requests in flight now and at most. `POST /__stub__/reset` forgets the sessions
and zeroes the counters.

Every `/v1` request needs a non-empty key in `x-api-key` or in `Authorization: Bearer` (as the
SDK sends it), exactly `--api-key` when that is given (401 `authentication_error` otherwise), and
`anthropic-beta: managed-agents-2026-04-01` (400).

Built for thousands of requests in flight: a bare `asyncio.Protocol`, answers delayed with
`loop.call_later` (no task per request), the fixed parts of every answer encoded once.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import random
import sys
import time
from collections import Counter
from typing import Any

from upstream_sim._common import (
    LOOPBACK,
    ProcessHandle,
    error_body,
    parse_listen,
    path_template,
    reason,
    run_in_thread,
    serve_main,
    spawn,
)

logger = logging.getLogger("upstream_sim.stub")

CONTROL_PREFIX = "/__stub__"
BETA = "managed-agents-2026-04-01"
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
MODEL = {"id": "claude-sonnet-4-6", "speed": "standard"}

_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason(status)}".encode()
    return line


_clock = {"second": -1, "prefix": ""}


def _new_id(prefix: str) -> str:
    """Time-sortable and unguessable: 48 bits of milliseconds, then 64 random bits, in hex."""
    return "%s_%012x%s" % (prefix, int(time.time() * 1000), os.urandom(8).hex())


def _iso(t: float) -> str:
    second = int(t)
    if second != _clock["second"]:
        _clock["second"], _clock["prefix"] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return "%s.%03dZ" % (_clock["prefix"], int(t * 1000) % 1000)


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Invalid(Exception):
    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _bad(message: str) -> Invalid:
    return Invalid(400, "invalid_request_error", message)


class StubConfig:
    FIELDS = ("latency", "jitter", "seed", "missing", "archived", "agent_versions", "rosters")

    def __init__(self, *, latency: float = 0.0, jitter: float = 0.0, seed: int | None = None):
        self.latency = latency
        self.jitter = jitter
        self.seed = seed
        self.missing: set[str] = set()
        self.archived: set[str] = set()
        self.agent_versions: dict[str, int] = {}
        self.rosters: dict[str, list[str]] = {}
        self.rng = random.Random(seed)

    def update(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise _bad("config must be a JSON object")
        unknown = set(data) - set(self.FIELDS)
        if unknown:
            raise _bad(f"{sorted(unknown)[0]}: is not a stub setting (settings: {', '.join(self.FIELDS)})")
        new: dict[str, Any] = {}
        for name in ("latency", "jitter"):
            if name in data:
                value = data[name]
                is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                if not is_number or not 0 <= value <= 600:
                    raise _bad(f"{name}: must be a number of seconds between 0 and 600")
                new[name] = float(value)
        if "seed" in data:
            if data["seed"] is not None and (isinstance(data["seed"], bool) or not isinstance(data["seed"], int)):
                raise _bad("seed: must be an integer or null")
            new["seed"] = data["seed"]
        for name in ("missing", "archived"):
            if name in data:
                ids = data[name] or []
                if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                    raise _bad(f"{name}: must be a list of ids")
                new[name] = set(ids)
        if "agent_versions" in data:
            versions = data["agent_versions"] or {}
            if not isinstance(versions, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in versions.values()
            ):
                raise _bad("agent_versions: must map agent ids to their latest version (an integer ≥ 1)")
            new["agent_versions"] = dict(versions)
        if "rosters" in data:
            rosters = data["rosters"] or {}
            if not isinstance(rosters, dict) or not all(
                isinstance(ids, list) and all(isinstance(i, str) and i for i in ids) for ids in rosters.values()
            ):
                raise _bad("rosters: must map agent ids to lists of subagent ids")
            new["rosters"] = {agent: list(ids) for agent, ids in rosters.items()}
        for name, value in new.items():
            setattr(self, name, value)
        if "seed" in new:
            self.rng = random.Random(self.seed)

    def delay(self) -> float:
        return self.latency + (self.rng.uniform(0, self.jitter) if self.jitter else 0.0)

    def describe(self) -> dict:
        return {
            "latency": self.latency,
            "jitter": self.jitter,
            "seed": self.seed,
            "missing": sorted(self.missing),
            "archived": sorted(self.archived),
            "agent_versions": self.agent_versions,
            "rosters": self.rosters,
        }


class Stub:
    control_prefix = CONTROL_PREFIX

    def __init__(self, *, api_key: str | None = None, latency: float = 0.0, jitter: float = 0.0, seed: int | None = None):
        self.api_key = api_key
        self.config = StubConfig(latency=latency, jitter=jitter, seed=seed)
        self.started = time.time()
        self.started_iso = _iso(self.started)
        self.sessions: dict[str, bytes] = {}
        self.session_by_key: dict[str, str] = {}
        self.transports: set[asyncio.Transport] = set()
        self._request_ids = itertools.count(1)
        self._agent_cache: dict[tuple[str, int], str] = {}
        self.in_flight = 0
        self.connections_open = 0
        self.clear_stats()

    def clear_stats(self) -> None:
        self.requests_by_route: Counter[str] = Counter()
        self.responses_by_status: Counter[int] = Counter()
        self.sessions_created = 0
        self.idempotent_replays = 0
        self.keys_seen: set[str] = set()
        self.max_in_flight = self.in_flight
        self.connections_opened = 0

    def stats(self) -> dict:
        return {
            "requests_total": sum(self.requests_by_route.values()),
            "requests_by_route": dict(self.requests_by_route),
            "responses_by_status": {str(k): v for k, v in sorted(self.responses_by_status.items())},
            "sessions_created": self.sessions_created,
            "idempotency_keys": len(self.keys_seen),
            "idempotent_replays": self.idempotent_replays,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "connections_opened": self.connections_opened,
            "connections_open": self.connections_open,
        }

    async def listen(self, host: str, port: int) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Connection(self, loop), host, port, backlog=4096)

    def close(self) -> None:
        for transport in list(self.transports):
            transport.abort()

    # --- one request ------------------------------------------------------------------------------

    def respond(self, method: str, target: str, fields: dict[str, str], body: bytes, keep: bool) -> tuple[bytes, float]:
        """The whole answer to one request, and how long to hold it back."""
        request_id = f"req_stub_{next(self._request_ids):08d}"
        path, _, query = target.partition("?")
        if path.startswith(CONTROL_PREFIX):
            status, payload = self._control(method, path, body, request_id)
            return self._encode(status, payload, request_id, keep, count=False), 0.0
        parts = path.split("/")
        if len(parts) == 3:
            route = f"{method} {path}"
        elif len(parts) == 4:
            route = f"{method} /{parts[1]}/{parts[2]}/{{id}}"
        else:
            route = f"{method} {path_template(path)}"
        self.requests_by_route[route] += 1
        try:
            status, payload = self._api(method, parts, query, fields, body, route)
        except Invalid as exc:
            status, payload = exc.status, error_body(exc.error_type, exc.message, request_id)
        except Exception as exc:  # a bug in the stub: say so, as the platform would, and go on
            logger.exception("stub failed on %s", route)
            status, payload = 500, error_body("api_error", f"stub error: {type(exc).__name__}", request_id)
        return self._encode(status, payload, request_id, keep), self.config.delay()

    def _encode(self, status: int, payload: bytes, request_id: str, keep: bool, *, count: bool = True) -> bytes:
        if count:
            self.responses_by_status[status] += 1
        return b"%s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nrequest-id: %s\r\nconnection: %s\r\n\r\n%s" % (
            _status_line(status), len(payload), request_id.encode(), b"keep-alive" if keep else b"close", payload,
        )

    def _api(
        self, method: str, parts: list[str], query: str, fields: dict[str, str], body: bytes, route: str
    ) -> tuple[int, bytes]:
        key = fields.get("x-api-key")
        if not key:
            # The official SDK (2.x) sends its api_key as `Authorization: Bearer <key>`.
            scheme, _, token = fields.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key or (self.api_key is not None and key != self.api_key):
            message = "invalid API key" if key else "an x-api-key header (or Authorization: Bearer) is required"
            raise Invalid(401, "authentication_error", message)
        beta = fields.get("anthropic-beta", "")
        if BETA not in (b.strip() for b in beta.split(",")):
            raise _bad(f"the anthropic-beta header must include {BETA}")
        if route == "POST /v1/sessions":
            return self._session_create(fields.get("idempotency-key"), body)
        if method == "GET" and len(parts) == 4 and parts[1] == "v1" and parts[3]:
            kind, resource_id = parts[2], parts[3]
            if kind == "sessions":
                session = self.sessions.get(resource_id)
                if session is None:
                    raise Invalid(404, "not_found_error", f"session {resource_id} not found")
                return 200, session
            if kind == "agents":
                version = None
                for item in query.split("&"):
                    if item.startswith("version="):
                        text = item[8:]
                        if not text.isdigit() or int(text) < 1:
                            raise _bad(f"version: must be an integer ≥ 1, got {text[:20]!r}")
                        version = int(text)
                return 200, self._agent_json(resource_id, version).encode()
            if kind == "environments":
                return 200, self._environment_json(resource_id).encode()
            if kind == "vaults":
                return 200, self._vault_json(resource_id).encode()
        raise Invalid(404, "not_found_error", f"no route {route} in the stub")

    # --- resources --------------------------------------------------------------------------------

    def _check(self, kind: str, resource_id: str) -> None:
        if resource_id in self.config.missing:
            raise Invalid(404, "not_found_error", f"{kind} {resource_id} not found")
        if resource_id in self.config.archived:
            raise _bad(f"{kind} {resource_id} is archived")

    def _archived_at(self, resource_id: str) -> str:
        return f'"{self.started_iso}"' if resource_id in self.config.archived else "null"

    def _agent_version(self, agent_id: str, version: int | None) -> int:
        latest = self.config.agent_versions.get(agent_id, 1)
        if version is None:
            return latest
        if version > latest:
            raise Invalid(404, "not_found_error", f"agent {agent_id} has no version {version}")
        return version

    def _agent_definition(self, agent_id: str, version: int) -> str:
        """The fields an agent, a session's agent and a roster member share (cached per version)."""
        cached = self._agent_cache.get((agent_id, version))
        if cached is None:
            cached = self._agent_cache[(agent_id, version)] = (
                '"type":"agent","id":%s,"version":%d,"name":"Stub agent","description":null,"system":null,'
                '"model":%s,"tools":[],"mcp_servers":[],"skills":[],"execution_identity":{"type":"service_account"}'
                % (_dumps(agent_id), version, _dumps(MODEL))
            )
        return cached

    def _agent_json(self, agent_id: str, version: int | None) -> str:
        if agent_id in self.config.missing:
            raise Invalid(404, "not_found_error", f"agent {agent_id} not found")
        version = self._agent_version(agent_id, version)
        roster = self.config.rosters.get(agent_id)
        multiagent = "null"
        if roster:
            members = ",".join(
                '{"type":"agent","id":%s,"version":%d}' % (_dumps(sub), self.config.agent_versions.get(sub, 1)) for sub in roster
            )
            multiagent = '{"type":"coordinator","agents":[%s]}' % members
        return '{%s,"metadata":{},"multiagent":%s,"archived_at":%s,"created_at":"%s","updated_at":"%s"}' % (
            self._agent_definition(agent_id, version), multiagent, self._archived_at(agent_id), self.started_iso, self.started_iso,
        )

    def _environment_json(self, environment_id: str) -> str:
        if environment_id in self.config.missing:
            raise Invalid(404, "not_found_error", f"environment {environment_id} not found")
        return (
            '{"type":"environment","id":%s,"name":"Stub environment","description":null,'
            '"config":{"type":"cloud","networking":{"type":"unrestricted"},'
            '"packages":{"type":"packages","apt":[],"cargo":[],"gem":[],"go":[],"npm":[],"pip":[]}},'
            '"metadata":{},"scope":"organization","archived_at":%s,"created_at":"%s","updated_at":"%s"}'
            % (_dumps(environment_id), self._archived_at(environment_id), self.started_iso, self.started_iso)
        )

    def _vault_json(self, vault_id: str) -> str:
        if vault_id in self.config.missing:
            raise Invalid(404, "not_found_error", f"vault {vault_id} not found")
        return (
            '{"type":"vault","id":%s,"display_name":"Stub vault","metadata":{},"archived_at":%s,'
            '"created_at":"%s","updated_at":"%s"}'
            % (_dumps(vault_id), self._archived_at(vault_id), self.started_iso, self.started_iso)
        )

    # --- sessions.create --------------------------------------------------------------------------

    def _session_create(self, idempotency_key: str | None, body: bytes) -> tuple[int, bytes]:
        if idempotency_key is not None:
            self.keys_seen.add(idempotency_key)
            existing = self.session_by_key.get(idempotency_key)
            if existing is not None:
                self.idempotent_replays += 1
                return 200, self.sessions[existing]
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _bad("request body must be valid JSON") from None
        if not isinstance(data, dict):
            raise _bad("request body must be a JSON object")
        agent_id, version = _agent_param(data.get("agent"))
        environment_id = data.get("environment_id")
        if not isinstance(environment_id, str) or not environment_id:
            raise _bad("environment_id: required, a non-empty string")
        vault_ids = data.get("vault_ids") or []
        if not isinstance(vault_ids, list) or not all(isinstance(v, str) and v for v in vault_ids):
            raise _bad("vault_ids: must be a list of vault ids")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _bad("metadata: must be an object of string values")
        title = data.get("title")
        if title is not None and not isinstance(title, str):
            raise _bad("title: must be a string or null")
        events = data.get("initial_events") or []
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise _bad("initial_events: must be a list of events")
        budget = data.get("budget")
        if budget is not None and not isinstance(budget, dict):
            raise _bad("budget: must be an object or null")

        self._check("agent", agent_id)
        version = self._agent_version(agent_id, version)
        for sub in self.config.rosters.get(agent_id, ()):
            if sub in self.config.missing or sub in self.config.archived:
                state = "archived" if sub in self.config.archived else "not found"
                raise _bad(f"subagent {sub} in the roster of agent {agent_id} is {state}")
        self._check("environment", environment_id)
        for vault_id in vault_ids:
            self._check("vault", vault_id)
        now = time.time()
        stamp = _iso(now)
        resources = _session_resources(data.get("resources"), stamp, self._check)

        session_id = _new_id("sesn")
        roster = self.config.rosters.get(agent_id)
        multiagent = "null"
        if roster:
            multiagent = '{"type":"coordinator","agents":[%s]}' % ",".join(
                "{%s}" % self._agent_definition(sub, self.config.agent_versions.get(sub, 1)) for sub in roster
            )
        outcomes = [
            {"type": "outcome_evaluation", "outcome_id": f"outc_{session_id[5:]}{i:02d}",
             "description": str(e.get("description", "")), "result": "pending", "iteration": 0,
             "explanation": None, "completed_at": None}
            for i, e in enumerate(events) if e.get("type") == "user.define_outcome"
        ]
        session = (
            '{"type":"session","id":"%s","status":"idle","title":%s,"agent":{%s,"multiagent":%s},"environment_id":%s,'
            '"resources":%s,"vault_ids":%s,"metadata":%s,"budget":%s,"deployment_id":null,"outcome_evaluations":%s,'
            '"stats":{"active_seconds":0.0,"duration_seconds":0.0},'
            '"usage":{"input_tokens":0,"output_tokens":0,"cache_read_input_tokens":0,"active_seconds":0.0},'
            '"archived_at":null,"created_at":"%s","updated_at":"%s"}'
        ) % (
            session_id,
            "null" if title is None else _dumps(title),
            self._agent_definition(agent_id, version),
            multiagent,
            _dumps(environment_id),
            _dumps(resources) if resources else "[]",
            _dumps(vault_ids) if vault_ids else "[]",
            _dumps(metadata) if metadata else "{}",
            "null" if budget is None else _dumps(budget),
            _dumps(outcomes) if outcomes else "[]",
            stamp,
            stamp,
        )
        encoded = session.encode()
        self.sessions[session_id] = encoded
        if idempotency_key is not None:
            self.session_by_key[idempotency_key] = session_id
        self.sessions_created += 1
        return 200, encoded

    # --- control ----------------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        action = (method, path[len(CONTROL_PREFIX):])
        if action == ("GET", "/stats"):
            return 200, _dumps(self.stats()).encode()
        if action == ("GET", "/config"):
            return 200, _dumps(self.config.describe()).encode()
        if action == ("POST", "/config"):
            try:
                try:
                    data = json.loads(body or b"{}")
                except (ValueError, UnicodeDecodeError):
                    raise _bad("config body must be valid JSON") from None
                self.config.update(data)
            except Invalid as exc:
                return exc.status, error_body(exc.error_type, exc.message, request_id)
            self._agent_cache.clear()
            return 200, _dumps(self.config.describe()).encode()
        if action == ("POST", "/reset"):
            self.sessions.clear()
            self.session_by_key.clear()
            self.clear_stats()
            return 200, b'{"reset":true}'
        return 404, error_body("not_found_error", f"no control endpoint {method} {path}", request_id)


def _agent_param(value: Any) -> tuple[str, int | None]:
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, dict):
        agent_id, version = value.get("id"), value.get("version")
        if not isinstance(agent_id, str) or not agent_id:
            raise _bad("agent.id: required, a non-empty string")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise _bad("agent.version: must be an integer ≥ 1")
        return agent_id, version
    raise _bad("agent: required, an agent id or {\"type\": \"agent\", \"id\", \"version\"}")


def _session_resources(value: Any, stamp: str, check) -> list:
    """Resources as a session returns them: ids and mount paths added, secrets never echoed."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad("resources: must be a list")
    out = []
    for i, item in enumerate(value):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "memory_store":
            store_id = item.get("memory_store_id")
            if not isinstance(store_id, str) or not store_id:
                raise _bad(f"resources[{i}].memory_store_id: required")
            check("memory store", store_id)
            out.append({"type": "memory_store", "memory_store_id": store_id, "access": item.get("access") or "read_write",
                        "instructions": item.get("instructions")})
            continue
        stamped = {"id": _new_id("sesrsc"), "created_at": stamp, "updated_at": stamp}
        if kind == "file":
            file_id = item.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                raise _bad(f"resources[{i}].file_id: required")
            check("file", file_id)
            mount_path = item.get("mount_path") or f"/mnt/session/uploads/{file_id}"
            out.append({**stamped, "type": "file", "file_id": file_id, "mount_path": mount_path})
        elif kind == "github_repository":
            url = item.get("url")
            if not isinstance(url, str) or not url:
                raise _bad(f"resources[{i}].url: required")
            name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repository"
            out.append({**stamped, "type": "github_repository", "url": url, "checkout": item.get("checkout"),
                        "mount_path": item.get("mount_path") or f"/workspace/{name}"})
        else:
            raise _bad(f"resources[{i}].type: must be one of github_repository, file, memory_store")
    return out


class _Connection(asyncio.Protocol):
    """One client connection. Requests are answered in order; while one is held back by the
    latency, the next waits in the buffer (HTTP/1.1 without pipelining gains nothing else)."""

    __slots__ = ("stub", "loop", "transport", "buffer", "busy", "closed")

    def __init__(self, stub: Stub, loop: asyncio.AbstractEventLoop):
        self.stub = stub
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stub.transports.add(transport)
        self.stub.connections_opened += 1
        self.stub.connections_open += 1

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.stub.transports.discard(self.transport)
        self.stub.connections_open -= 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_HEAD + MAX_BODY:
            self.transport.pause_reading()
        if not self.busy:
            self._next_requests()

    def _fail(self, status: int, message: str) -> None:
        request_id = f"req_stub_{next(self.stub._request_ids):08d}"
        payload = error_body("request_too_large" if status == 413 else "invalid_request_error", message, request_id)
        self.transport.write(self.stub._encode(status, payload, request_id, False))
        self.transport.close()
        self.closed = True

    def _next_requests(self) -> None:
        stub = self.stub
        buffer = self.buffer
        while not self.busy and not self.closed:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._fail(431, "request head too large")
                return
            lines = buffer[:end].decode("latin-1").split("\r\n")
            request_line = lines[0].split(" ")
            if len(request_line) != 3 or request_line[2] not in ("HTTP/1.1", "HTTP/1.0"):
                self._fail(400, f"malformed request line {lines[0][:100]!r}")
                return
            method, target, version = request_line
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            if "transfer-encoding" in fields:
                self._fail(411, "chunked request bodies are not supported by the stub: send content-length")
                return
            length_text = fields.get("content-length", "0")
            if not length_text.isdigit():
                self._fail(400, f"invalid content-length {length_text[:20]!r}")
                return
            length = int(length_text)
            if length > MAX_BODY:
                self._fail(413, f"request body over {MAX_BODY} bytes")
                return
            total = end + 4 + length
            if len(buffer) < total:
                return
            body = bytes(buffer[end + 4:total])
            del buffer[:total]
            connection = fields.get("connection", "").lower()
            keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
            response, delay = stub.respond(method, target, fields, body, keep)
            stub.in_flight += 1
            if stub.in_flight > stub.max_in_flight:
                stub.max_in_flight = stub.in_flight
            if delay > 0:
                self.busy = True
                self.loop.call_later(delay, self._answer, response, keep)
            else:
                self._answer(response, keep)

    def _answer(self, response: bytes, keep: bool) -> None:
        self.stub.in_flight -= 1
        self.busy = False
        if self.closed:
            return
        self.transport.write(response)
        if not keep:
            self.transport.close()
            self.closed = True
            return
        if self.buffer:
            self.transport.resume_reading()
            self._next_requests()


def start_stub(
    *, latency: float = 0.0, jitter: float = 0.0, seed: int | None = None, api_key: str | None = None,
    config: dict | None = None, host: str = LOOPBACK, port: int = 0,
):
    """Run a stub on a background thread; returns a Handle (`url`, `config()`, `stats()`,
    `reset()`, `stop()`; a context manager)."""
    stub = Stub(api_key=api_key, latency=latency, jitter=jitter, seed=seed)
    if config:
        stub.config.update(config)

    async def start():
        return await stub.listen(host, port), stub

    return run_in_thread(start, name="upstream-sim-stub")


def spawn_stub(
    *, latency: float = 0.0, jitter: float = 0.0, seed: int | None = None, api_key: str | None = None,
    host: str = LOOPBACK, port: int = 0,
) -> ProcessHandle:
    """Run a stub as `python -m upstream_sim.stub` in a process of its own."""
    args = ["--listen", f"{host}:{port}", "--latency", str(latency), "--jitter", str(jitter)]
    if seed is not None:
        args += ["--seed", str(seed)]
    if api_key is not None:
        args += ["--api-key", api_key]
    return spawn("upstream_sim.stub", args, control_prefix=CONTROL_PREFIX)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m upstream_sim.stub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default=f"{LOOPBACK}:0", help="HOST:PORT (port 0: a free one, printed)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each answer is held back")
    parser.add_argument("--jitter", type=float, default=0.0, help="up to this many more seconds, uniform")
    parser.add_argument("--seed", type=int, default=None, help="seed of the jitter draws")
    parser.add_argument("--api-key", default=None, help="require exactly this key (default: any non-empty one)")
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen(args.listen)
        stub = Stub(api_key=args.api_key, latency=args.latency, jitter=args.jitter, seed=args.seed)
        stub.config.update({"latency": args.latency, "jitter": args.jitter})
    except (ValueError, Invalid) as exc:
        parser.error(str(exc))

    async def start():
        return await stub.listen(host, port), stub

    serve_main(start)


if __name__ == "__main__":
    sys.exit(main())

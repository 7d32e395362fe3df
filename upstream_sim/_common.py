"""What the proxy and the stub share: the API's error envelope, route templates, the deterministic
key hash, `--listen` parsing, and the handles that run a server on a background thread of this
process or in a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"

# A server's own answers when the status is not a standard one (529 is the API's "overloaded").
_EXTRA_REASONS = {529: "Overloaded"}

_VERSION_SEGMENT = re.compile(r"v\d+")
_DIGIT = re.compile(r"\d")
_UPPER = re.compile(r"[A-Z]")


def reason(status: int) -> str:
    if status in _EXTRA_REASONS:
        return _EXTRA_REASONS[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_body(error_type: str, message: str, request_id: str) -> bytes:
    """The API's error envelope, as the real platform sends it."""
    return json.dumps(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id},
        separators=(",", ":"),
    ).encode()


def path_template(path: str) -> str:
    """`/v1/agents/agent_01HX…?version=2` → `/v1/agents/{id}`.

    A segment is an id when it has a digit or a capital letter (every prefixed id of the API does;
    route words such as `deployment_runs` do not), or is longer than 40 characters; `v1` stays.
    """
    path = path.split("?", 1)[0]
    segments = []
    for segment in path.split("/"):
        if segment and not _VERSION_SEGMENT.fullmatch(segment) and (
            _DIGIT.search(segment) or _UPPER.search(segment) or len(segment) > 40
        ):
            segments.append("{id}")
        else:
            segments.append(segment)
    return "/".join(segments)


def key_bucket(key: str, salt: str = "") -> float:
    """A stable number in [0, 100) for an Idempotency-Key: what `key_hash` rules select on."""
    digest = hashlib.sha256((salt + key).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100


def key_selected(key: str, percent: float, salt: str = "") -> bool:
    """Whether a `{"key_hash": {"percent": P, "salt": S}}` rule selects this key — the same function
    the proxy uses, so a test can predict which keys are hit."""
    return key_bucket(key, salt) < percent


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen must be HOST:PORT (port 0 picks a free one), got {value!r}")
    host = host.strip("[]") or LOOPBACK
    return host, int(port)


def parse_target(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"http://(\[[^\]]+\]|[^:/\[\]]+)(?::(\d+))?/?", value)
    if not match:
        raise ValueError(f"--target must be http://HOST:PORT, got {value!r}")
    port = int(match.group(2) or 80)
    if port > 65535:
        raise ValueError(f"--target port out of range: {value!r}")
    return match.group(1).strip("[]"), port


def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# --- control client ------------------------------------------------------------------------------

# Never through an HTTP proxy from the environment: these servers live on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def control_call(url: str, method: str, path: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise ValueError(f"{method} {path} answered {exc.code}: {detail}") from None


class _Control:
    url: str
    control_prefix: str

    def config(self, **fields: Any) -> dict:
        """Change the configuration (only the fields given); returns the whole configuration."""
        return control_call(self.url, "POST", f"{self.control_prefix}/config", fields)

    def current_config(self) -> dict:
        return control_call(self.url, "GET", f"{self.control_prefix}/config")

    def stats(self, *, keys: bool = True) -> dict:
        suffix = "" if keys else "?keys=0"
        return control_call(self.url, "GET", f"{self.control_prefix}/stats{suffix}")

    def reset(self) -> dict:
        return control_call(self.url, "POST", f"{self.control_prefix}/reset", {})

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Handle(_Control):
    """A server running on an event loop in a background thread of this process."""

    def __init__(self, *, url: str, app: Any, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.url = url
        self.app = app
        self.control_prefix = app.control_prefix
        self._loop = loop
        self._thread = thread

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def run_in_thread(start: Callable[[], Awaitable[tuple[asyncio.AbstractServer, Any]]], name: str) -> Handle:
    """Run `start()` (which returns the listening server and its app) on a new event loop in a
    daemon thread; return once it listens."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server, app = loop.run_until_complete(start())
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
            ready.set()
            loop.close()
            return
        box.update(server=server, app=app)
        ready.set()
        try:
            loop.run_forever()
        finally:
            _shutdown(loop, server, app)

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    if not ready.wait(15):
        raise RuntimeError(f"{name} did not start within 15 s")
    if "error" in box:
        raise box["error"]
    server = box["server"]
    host, port = server.sockets[0].getsockname()[:2]
    loop = server.get_loop()
    return Handle(url=url_for(host, port), app=box["app"], loop=loop, thread=thread)


def _shutdown(loop: asyncio.AbstractEventLoop, server: asyncio.AbstractServer, app: Any) -> None:
    server.close()
    app.close()
    loop.run_until_complete(asyncio.sleep(0.05))  # connection tasks see their sockets closed and end
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.wait(pending, timeout=5))
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def serve_main(start: Callable[[], Awaitable[tuple[asyncio.AbstractServer, Any]]]) -> None:
    """Command-line entry: listen, print `listening on URL` as the first stdout line, run until
    SIGTERM or SIGINT."""

    async def main() -> None:
        server, app = await start()
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on {url_for(host, port)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        server.close()
        app.close()
        await asyncio.sleep(0.05)  # connection tasks see their sockets closed and end

    asyncio.run(main())


# --- a server in a process of its own ------------------------------------------------------------


class ProcessHandle(_Control):
    """A server started as `python -m upstream_sim.<name>` (its own process, its own CPU)."""

    def __init__(self, *, url: str, process: subprocess.Popen, control_prefix: str):
        self.url = url
        self.process = process
        self.control_prefix = control_prefix

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout:
            self.process.stdout.close()


def spawn(module: str, args: list[str], *, control_prefix: str, ready_timeout: float = 20.0) -> ProcessHandle:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    line = b""
    deadline = time.monotonic() + ready_timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    text = line.decode().strip()
    if not text.startswith("listening on "):
        handle = ProcessHandle(url="", process=process, control_prefix=control_prefix)
        handle.stop()
        raise RuntimeError(f"{module} did not start (exit {process.returncode}): first line {text!r}")
    return ProcessHandle(url=text.removeprefix("listening on "), process=process, control_prefix=control_prefix)

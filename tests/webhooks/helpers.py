"""Helpers for the webhooks tests: a real receiving HTTP server, fake DNS, in-process delivery."""

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from webhooks_app import services, transport
from webhooks_app.auth import WEBHOOKS_BETA
from webhooks_app.events import EVENT_TYPES
from webhooks_app.models import WebhookDelivery

ALL_EVENTS = list(EVENT_TYPES)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0
    headers: dict = field(default_factory=dict)


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with `reply(request)`
    (default 200). `stop()` closes the port (a dead endpoint); `start()` opens the same port again."""

    def __init__(self):
        self.requests: list[Received] = []
        self.reply = lambda request: Reply()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 — http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with receiver._lock:
                    receiver.requests.append(request)
                reply = receiver.reply(request)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client gave up (timeout) or was killed
                    pass

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        with self._lock:
            return [request.webhook_id for request in self.requests]

    def wait_for(self, count: int, timeout: float = 20.0, *, distinct: bool = False) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = len(set(self.ids())) if distinct else len(self.ids())
            if seen >= count:
                break
            time.sleep(0.05)
        with self._lock:
            return list(self.requests)


class FakeDns:
    """Stands in for `transport.resolve`: IP literals resolve to themselves, `localhost` to
    127.0.0.1, names in `answers` to what is set there, anything else does not exist."""

    def __init__(self):
        self.answers: dict[str, list[str]] = {"localhost": ["127.0.0.1"], "hooks.example.com": ["93.184.216.34"]}
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        literal = transport.literal_address(host)
        if literal is not None:
            return [literal]
        if host.lower() in self.answers:
            return list(self.answers[host.lower()])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def pump() -> int:
    """What the doorbell's task does: fan out every recorded event and deliver it."""
    return services.events_dispatch()


def retry_now() -> dict:
    """Make every scheduled retry due, and run the sweep that publishes them."""
    WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).update(
        next_attempt_at=services.timezone.now(), published_at=None
    )
    return services.webhooks_sweep()


def webhooks_client(tenant, **extra):
    return tenant.client(HTTP_ANTHROPIC_BETA=WEBHOOKS_BETA, **extra)

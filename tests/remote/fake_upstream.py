"""A tiny stand-in for a remote platform: an HTTP server on 127.0.0.1 in a thread of the test
process that records every request and answers with whatever `answer` the test set."""

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 4 * 1024 * 1024


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    notes: dict = field(default_factory=dict)


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    handler.send_response(status)
    headers = {"Content-Type": "application/json", **(headers or {})}
    for name, value in headers.items():
        handler.send_header(name, value)
    if not any(name.lower() == "content-length" for name in headers):
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body:
        handler.wfile.write(body)


def send_json(handler: BaseHTTPRequestHandler, status: int, payload, headers: dict | None = None) -> None:
    send(handler, status, json.dumps(payload).encode(), headers)


def sse(event: str, data) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _default_answer(handler, received: Received) -> None:
    send_json(handler, 404, {"type": "error", "error": {"type": "not_found_error", "message": "fake: no answer set"}})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the connection closes after each answer: an event stream ends with it

    def log_message(self, format, *args):  # noqa: A002 — quiet: the test reads `requests`
        pass

    def _handle(self):
        fake: FakeUpstream = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, MAX_BODY)) if length else b""
        path, _, query = self.path.partition("?")
        received = Received(
            method=self.command, path=path, query=query,
            headers={name.lower(): value for name, value in self.headers.items()}, body=body,
        )
        with fake.lock:
            fake.requests.append(received)
        fake.answer(self, received)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that went away mid-answer (the point of some tests): noted, not printed.
        self.fake.errors.append(client_address)


class FakeUpstream:
    def __init__(self):
        self.requests: list[Received] = []
        self.errors: list = []
        self.lock = threading.Lock()
        self.answer = _default_answer
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

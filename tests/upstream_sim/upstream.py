"""A small HTTP/1.1 upstream for the proxy tests: records every request it receives, counts the
connections it accepts, and serves echoes, blobs, chunked bodies and SSE streams that wait for
the test before they finish."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BLOB = bytes(range(256)) * 512  # 128 KiB, every byte value


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class RecordingUpstream:
    def __init__(self):
        self.requests: list[Seen] = []
        self.connections = 0
        self.release = threading.Event()
        self.stream_finished = threading.Event()
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # an idle keep-alive connection ends its thread after this

            def setup(self):
                super().setup()
                with upstream._lock:
                    upstream.connections += 1

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._handle()

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                with upstream._lock:
                    upstream.requests.append(Seen(self.command, self.path, list(self.headers.items()), body))
                query = parse_qs(url.query)
                route = getattr(self, "route_" + url.path.strip("/").replace("-", "_"), None)
                if route is None:
                    self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"no route"}}')
                else:
                    route(body, query)

            def _send(self, status, body, content_type="application/json", extra=()):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def route_echo(self, body, query):
                status = int(query.get("status", ["200"])[0])
                self._send(status, body, "application/octet-stream",
                           extra=[("X-Upstream", "echo"), ("Keep-Alive", "timeout=5")])

            def route_blob(self, body, query):
                self._send(200, BLOB, "application/octet-stream")

            def route_chunked(self, body, query):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in (b"alpha", b"-", b"beta" * 1000):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")

            def route_sse(self, body, query):
                self._stream(chunked=True)

            def route_sse_close(self, body, query):
                self._stream(chunked=False)

            def _stream(self, chunked):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()

                def event(n):
                    data = b'event: message\ndata: {"n": %d}\n\n' % n
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                    self.wfile.flush()

                event(1)
                upstream.release.wait(10)  # the rest only once the test has seen the first event
                event(2)
                event(3)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                upstream.stream_finished.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def seen(self, path_prefix: str = "/") -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

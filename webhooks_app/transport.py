"""One HTTP(S) POST to a webhook endpoint, with the target checked where it is actually reached.

Server-side request forgery is the risk of any service that calls URLs its users give it. So:

- only `http` and `https`, no credentials in the URL;
- the host is resolved at delivery time and **every** address it resolves to is checked (loopback,
  private, link-local — 169.254.169.254 included —, multicast, unspecified, reserved, shared and
  other non-global ranges; IPv6 equivalents; IPv4 addresses embedded in IPv6 — mapped, compatible,
  6to4, NAT64 — judged as the IPv4 address they carry), then the connection is made to that checked
  address, never to a second lookup of the name (no DNS rebinding between check and connect);
- redirects are never followed (a 3xx is a failed attempt);
- the whole attempt (DNS, connect, TLS, request, response) has one deadline, and each read waits
  only for what is left of it, so a server that answers a byte at a time cannot hold a worker;
- the response is read only up to its status line, headers (at most 16 KB) and the first
  `excerpt_bytes` of its body, then the connection is closed.

`WEBHOOK_ALLOW_PRIVATE_TARGETS` (development and tests) lets private targets through.
No Django import: the delivery worker and the benchmarks use it as is.
"""

import concurrent.futures
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import h11

USER_AGENT = "scheduled-deployments-webhooks/1"
MAX_HEADER_BYTES = 16 * 1024
MAX_ADDRESSES_TRIED = 3
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Characters kept as they are in a request target; anything else (non-ASCII) is percent-encoded.
_URL_SAFE = "/?=&%:@!$'()*+,;~-._[]"
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class TargetRefused(Exception):
    """The URL names a target deliveries may not go to (the message says why, without the URL)."""


class AttemptFailed(Exception):
    """The attempt failed before a response came back (the message says how)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    host_header: str


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no HTTP response came back
    excerpt: bytes
    error: str
    duration_ms: float

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def answered(self) -> bool:
        """A response came back (whatever its status): the endpoint is reachable and quick enough."""
        return self.status is not None


# --- the target ----------------------------------------------------------------------------------


def parse_target(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("not a valid URL (bad host or port)")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused("only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("credentials in the URL are not allowed (deliveries are authenticated by their signature)")
    host = parts.hostname
    if not host:
        raise TargetRefused("the URL has no host")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise TargetRefused("the URL contains whitespace or control characters")
    if not host.isascii():
        try:  # an internationalized name travels in its ASCII (punycode) form
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise TargetRefused("the URL's host is not a valid host name")
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    path = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_URL_SAFE)
    return Target(scheme=scheme, host=host, port=port, path=path, host_header=host_header)


def literal_address(host: str) -> str | None:
    """The address a host names without any lookup (an IP literal, including the shorthand IPv4
    forms inet_aton reads: `127.1`, `2130706433`, `0x7f000001`), else None."""
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, UnicodeError, ValueError):
        return None


def address_problem(address: str) -> str | None:
    """Why deliveries may not go to this address, or None when it is a public one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip in _IPV4_COMPATIBLE and int(ip) > 1:
            embedded = ipaddress.IPv4Address(int(ip))
        if embedded is not None:
            problem = address_problem(str(embedded))
            return f"{problem} (IPv4 {embedded} inside IPv6)" if problem else None
        if ip.is_site_local:
            return "site-local"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def check_addresses(host: str, addresses: list[str]) -> None:
    for address in addresses:
        problem = address_problem(address)
        if problem:
            named = "" if literal_address(host) else f"{host[:100]} resolves to "
            raise TargetRefused(f"{named}{address} is a {problem} address")


# --- name resolution -------------------------------------------------------------------------------

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to (tests replace this to simulate DNS answers)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in seen:
            seen.append(sockaddr[0])
    return seen


def _lookup(host: str, port: int) -> list[str]:
    return resolve(host, port)


def resolve_within(host: str, port: int, timeout: float) -> list[str]:
    """`resolve` with a deadline: getaddrinfo itself has none (a dead resolver can take 10 s or
    more). A lookup that outlives the deadline finishes in the background and is ignored. An IP
    literal needs no lookup."""
    literal = literal_address(host)
    if literal is not None:
        return [host if "%" in host else literal]
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook-dns")
    future = _pool.submit(_lookup, host, port)
    try:
        addresses = future.result(timeout=max(timeout, 0.001))
    except concurrent.futures.TimeoutError:
        raise AttemptFailed(f"DNS lookup of {host[:100]} timed out")
    except socket.gaierror as exc:
        raise AttemptFailed(f"DNS lookup of {host[:100]} failed: {exc.strerror or exc}")
    except UnicodeError:
        raise AttemptFailed(f"{host[:100]} is not a valid host name")
    if not addresses:
        raise AttemptFailed(f"{host[:100]} has no address")
    return addresses


# --- the request -------------------------------------------------------------------------------------


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _connect(addresses: list[str], port: int, connect_timeout: float, deadline: float) -> socket.socket:
    last_error: OSError | None = None
    for address in addresses[:MAX_ADDRESSES_TRIED]:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(min(connect_timeout, _remaining(deadline)))
            sock.connect((address, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
            if isinstance(exc, TimeoutError) and time.monotonic() >= deadline:
                break
    assert last_error is not None
    raise last_error


def _exchange(sock, conn: h11.Connection, target: Target, body: bytes, headers: dict[str, str], deadline: float,
              excerpt_bytes: int) -> tuple[int, bytes, bool]:
    """One request and its response on `conn`: (status, body excerpt, the connection can carry the
    next request). Stops reading once the excerpt is full; a connection left mid-body is not reused."""
    request = h11.Request(
        method="POST",
        target=target.path,
        headers=[
            ("Host", target.host_header),
            ("User-Agent", USER_AGENT),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *headers.items(),
        ],
    )
    sock.settimeout(_remaining(deadline))
    sock.sendall(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    status: int | None = None
    excerpt = bytearray()
    complete = False
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            sock.settimeout(_remaining(deadline))
            conn.receive_data(sock.recv(8192))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            excerpt += event.data[: excerpt_bytes - len(excerpt)]
            if len(excerpt) >= excerpt_bytes:
                break
        elif isinstance(event, h11.EndOfMessage):
            complete = True
            break
        elif isinstance(event, h11.ConnectionClosed):
            break
        # h11.InformationalResponse (100 Continue and the like): keep reading.
    if status is None:
        raise AttemptFailed("the connection closed before a response")
    reusable = complete and conn.our_state is h11.DONE and conn.their_state is h11.DONE
    if reusable:
        conn.start_next_cycle()
    return status, bytes(excerpt), reusable


class Batch:
    """What the attempts of one batch to one endpoint share: each host is resolved (and checked)
    once per batch, at delivery time, failures included; and a kept-alive connection to the checked
    address is used again by the next attempt when the endpoint allows it."""

    def __init__(self):
        self._answers: dict[tuple[str, int], list[str] | AttemptFailed] = {}
        self._idle: tuple[tuple, socket.socket, h11.Connection] | None = None

    def lookup(self, host: str, port: int, timeout: float) -> list[str]:
        key = (host, port)
        if key not in self._answers:
            try:
                self._answers[key] = resolve_within(host, port, timeout)
            except AttemptFailed as exc:
                self._answers[key] = exc
        answer = self._answers[key]
        if isinstance(answer, AttemptFailed):
            raise answer
        return answer

    def take(self, key: tuple):
        idle, self._idle = self._idle, None
        if idle is not None and idle[0] == key:
            return idle[1], idle[2]
        if idle is not None:
            idle[1].close()
        return None

    def keep(self, key: tuple, sock: socket.socket, conn: h11.Connection) -> None:
        self.close()
        self._idle = (key, sock, conn)

    def close(self) -> None:
        if self._idle is not None:
            self._idle[1].close()
            self._idle = None


def _open(target: Target, addresses: list[str], connect_timeout: float, deadline: float):
    sock = _connect(addresses, target.port, connect_timeout, deadline)
    try:
        if target.scheme == "https":
            sock.settimeout(_remaining(deadline))
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
    except BaseException:
        sock.close()
        raise
    return sock, h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)


def _send(batch: Batch, target: Target, addresses: list[str], body: bytes, headers: dict[str, str],
          connect_timeout: float, deadline: float, excerpt_bytes: int) -> tuple[int, bytes]:
    key = (target.scheme, target.host, target.port, tuple(addresses))
    kept = batch.take(key)
    if kept is not None:
        sock, conn = kept
        try:
            status, excerpt, reusable = _exchange(sock, conn, target, body, headers, deadline, excerpt_bytes)
        except (OSError, AttemptFailed, h11.RemoteProtocolError):
            # The endpoint closed its idle connection meanwhile: a fresh one below.
            sock.close()
        else:
            if reusable:
                batch.keep(key, sock, conn)
            else:
                sock.close()
            return status, excerpt
    sock, conn = _open(target, addresses, connect_timeout, deadline)
    try:
        status, excerpt, reusable = _exchange(sock, conn, target, body, headers, deadline, excerpt_bytes)
    except BaseException:
        sock.close()
        raise
    if reusable:
        batch.keep(key, sock, conn)
    else:
        sock.close()
    return status, excerpt


def post(url: str, *, body: bytes, headers: dict[str, str], connect_timeout: float, total_timeout: float,
         excerpt_bytes: int = 1024, allow_private: bool = False, batch: Batch | None = None) -> Outcome:
    """POST `body` to `url` once. Never raises for anything the network or the target does. Pass
    the same `batch` to consecutive attempts to one endpoint (and close it after them)."""
    started = time.monotonic()
    deadline = started + total_timeout
    own_batch = batch is None
    batch = batch if batch is not None else Batch()

    def outcome(status=None, excerpt=b"", error=""):
        return Outcome(status, excerpt, error, round((time.monotonic() - started) * 1000, 3))

    try:
        target = parse_target(url)
        addresses = batch.lookup(target.host, target.port, _remaining(deadline))
        if not allow_private:
            check_addresses(target.host, addresses)
        status, excerpt = _send(batch, target, addresses, body, headers, connect_timeout, deadline, excerpt_bytes)
    except TargetRefused as exc:
        return outcome(error=f"target refused: {exc}")
    except AttemptFailed as exc:
        return outcome(error=str(exc))
    except TimeoutError:
        return outcome(error=f"timed out (the whole attempt may take {total_timeout:g} s)")
    except ssl.SSLError as exc:
        return outcome(error=f"TLS error: {exc.reason or type(exc).__name__}")
    except ConnectionRefusedError:
        return outcome(error="connection refused")
    except (h11.RemoteProtocolError, h11.LocalProtocolError) as exc:
        return outcome(error=f"invalid HTTP response: {str(exc)[:200]}")
    except OSError as exc:
        return outcome(error=f"connection error: {exc.strerror or type(exc).__name__}")
    except (ValueError, UnicodeError) as exc:  # a URL saved before a rule tightened, and the like
        return outcome(error=f"request not sent: {type(exc).__name__}")
    finally:
        if own_batch:
            batch.close()
    if 300 <= status < 400:
        return outcome(status, excerpt, f"redirect ({status}) not followed")
    if not 200 <= status < 300:
        return outcome(status, excerpt, f"HTTP {status}")
    return outcome(status, excerpt)

"""The Managed Agents endpoints forwarded to the remote platform (SESSION_GATEWAY=anthropic).

With the anthropic gateway, agents, environments, vaults and sessions live on the remote platform,
so `/v1/agents…`, `/v1/environments…`, `/v1/vaults…` and `/v1/sessions…` (a session's events and
their SSE stream included) are forwarded there instead of being answered by the built-in platform.
Whether to forward is decided per request from the settings.

A forwarded request is authenticated here first, like every /v1 request (an unknown key, a missing
beta header or a refused workspace never reaches the remote platform). It then goes out with the
organization's upstream credentials (accounts_app.upstream) in `x-api-key`, never the caller's key:
method, path, query string, body, and the headers that mean something to the platform. The
platform's answer comes back as it is — status, body, headers other than hop-by-hop ones — with a
`request-id` of ours (the platform's own is kept as `upstream-request-id`), except:

- no upstream credentials: 403 `permission_error` saying so and how to set them;
- the platform answers 401 (it refused the credentials): 403 `permission_error` saying whose
  credentials were refused and how to set new ones;
- the platform is unreachable, too slow, or answers 5xx with no body: 529 `overloaded_error`
  naming its host;
- an answer over MAX_RESPONSE_BYTES: 502 `api_error`.

Event streams (`text/event-stream`) are relayed chunk by chunk as they arrive, for at most
STREAM_MAX_SECONDS, and the upstream connection is closed as soon as the client goes away.
"""

import functools
import json
import logging
import os
import threading
import time
from urllib.parse import quote

import httpx2
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path, re_path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.views import APIView

from core.errors import InvalidRequest, NotFound, PermissionDeniedError, RequestTooLarge, envelope
from core.views import unknown_api_route
from accounts_app.upstream import display_host
from gateways import get_gateway

logger = logging.getLogger("gateways.passthrough")

FORWARDED_PREFIXES = ("agents", "environments", "vaults", "sessions")

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0
# An event stream may stay quiet while the agent works: this long without a byte ends it.
STREAM_IDLE_TIMEOUT_SECONDS = 600.0
STREAM_MAX_SECONDS = 6 * 3600.0
MAX_RESPONSE_BYTES = 10 * 1024 * 1024

# Request headers that mean something to the platform; with `anthropic-*` (but our workspace id,
# which names a workspace of this service, not of the upstream account) and the SDK's
# `x-stainless-*`. Everything else — the caller's `x-api-key` and `authorization` above all — stays here.
FORWARDED_REQUEST_HEADERS = frozenset({"content-type", "accept", "idempotency-key", "user-agent"})
NOT_FORWARDED_ANTHROPIC_HEADERS = frozenset({"anthropic-workspace-id"})

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade",
})
# Set again by us (length and encoding of what we send, our own request id and server headers),
# or meaningless to our caller (cookies of the upstream host).
NOT_RETURNED_RESPONSE_HEADERS = HOP_BY_HOP | {
    "content-length", "content-encoding", "request-id", "date", "server", "set-cookie", "alt-svc",
}


def forwarding_enabled() -> bool:
    return get_gateway().forwards_platform_api


# --- the shared HTTP client ------------------------------------------------------------------------

_client_lock = threading.Lock()
_client_state: dict = {"pid": None, "client": None}


def http_client() -> httpx2.Client:
    """One client (connection pool) per process; a forked child starts its own."""
    if _client_state["pid"] != os.getpid():
        with _client_lock:
            if _client_state["pid"] != os.getpid():
                _client_state["client"] = httpx2.Client(
                    follow_redirects=False,
                    timeout=httpx2.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
                    limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30),
                )
                _client_state["pid"] = os.getpid()
    return _client_state["client"]


# --- request -> upstream ---------------------------------------------------------------------------


def _upstream_path(request_path: str) -> str:
    """`/v1/...` re-quoted segment by segment. Empty and dot segments are refused: the remote
    platform must not be walked to any other path than the one asked for."""
    segments = request_path.split("/")[2:]  # "", "v1", ...
    if not segments or segments[0] not in FORWARDED_PREFIXES or any(s in ("", ".", "..") for s in segments):
        raise NotFound(f"no such endpoint: {request_path[:200]} (empty and dot path segments are not forwarded)")
    return "/v1/" + "/".join(quote(segment, safe="-._~!$&'()*+,;=:@") for segment in segments)


def _request_headers(request, api_key: str, streaming: bool) -> dict[str, bytes]:
    headers = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        if not value:
            continue
        if lowered in FORWARDED_REQUEST_HEADERS or lowered.startswith("x-stainless-") or (
            lowered.startswith("anthropic-") and lowered not in NOT_FORWARDED_ANTHROPIC_HEADERS
        ):
            # As they came in: WSGI hands header bytes over decoded as ISO-8859-1.
            try:
                headers[lowered] = value.encode("latin-1")
            except UnicodeEncodeError:
                raise InvalidRequest(f"{lowered}: header value is not valid ISO-8859-1") from None
    headers["x-api-key"] = api_key.encode("ascii")
    if streaming:
        # Compressed events would wait in a decompressor's buffer.
        headers["accept-encoding"] = b"identity"
    return headers


def _response_headers(upstream: httpx2.Response) -> list[tuple[str, str]]:
    named_by_connection = {
        token.strip().lower() for token in upstream.headers.get("connection", "").split(",") if token.strip()
    }
    kept = []
    for name, value in upstream.headers.multi_items():
        lowered = name.lower()
        if lowered in NOT_RETURNED_RESPONSE_HEADERS or lowered in named_by_connection or lowered.startswith("proxy-"):
            continue
        if lowered == "content-type":
            continue  # given to the response's constructor
        kept.append((lowered, value))
    if "request-id" in upstream.headers:
        kept.append(("upstream-request-id", upstream.headers["request-id"]))
    return kept


def _credentials_message(credentials, organization, host: str) -> str:
    whose = (
        "the shared default upstream credentials (ANTHROPIC_API_KEY)"
        if credentials.source == "default"
        else "this organization's upstream credentials"
    )
    return (
        f"the remote Managed Agents platform at {host} refused {whose} (HTTP 401): an operator sets new ones "
        f"with `python manage.py set_upstream_credentials --organization {organization.name}` or in the admin"
    )


def _no_credentials_message(organization) -> str:
    return (
        "this organization has no upstream credentials for the remote Managed Agents platform: an operator "
        f"sets them with `python manage.py set_upstream_credentials --organization {organization.name}` or in "
        "the admin (or sets ANTHROPIC_API_KEY as a default shared by every organization)"
    )


def _unavailable(request, host: str, why: str):
    logger.warning("upstream unavailable", extra={"upstream_host": host, "reason": why})
    return envelope(request, "overloaded_error", f"the remote Managed Agents platform at {host} {why}; try again later")


def _why(exc: Exception) -> str:
    if isinstance(exc, httpx2.TimeoutException):
        return f"did not answer in time ({type(exc).__name__})"
    return f"is unreachable ({type(exc).__name__})"


class _TooLarge(Exception):
    pass


def _read_bounded(upstream: httpx2.Response) -> bytes:
    declared = upstream.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES and not upstream.headers.get("content-encoding"):
        raise _TooLarge
    body = bytearray()
    for chunk in upstream.iter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise _TooLarge
    return bytes(body)


def _query(request) -> str:
    """The query string as it came in (WSGI hands it over decoded as ISO-8859-1); characters a URL
    cannot carry as they are go out percent-encoded, byte for byte."""
    raw = request.META.get("QUERY_STRING", "")
    return quote(raw, safe="!$&'()*+,;=:@/?%[]", encoding="latin-1") if raw else ""


def _request_body(request) -> bytes:
    body = request.body  # the middleware refuses a declared body over API_MAX_BODY_BYTES before we get here
    if len(body) > settings.API_MAX_BODY_BYTES:
        raise RequestTooLarge(f"request body is over the limit of {settings.API_MAX_BODY_BYTES} bytes")
    return body


def _is_event_stream(upstream: httpx2.Response) -> bool:
    return upstream.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def forward(request):
    """Send an authenticated API request (DRF Request, `request.user` a core.auth.Principal) to
    the organization's remote platform and return its answer."""
    from accounts_app.upstream import upstream_credentials

    django_request = getattr(request, "_request", request)
    upstream_path = _upstream_path(django_request.path)
    organization = request.user.organization
    credentials = upstream_credentials(organization=organization)
    if credentials is None:
        raise PermissionDeniedError(_no_credentials_message(organization))
    base_url = credentials.url
    host = display_host(base_url)
    streaming = upstream_path.endswith("/events/stream") or "text/event-stream" in django_request.headers.get("accept", "")
    headers = _request_headers(django_request, credentials.api_key, streaming)
    body = _request_body(django_request)
    query = _query(django_request)
    timeout = httpx2.Timeout(
        STREAM_IDLE_TIMEOUT_SECONDS if streaming else READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS
    )
    client = http_client()
    try:
        outgoing = client.build_request(
            django_request.method, base_url + upstream_path + (f"?{query}" if query else ""),
            content=body or None, headers=headers, timeout=timeout,
        )
        upstream = client.send(outgoing, stream=True)
    except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError) as exc:
        return _unavailable(request, host, _why(exc))
    if upstream.status_code < 300 and _is_event_stream(upstream):
        return _event_stream_response(upstream, host)
    return _answer(request, upstream, credentials, organization, host)


def _answer(request, upstream: httpx2.Response, credentials, organization, host: str):
    """A non-streamed answer, read to MAX_RESPONSE_BYTES, relayed as it is or mapped (401, 5xx
    without a body)."""
    try:
        content = _read_bounded(upstream)
    except _TooLarge:
        logger.warning("upstream answer too large", extra={"upstream_host": host, "limit": MAX_RESPONSE_BYTES})
        return envelope(
            request, "api_error",
            f"the remote Managed Agents platform at {host} answered with more than {MAX_RESPONSE_BYTES} bytes, "
            "the most this service relays",
            status=502,
        )
    except (httpx2.HTTPError, httpx2.StreamError) as exc:
        return _unavailable(request, host, _why(exc))
    finally:
        upstream.close()
    if upstream.status_code == 401:
        logger.warning("upstream refused the credentials", extra={"upstream_host": host, "source": credentials.source})
        raise PermissionDeniedError(_credentials_message(credentials, organization, host))
    if upstream.status_code >= 500 and not content.strip():
        return _unavailable(request, host, f"answered HTTP {upstream.status_code} with no body")
    content_type = upstream.headers.get("content-type") or "application/octet-stream"
    response = HttpResponse(content, status=upstream.status_code, content_type=content_type)
    for name, value in _response_headers(upstream):
        response.headers[name] = value
    return response


def _event_stream_response(upstream: httpx2.Response, host: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _relay(upstream, host), status=upstream.status_code, content_type=upstream.headers["content-type"]
    )
    for name, value in _response_headers(upstream):
        response.headers[name] = value
    response.headers.setdefault("cache-control", "no-cache")
    response.headers["x-accel-buffering"] = "no"  # a buffering reverse proxy would hold events back
    return response


def _relay(upstream: httpx2.Response, host: str):
    """Each chunk as it arrives. The server closes this generator when the client goes away (its
    next write fails), which closes the upstream connection."""
    deadline = time.monotonic() + STREAM_MAX_SECONDS
    try:
        for chunk in upstream.iter_bytes():
            if chunk:
                yield chunk
            if time.monotonic() > deadline:
                logger.info("event stream ended at its time bound", extra={"upstream_host": host})
                return
    except (httpx2.HTTPError, httpx2.StreamError) as exc:
        # Headers are sent: the client learns of it as the SDK reads errors in a stream.
        logger.warning("upstream event stream broke", extra={"upstream_host": host, "reason": type(exc).__name__})
        message = f"the remote Managed Agents platform at {host} {_why(exc)}"
        yield (
            "event: error\ndata: "
            + json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": message}})
            + "\n\n"
        ).encode()
    finally:
        upstream.close()


# --- views and URL wiring --------------------------------------------------------------------------


class PlatformPassthroughView(APIView):
    """Authentication, beta header, workspace and rate limit as for every /v1 request (DRF), then
    `forward`. Any Accept is fine: the answer is the platform's, JSON or an event stream."""

    schema = None  # not part of this service's own OpenAPI document
    http_method_names = ["get", "post", "put", "patch", "delete", "head"]

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)

    def get(self, request, *args, **kwargs):
        return forward(request)

    post = put = patch = delete = get


passthrough_view = PlatformPassthroughView.as_view()


def remote_or_local(local_view):
    """`local_view` with the built-in platform, the pass-through with a remote one (decided per
    request, so the setting can change under a running process's tests)."""

    @functools.wraps(local_view)
    def view(request, *args, **kwargs):
        if forwarding_enabled():
            return passthrough_view(request)
        return local_view(request, *args, **kwargs)

    return view


@csrf_exempt
def remote_only(request, **kwargs):
    """Paths the built-in platform does not serve (a session's events, ...): forwarded to a remote
    platform, the usual 404 otherwise."""
    if forwarding_enabled():
        return passthrough_view(request)
    return unknown_api_route(request, path=request.path.removeprefix("/v1/"))


def platform_urlpatterns(urlconf_module: str) -> list:
    """The built-in platform's URL patterns, each one forwarded instead when the platform is
    remote, followed by the other paths under the forwarded prefixes (a session's events and event
    stream by name, so metrics label them; anything else under the prefixes)."""
    import importlib

    wrapped = []
    for pattern in importlib.import_module(urlconf_module).urlpatterns:
        if not isinstance(pattern, URLPattern):
            raise ImproperlyConfigured(f"{urlconf_module}: only plain URL patterns can be forwarded, not {pattern!r}")
        wrapped.append(URLPattern(pattern.pattern, remote_or_local(pattern.callback), pattern.default_args, pattern.name))
    prefixes = "|".join(FORWARDED_PREFIXES)
    return wrapped + [
        path("sessions/<str:session_id>/events", remote_only, name="session-events"),
        path("sessions/<str:session_id>/events/stream", remote_only, name="session-events-stream"),
        re_path(rf"^(?:{prefixes})(?:/.*)?$", remote_only, name="platform-passthrough"),
    ]

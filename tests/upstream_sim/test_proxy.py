"""The latency and fault proxy: faithful HTTP/1.1 forwarding, streaming, latency, every fault
kind, the selection rules and the counters tests and benchmarks rely on."""

import json
import socket
import time

import pytest

from tests.upstream_sim.conftest import connect
from tests.upstream_sim.upstream import BLOB
from upstream_sim import key_selected, path_template

pytestmark = pytest.mark.timeout(120)


def _post(conn, path, body=b"", headers=None):
    conn.request("POST", path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def _raw_exchange(url: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send one raw request and read until the proxy closes or resets (ConnectionResetError)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


# --- forwarding ----------------------------------------------------------------------------------


def test_status_headers_and_body_are_forwarded_byte_for_byte(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    body = bytes(range(256)) * 40
    conn = connect(proxy.url)
    response, received = _post(conn, "/echo?status=201", body, {"X-Custom": "kept", "Content-Type": "application/octet-stream"})

    assert response.status == 201
    assert received == body
    assert response.getheader("X-Upstream") == "echo"
    assert response.getheader("Keep-Alive") is None  # hop-by-hop, dropped
    seen = upstream.seen("/echo")[0]
    assert seen.body == body
    assert seen.header("X-Custom") == "kept"
    assert seen.header("Host") == upstream.url.removeprefix("http://")

    conn.request("GET", "/blob")
    blob = conn.getresponse()
    assert blob.status == 200 and blob.read() == BLOB
    conn.close()


def test_hop_by_hop_request_headers_are_not_forwarded(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    conn = connect(proxy.url)
    _post(conn, "/echo", b"x", {"Connection": "keep-alive, X-Hop", "X-Hop": "secret-ish", "Keep-Alive": "timeout=1", "X-End": "1"})
    seen = upstream.seen("/echo")[0]
    assert seen.header("X-Hop") is None
    assert seen.header("Keep-Alive") is None
    assert seen.header("X-End") == "1"
    conn.close()


def test_a_chunked_request_body_reaches_the_upstream_whole_with_a_length(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    conn = connect(proxy.url)
    conn.request("POST", "/echo", body=iter([b"first;", b"second;", b"third"]), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.read() == b"first;second;third"
    seen = upstream.seen("/echo")[0]
    assert seen.header("Content-Length") == "18"
    assert seen.header("Transfer-Encoding") is None
    conn.close()


def test_a_chunked_response_is_relayed_whole(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    conn = connect(proxy.url)
    conn.request("GET", "/chunked")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.read() == b"alpha-" + b"beta" * 1000
    conn.close()


def test_connections_are_kept_alive_on_both_sides(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    conn = connect(proxy.url)
    conn.request("GET", "/echo")
    conn.getresponse().read()
    first_socket = conn.sock
    for i in range(20):
        response, body = _post(conn, "/echo", b"n%d" % i)
        assert body == b"n%d" % i
        assert response.getheader("Connection") == "keep-alive"
    assert conn.sock is first_socket  # http.client would have reconnected after a close
    assert upstream.connections == 1
    assert proxy.stats()["upstream_connections_opened"] == 1
    conn.close()


def test_connection_close_from_the_client_is_honoured(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    received = _raw_exchange(proxy.url, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in received


def test_expect_100_continue_is_answered_before_the_body(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"\r\n\r\nbody")
    assert upstream.seen("/echo")[0].header("Expect") is None


@pytest.mark.parametrize("path", ["/sse", "/sse-close"])
def test_an_sse_stream_is_relayed_event_by_event(upstream, make_proxy, path):
    """The upstream sends its first event, then waits for the test: the event can only arrive
    while the stream is still open upstream if the proxy forwards it at once."""
    proxy = make_proxy(target=upstream.url)
    conn = connect(proxy.url, timeout=8)
    conn.request("GET", path, headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    first = response.read1()
    assert b'data: {"n": 1}' in first
    assert not upstream.stream_finished.is_set()

    upstream.release.set()
    rest = response.read()
    assert b'data: {"n": 2}' in rest and b'data: {"n": 3}' in rest
    assert upstream.stream_finished.is_set()
    conn.close()


def test_the_configured_latency_is_added(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, latency=0.3)
    conn = connect(proxy.url)
    started = time.monotonic()
    response, _ = _post(conn, "/echo", b"x")
    assert response.status == 200
    assert time.monotonic() - started >= 0.29
    conn.close()


def test_an_unreachable_upstream_is_a_502_envelope(make_proxy):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    proxy = make_proxy(target=f"http://127.0.0.1:{port}")
    conn = connect(proxy.url)
    response, body = _post(conn, "/v1/sessions", b"{}")
    assert response.status == 502
    assert json.loads(body)["error"]["type"] == "api_error"
    assert response.getheader("request-id", "").startswith("req_proxy_")
    assert proxy.stats()["upstream_errors"] == {"connect": 1}
    conn.close()


# --- faults --------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_and_forwards_nothing(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults=[
        {"method": "POST", "path": "/v1/sessions", "fault": {"kind": "rate_limit", "retry_after": 2}},
    ])
    conn = connect(proxy.url)
    response, body = _post(conn, "/v1/sessions", b"{}", {"Idempotency-Key": "fire-1"})
    assert response.status == 429
    assert response.getheader("retry-after") == "2"
    envelope = json.loads(body)
    assert envelope["type"] == "error"
    assert envelope["error"]["type"] == "rate_limit_error"
    assert envelope["error"]["message"]
    assert upstream.seen("/v1") == []

    # the connection stays usable, and other routes pass
    response, body = _post(conn, "/echo", b"after")
    assert (response.status, body) == (200, b"after")
    conn.close()


@pytest.mark.parametrize(
    ("fault", "status", "error_type"),
    [("status:500", 500, "api_error"), ("status:502", 502, "api_error"), ("status", 503, "overloaded_error"),
     ({"kind": "status", "status": 529}, 529, "overloaded_error")],
)
def test_status_faults_answer_5xx_envelopes_and_forward_nothing(upstream, make_proxy, fault, status, error_type):
    proxy = make_proxy(target=upstream.url, faults=[{"path": "/v1/sessions", "fault": fault}])
    conn = connect(proxy.url)
    response, body = _post(conn, "/v1/sessions", b"{}")
    assert response.status == status
    assert json.loads(body)["error"]["type"] == error_type
    assert upstream.seen("/v1") == []
    assert proxy.stats()["faults_by_kind"] == {"status": 1}
    conn.close()


def test_reset_closes_the_connection_abruptly_before_answering(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults=[{"path": "/v1/sessions", "fault": "reset"}])
    with pytest.raises(ConnectionResetError):
        _raw_exchange(proxy.url, b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert upstream.seen("/v1") == []
    assert proxy.stats()["faults_by_kind"] == {"reset": 1}


def test_hang_holds_the_request_until_the_client_gives_up(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults=[{"path": "/v1/sessions", "fault": "hang"}])
    conn = connect(proxy.url, timeout=0.5)
    with pytest.raises(TimeoutError):
        _post(conn, "/v1/sessions", b"{}")
    assert proxy.stats()["in_flight"] == 1
    conn.close()
    for _ in range(100):  # the proxy lets go once the client has left
        if proxy.stats()["in_flight"] == 0:
            break
        time.sleep(0.05)
    stats = proxy.stats()
    assert stats["in_flight"] == 0
    assert stats["faults_by_kind"] == {"hang": 1}
    assert stats["forwarded_total"] == 0
    assert upstream.seen("/v1") == []


def test_hang_is_bounded_by_max_seconds(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults=[{"path": "/v1/sessions", "fault": {"kind": "hang", "max_seconds": 0.2}}])
    with pytest.raises(ConnectionResetError):
        _raw_exchange(proxy.url, b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", timeout=10)


def test_answer_lost_lets_the_upstream_act_but_never_answers(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults=[{"method": "POST", "path": "/echo", "fault": "answer_lost"}])
    with pytest.raises(ConnectionResetError):
        _raw_exchange(proxy.url, b"POST /echo HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\nContent-Length: 5\r\n\r\nhello")
    seen = upstream.seen("/echo")
    assert [(s.method, s.body) for s in seen] == [("POST", b"hello")]
    stats = proxy.stats()
    assert stats["forwarded_by_key"] == {"k": 1}
    assert stats["faults_by_key"] == {"k": {"answer_lost": 1}}


# --- selection rules and counters ----------------------------------------------------------------


def test_a_per_key_plan_decides_each_call_then_passes_and_counters_are_exact(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults=[
        {"method": "POST", "path": "/echo", "plan": ["rate_limit", "status:503", "pass", "status:500"]},
    ])
    conn = connect(proxy.url)
    statuses = {"a": [], "b": []}
    for key in ("a", "a", "b", "a", "a", "a", "b"):
        response, _ = _post(conn, "/echo", b"x", {"Idempotency-Key": key})
        statuses[key].append(response.status)
    _post(conn, "/echo", b"no key")  # a plan needs a key: passes
    conn.close()

    assert statuses == {"a": [429, 503, 200, 500, 200], "b": [429, 503]}
    stats = proxy.stats()
    assert stats["calls_by_key"] == {"a": 5, "b": 2}
    assert stats["forwarded_by_key"] == {"a": 2}
    assert stats["faults_by_key"] == {"a": {"rate_limit": 1, "status": 2}, "b": {"rate_limit": 1, "status": 1}}
    assert stats["faults_by_kind"] == {"rate_limit": 2, "status": 3}
    assert stats["requests_by_route"] == {"POST /echo": 8}
    assert stats["forwarded_by_route"] == {"POST /echo": 3}
    assert stats["idempotency_keys"] == 2 and stats["max_calls_per_key"] == 5
    assert len(upstream.seen("/echo")) == 3


def test_key_hash_selects_exactly_the_predicted_keys(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults=[
        {"path": "/echo", "fault": "rate_limit", "key_hash": {"percent": 40, "salt": "run-1"}},
    ])
    keys = [f"fire_{i:03d}" for i in range(60)]
    expected = {k for k in keys if key_selected(k, 40, "run-1")}
    assert 0 < len(expected) < len(keys)
    conn = connect(proxy.url)
    limited = set()
    for key in keys:
        response, _ = _post(conn, "/echo", b"x", {"Idempotency-Key": key})
        if response.status == 429:
            limited.add(key)
    conn.close()
    assert limited == expected
    assert set(proxy.stats()["faults_by_key"]) == expected


def test_a_burst_hits_only_the_next_n_matching_requests(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    config = proxy.config(rules=[{"method": "POST", "path": "/v1/*", "fault": "rate_limit", "burst": 3}])
    assert config["rules"][0]["remaining"] == 3
    conn = connect(proxy.url)
    conn.request("GET", "/v1/agents/agent_01HX")  # another method: not selected, burst untouched
    conn.getresponse().read()
    statuses = [_post(conn, "/v1/sessions", b"{}")[0].status for _ in range(5)]
    conn.close()
    assert statuses == [429, 429, 429, 404, 404]  # the recording upstream has no /v1 routes
    assert proxy.current_config()["rules"][0]["remaining"] == 0
    assert proxy.stats()["requests_by_route"] == {"GET /v1/agents/{id}": 1, "POST /v1/sessions": 5}


def test_a_probability_is_reproducible_with_a_seed(upstream, make_proxy):
    def pattern():
        proxy = make_proxy(target=upstream.url, seed=42, faults=[{"path": "/echo", "fault": "status", "probability": 0.5}])
        conn = connect(proxy.url)
        out = [_post(conn, "/echo", b"x")[0].status for _ in range(40)]
        conn.close()
        proxy.stop()
        return out

    first, second = pattern(), pattern()
    assert first == second
    assert 0 < first.count(503) < 40


def test_rules_are_tried_in_order_and_compose(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults={"rules": [
        {"method": "GET", "path": "/echo", "fault": "status:502"},
        {"path": "/echo", "key_hash": {"percent": 100}, "plan": ["rate_limit"]},
    ]})
    conn = connect(proxy.url)
    conn.request("GET", "/echo", headers={"Idempotency-Key": "k"})
    first = conn.getresponse()
    first.read()
    second, _ = _post(conn, "/echo", b"x", {"Idempotency-Key": "k"})
    third, _ = _post(conn, "/echo", b"x", {"Idempotency-Key": "k"})
    conn.close()
    assert [first.status, second.status, third.status] == [502, 429, 200]


# --- control API ---------------------------------------------------------------------------------


def test_a_bad_config_is_a_400_naming_the_field_and_changes_nothing(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, latency=0.0, faults=[{"path": "/echo", "fault": "reset"}])
    with pytest.raises(ValueError) as excinfo:
        proxy.config(latency=1, rules=[{"path": "/echo", "fault": {"kind": "teleport"}}])
    assert "400" in str(excinfo.value) and "rules[0].fault.kind" in str(excinfo.value)
    with pytest.raises(ValueError, match=r"rules\[0\]\.probability"):
        proxy.config(rules=[{"path": "/echo", "fault": "reset", "probability": 2}])
    with pytest.raises(ValueError, match="latency"):
        proxy.config(latency=-1)
    config = proxy.current_config()
    assert config["latency"] == 0.0
    assert config["rules"][0]["fault"] == {"kind": "reset"}


def test_reset_zeroes_the_counters_and_restarts_plans_and_bursts(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url, faults=[
        {"path": "/echo", "plan": ["rate_limit"]},
        {"path": "/blob", "fault": "rate_limit", "burst": 1},
    ])
    conn = connect(proxy.url)
    assert _post(conn, "/echo", b"x", {"Idempotency-Key": "k"})[0].status == 429
    assert _post(conn, "/blob")[0].status == 429
    assert _post(conn, "/echo", b"x", {"Idempotency-Key": "k"})[0].status == 200
    assert proxy.reset() == {"reset": True}
    stats = proxy.stats()
    assert (stats["requests_total"], stats["faults_total"], stats["calls_by_key"]) == (0, 0, {})
    assert _post(conn, "/echo", b"x", {"Idempotency-Key": "k"})[0].status == 429
    assert _post(conn, "/blob")[0].status == 429
    conn.close()


def test_control_requests_are_never_forwarded_or_counted(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    proxy.stats()
    proxy.current_config()
    conn = connect(proxy.url)
    conn.request("GET", "/__proxy__/nothing")
    response = conn.getresponse()
    assert response.status == 404
    assert json.loads(response.read())["error"]["type"] == "not_found_error"
    conn.close()
    assert upstream.requests == []
    assert proxy.stats()["requests_total"] == 0


def test_stats_group_requests_by_route_template(upstream, make_proxy):
    proxy = make_proxy(target=upstream.url)
    conn = connect(proxy.url)
    for path in ("/v1/agents/agent_01HXA?version=2", "/v1/agents/agent_01HXB", "/v1/deployment_runs", "/v1/deployments/depl_01J/run"):
        conn.request("GET", path)
        conn.getresponse().read()
    conn.close()
    assert proxy.stats(keys=False)["requests_by_route"] == {
        "GET /v1/agents/{id}": 2, "GET /v1/deployment_runs": 1, "GET /v1/deployments/{id}/run": 1,
    }
    assert "calls_by_key" not in proxy.stats(keys=False)


def test_path_template_replaces_ids_only():
    assert path_template("/v1/sessions") == "/v1/sessions"
    assert path_template("/v1/sessions/sesn_01J9ZQ3/events?beta=true") == "/v1/sessions/{id}/events"
    assert path_template("/v1/deployment_runs/drun_01ABC") == "/v1/deployment_runs/{id}"
    assert path_template("/v1/memory_stores") == "/v1/memory_stores"


def test_hundreds_of_concurrent_connections_are_served(make_proxy, stub):
    import asyncio

    proxy = make_proxy(target=stub.url, latency=0.2)
    host, port = proxy.url.removeprefix("http://").split(":")
    body = b'{"agent":"agent_01A","environment_id":"env_01A"}'

    async def one(i):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nanthropic-beta: managed-agents-2026-04-01\r\n"
            b"Idempotency-Key: key-%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (i, len(body), body)
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        session = json.loads(await reader.readexactly(length))
        writer.close()
        return head.split(b" ")[1], session["id"]

    async def many():
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(300))), 60)

    results = asyncio.run(many())
    assert [status for status, _ in results] == [b"200"] * 300
    assert len({session_id for _, session_id in results}) == 300
    stats = proxy.stats(keys=False)
    assert stats["forwarded_by_route"] == {"POST /v1/sessions": 300}
    assert stats["max_in_flight"] > 1
    assert stub.stats()["sessions_created"] == 300

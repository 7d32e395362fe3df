"""With SESSION_GATEWAY=anthropic, /v1/agents, /v1/environments, /v1/vaults and /v1/sessions (events
and their stream included) are forwarded to the organization's remote platform with its own
upstream credentials; here the remote platform is a second instance of this service (`upstream`)
or, for what that one does not have, a stand-in in this process (`fake_upstream`)."""

import gzip
import json
import logging
import threading
import time

import anthropic
import pytest
from anthropic.types.beta import BetaEnvironment, BetaManagedAgentsAgent, BetaManagedAgentsSession
from anthropic.types.beta.beta_managed_agents_vault import BetaManagedAgentsVault
from django.test import override_settings

from accounts_app.services import organization_upstream_credentials_set
from gateways import passthrough
from platform_app.models import Agent, Environment, Session, Vault
from tests.conftest import BETA, Tenant
from tests.remote.conftest import free_port
from tests.remote.fake_upstream import send, send_json, sse

pytestmark = pytest.mark.e2e

USER_MESSAGE = {"type": "user.message", "content": [{"type": "text", "text": "Run the weekly compliance scan."}]}
UPSTREAM_KEY = "sk-ant-api03-FakeUpstreamKeyOfAcme-0123456789ACME"
DEFAULT_KEY = "sk-ant-api03-SharedDefaultKeyOfTheInstall-00DEFAULT"


def message_event(event_id: str, text: str) -> dict:
    return {
        "type": "agent.message", "id": event_id, "processed_at": "2026-04-01T12:00:00Z",
        "content": [{"type": "text", "text": text}],
    }


def error_of(response) -> tuple[str, str]:
    body = response.json()
    assert body["type"] == "error" and body["request_id"] == response["request-id"]
    return body["error"]["type"], body["error"]["message"]


@pytest.fixture
def sdk_for(live_server):
    clients = []

    def make(tenant: Tenant) -> anthropic.Anthropic:
        client = tenant.sdk(live_server.url)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def acme_on_fake(fake_upstream, db):
    """Acme with its own credentials at the in-process stand-in."""
    acme = Tenant("Acme")
    organization_upstream_credentials_set(organization=acme.organization, api_key=UPSTREAM_KEY, base_url=fake_upstream.url)
    acme.organization.refresh_from_db()
    return acme


# --- against a second instance of this service ------------------------------------------------------


def test_the_docs_flow_runs_on_the_organizations_upstream(gateway_mode, upstream, sdk_for):
    acme = Tenant("Acme")
    remote = upstream.connect(acme)
    client = sdk_for(acme)

    agent = client.beta.agents.create(name="Triage", model="claude-sonnet-4-6", system="You triage issues.")
    environment = client.beta.environments.create(name="prod")
    vault = client.beta.vaults.create(display_name="Team credentials")
    BetaManagedAgentsAgent.model_validate(agent.to_dict(mode="json"))
    BetaEnvironment.model_validate(environment.to_dict(mode="json"))
    BetaManagedAgentsVault.model_validate(vault.to_dict(mode="json"))
    assert agent.id.startswith("agent_") and agent.version == 1 and agent.system == "You triage issues."

    assert client.beta.agents.retrieve(agent.id).name == "Triage"
    assert [a.id for a in client.beta.agents.list()] == [agent.id]
    session = client.beta.sessions.create(
        agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE], vault_ids=[vault.id],
        title="Weekly scan",
    )
    BetaManagedAgentsSession.model_validate(session.to_dict(mode="json"))
    assert (session.agent.id, session.agent.version, session.environment_id) == (agent.id, 1, environment.id)
    assert client.beta.sessions.retrieve(session.id).title == "Weekly scan"
    assert [s.id for s in client.beta.sessions.list()] == [session.id]

    # Everything was made by the upstream platform, for the upstream organization; nothing for Acme.
    for model, row_id in ((Agent, agent.id), (Environment, environment.id), (Vault, vault.id), (Session, session.id)):
        assert model.objects.get(pk=row_id).organization_id == remote.organization.id
    assert not Agent.objects.filter(organization=acme.organization).exists()
    assert not Session.objects.filter(organization=acme.organization).exists()
    assert remote.organization.id in upstream.log_text()


def test_answers_carry_our_request_id_and_the_upstreams_as_upstream_request_id(gateway_mode, upstream, sdk_for):
    acme = Tenant("Acme")
    upstream.connect(acme)
    client = sdk_for(acme)
    agent = client.beta.agents.create(name="Triage", model="claude-sonnet-4-6")
    raw = client.beta.agents.with_raw_response.retrieve(agent.id)
    ours, theirs = raw.headers["request-id"], raw.headers["upstream-request-id"]
    assert ours.startswith("req_") and theirs.startswith("req_") and ours != theirs
    assert theirs in upstream.log_text() and ours not in upstream.log_text()


def test_an_organization_never_reaches_anothers_remote_resources(gateway_mode, upstream, sdk_for):
    acme, globex = Tenant("Acme"), Tenant("Globex")
    upstream.connect(acme)
    upstream.connect(globex)
    a, g = sdk_for(acme), sdk_for(globex)
    agent = a.beta.agents.create(name="Triage", model="claude-sonnet-4-6")
    environment = a.beta.environments.create(name="prod")
    vault = a.beta.vaults.create(display_name="creds")
    session = a.beta.sessions.create(agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE])

    for fetch in (
        lambda: g.beta.agents.retrieve(agent.id),
        lambda: g.beta.environments.retrieve(environment.id),
        lambda: g.beta.vaults.retrieve(vault.id),
        lambda: g.beta.sessions.retrieve(session.id),
        lambda: g.beta.agents.update(agent.id, version=1, name="stolen"),
        lambda: g.beta.agents.archive(agent.id),
    ):
        with pytest.raises(anthropic.NotFoundError) as caught:
            fetch()
        assert caught.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.APIStatusError) as caught:
        g.beta.sessions.create(agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE])
    assert caught.value.status_code in (400, 404) and agent.id in caught.value.body["error"]["message"]
    assert list(g.beta.agents.list()) == [] and list(g.beta.sessions.list()) == []
    stored = Agent.objects.get(pk=agent.id)
    assert (stored.latest_version, stored.archived_at) == (1, None)
    assert [s.id for s in a.beta.sessions.list()] == [session.id]


def test_credentials_the_upstream_refuses_become_our_403_saying_so(gateway_mode, upstream, sdk_for):
    acme = Tenant("Acme")
    organization_upstream_credentials_set(
        organization=acme.organization, api_key="sk-sd-NotAKeyTheUpstreamKnows-000000", base_url=upstream.url
    )
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        sdk_for(acme).beta.agents.list()
    assert caught.value.status_code == 403
    assert caught.value.body["error"] == {
        "type": "permission_error",
        "message": f"the remote Managed Agents platform at 127.0.0.1:{upstream.server.port} refused this "
                   "organization's upstream credentials (HTTP 401): an operator sets new ones with "
                   "`python manage.py set_upstream_credentials --organization Acme` or in the admin",
    }


def test_refused_shared_default_credentials_are_named_as_such(upstream, sdk_for):
    acme = Tenant("Acme")
    with override_settings(SESSION_GATEWAY="anthropic", ANTHROPIC_API_KEY=DEFAULT_KEY, ANTHROPIC_BASE_URL=upstream.url):
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            sdk_for(acme).beta.environments.list()
    message = caught.value.body["error"]["message"]
    assert "refused the shared default upstream credentials (ANTHROPIC_API_KEY) (HTTP 401)" in message


def test_the_shared_default_serves_organizations_without_their_own(upstream, sdk_for):
    acme, globex = Tenant("Acme"), Tenant("Globex")
    shared = upstream.organization("Shared upstream account")
    with override_settings(SESSION_GATEWAY="anthropic", ANTHROPIC_API_KEY=shared.key, ANTHROPIC_BASE_URL=upstream.url):
        agent = sdk_for(acme).beta.agents.create(name="Triage", model="claude-sonnet-4-6")
        # One upstream account for both: that is what a shared default means (and the admin says so).
        assert sdk_for(globex).beta.agents.retrieve(agent.id).id == agent.id
    assert Agent.objects.get(pk=agent.id).organization_id == shared.organization.id


def test_no_key_or_secret_in_responses_or_logs(gateway_mode, upstream, sdk_for, caplog):
    caplog.set_level(logging.DEBUG)
    acme, globex = Tenant("Acme"), Tenant("Globex")
    remote = upstream.connect(acme)
    wrong = "sk-sd-WrongKeyForTheUpstream-1234567890"
    organization_upstream_credentials_set(organization=globex.organization, api_key=wrong, base_url=upstream.url)
    secrets = [acme.key, globex.key, remote.key, wrong]

    seen = []
    a = acme.client()
    created = a.post("/v1/agents", {"name": "Triage", "model": "claude-sonnet-4-6"}, format="json")
    assert created.status_code == 200
    seen += [created, a.get(f"/v1/agents/{created.json()['id']}"), a.get("/v1/agents/agent_nope")]
    refused = globex.client().get("/v1/agents")
    assert refused.status_code == 403
    seen.append(refused)
    organization_upstream_credentials_set(
        organization=globex.organization, api_key=wrong, base_url=f"http://127.0.0.1:{free_port()}"
    )
    down = globex.client().get("/v1/agents")
    assert down.status_code == 529
    seen.append(down)

    for response in seen:
        text = response.content.decode() + json.dumps(dict(response.headers))
        assert not [s for s in secrets if s in text]
    for record in caplog.records:
        text = record.getMessage() + str(record.__dict__)
        assert not [s for s in secrets if s in text], record.getMessage()
    assert not [s for s in secrets if s in upstream.log_text()]


# --- refusals that never reach the upstream ---------------------------------------------------------


def test_an_unknown_key_is_refused_before_any_upstream_call(gateway_mode, fake_upstream, acme_on_fake):
    with override_settings(ANTHROPIC_API_KEY=DEFAULT_KEY, ANTHROPIC_BASE_URL=fake_upstream.url):
        unknown = acme_on_fake.client(HTTP_X_API_KEY="sk-sd-unknown-key-0000000000000000")
        response = unknown.get("/v1/agents")
        assert response.status_code == 401
        assert error_of(response) == ("authentication_error", "invalid x-api-key")
        missing = acme_on_fake.client(HTTP_X_API_KEY="").post("/v1/sessions", {}, format="json")
        assert missing.status_code == 401
        no_beta = acme_on_fake.client(HTTP_ANTHROPIC_BETA="").get("/v1/sessions/sesn_x/events/stream")
        assert no_beta.status_code == 400 and "managed-agents-2026-04-01" in error_of(no_beta)[1]
        foreign_workspace = acme_on_fake.client(HTTP_ANTHROPIC_WORKSPACE_ID="wrkspc_nope").get("/v1/vaults")
        assert foreign_workspace.status_code == 403
    assert fake_upstream.requests == []


def test_no_credentials_at_all_is_a_403_saying_how_to_set_them(gateway_mode, tenant, api):
    response = api.get("/v1/agents")
    assert response.status_code == 403
    assert error_of(response) == (
        "permission_error",
        "this organization has no upstream credentials for the remote Managed Agents platform: an operator "
        "sets them with `python manage.py set_upstream_credentials --organization Acme` or in the admin "
        "(or sets ANTHROPIC_API_KEY as a default shared by every organization)",
    )


def test_a_body_over_the_limit_is_refused_here(gateway_mode, fake_upstream, acme_on_fake):
    with override_settings(API_MAX_BODY_BYTES=1000):
        response = acme_on_fake.client().post("/v1/agents", {"name": "x" * 2000, "model": "m"}, format="json")
    assert response.status_code == 413 and error_of(response)[0] == "request_too_large"
    assert fake_upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/agents/../deployments", "/v1/agents//x", "/v1/sessions/./sesn_1", "/v1/vaults/.."])
def test_paths_that_would_walk_elsewhere_upstream_are_404(gateway_mode, fake_upstream, acme_on_fake, path):
    response = acme_on_fake.client().get(path)
    assert response.status_code == 404 and error_of(response)[0] == "not_found_error"
    assert fake_upstream.requests == []


# --- what goes out, what comes back -----------------------------------------------------------------


def test_events_list_is_forwarded_with_the_upstream_key_query_and_platform_headers(
    gateway_mode, fake_upstream, acme_on_fake, sdk_for
):
    events = [message_event("sevt_1", "first"), message_event("sevt_2", "second")]
    fake_upstream.answer = lambda handler, received: send_json(
        handler, 200, {"data": events, "next_page": None}, {"Request-Id": "req_upstream_1"}
    )
    client = sdk_for(acme_on_fake)
    page = client.beta.sessions.events.list(
        "sesn_01abc", limit=2, order="desc", workspace_id=acme_on_fake.workspace.id,
    )
    assert [(e.id, e.type, e.content[0].text) for e in page.data] == [
        ("sevt_1", "agent.message", "first"), ("sevt_2", "agent.message", "second"),
    ]
    (received,) = fake_upstream.requests
    assert (received.method, received.path) == ("GET", "/v1/sessions/sesn_01abc/events")
    assert {"limit=2", "order=desc"} <= set(received.query.split("&"))
    assert received.headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in received.headers  # the caller's key, as the SDK sends it
    assert acme_on_fake.key not in json.dumps(received.headers)
    assert "anthropic-workspace-id" not in received.headers  # a workspace of this service, not of the upstream
    assert "managed-agents-2026-04-01" in received.headers["anthropic-beta"]
    assert received.headers["anthropic-version"] == client.default_headers["anthropic-version"]


def test_post_bodies_and_idempotency_keys_go_out_unchanged(gateway_mode, fake_upstream, acme_on_fake):
    fake_upstream.answer = lambda handler, received: send_json(handler, 200, {"id": "sesn_up", "type": "session"})
    body = json.dumps({"agent": "agent_x", "environment_id": "env_x", "metadata": {"ünï": "✓"}}).encode()
    query = "beta=true&created_at%5Bgte%5D=2026-04-01T00%3A00%3A00Z&types=user.message&types=agent.message"
    response = acme_on_fake.client(HTTP_IDEMPOTENCY_KEY="fire_0123").post(
        f"/v1/sessions?{query}", body, content_type="application/json"
    )
    assert response.status_code == 200 and response.json() == {"id": "sesn_up", "type": "session"}
    (received,) = fake_upstream.requests
    assert (received.method, received.path, received.query) == ("POST", "/v1/sessions", query)
    assert received.body == body
    assert received.headers["idempotency-key"] == "fire_0123"
    assert received.headers["content-type"] == "application/json"


def test_odd_requests_are_forwarded_or_refused_never_a_500(gateway_mode, fake_upstream, acme_on_fake):
    fake_upstream.answer = lambda handler, received: send_json(handler, 200, {"path": received.path})
    client = acme_on_fake.client()
    assert client.head("/v1/agents").status_code == 200
    assert client.put("/v1/agents/agent_x", {}, format="json").status_code == 200
    options = client.options("/v1/agents")
    assert options.status_code == 405 and error_of(options)[0] == "invalid_request_error"
    assert client.get("/v1/agents/agent_%C3%BC").json() == {"path": "/v1/agents/agent_%C3%BC"}
    assert client.get("/v1/vaults?display_name=a%20b&x=%FC&y=[1]").status_code == 200
    odd_header = acme_on_fake.client(HTTP_USER_AGENT="tool \u2603").get("/v1/agents")
    assert odd_header.status_code == 400
    assert error_of(odd_header) == ("invalid_request_error", "user-agent: header value is not valid ISO-8859-1")
    assert [(r.method, r.path) for r in fake_upstream.requests] == [
        ("HEAD", "/v1/agents"), ("PUT", "/v1/agents/agent_x"), ("GET", "/v1/agents/agent_%C3%BC"), ("GET", "/v1/vaults"),
    ]
    assert fake_upstream.requests[3].query == "display_name=a%20b&x=%FC&y=[1]"


def test_upstream_statuses_and_bodies_come_back_as_they_are(gateway_mode, fake_upstream, acme_on_fake):
    refusal = {"type": "error", "error": {"type": "invalid_request_error", "message": "name: too long"},
               "request_id": "req_up"}
    fake_upstream.answer = lambda handler, received: send_json(
        handler, 400, refusal, {"Request-Id": "req_up", "Retry-After": "3", "X-Upstream-Note": "kept"}
    )
    response = acme_on_fake.client().post("/v1/agents", {"name": "x"}, format="json")
    assert response.status_code == 400
    assert response.json() == refusal  # the upstream's own envelope, its request id included
    assert response["request-id"] != "req_up" and response["upstream-request-id"] == "req_up"
    assert response["retry-after"] == "3" and response["x-upstream-note"] == "kept"


def test_hop_by_hop_headers_are_dropped_and_compressed_bodies_decoded(gateway_mode, fake_upstream, acme_on_fake):
    payload = json.dumps({"data": [], "next_page": None}).encode()
    packed = gzip.compress(payload)
    fake_upstream.answer = lambda handler, received: send(handler, 200, packed, {
        "Content-Encoding": "gzip", "Connection": "keep-alive, X-Private-Hop", "Keep-Alive": "timeout=5",
        "X-Private-Hop": "1", "Trailer": "Expires", "Upgrade": "h2c", "Proxy-Authenticate": "Basic",
        "X-Kept": "yes",
    })
    response = acme_on_fake.client().get("/v1/vaults")
    assert response.status_code == 200 and response.content == payload
    names = {name.lower() for name in response.headers}
    assert not names & {"content-encoding", "connection", "keep-alive", "x-private-hop", "trailer", "upgrade",
                        "proxy-authenticate", "transfer-encoding"}
    assert response["x-kept"] == "yes"
    assert response["content-length"] == str(len(payload))


def test_redirects_are_returned_not_followed(gateway_mode, fake_upstream, acme_on_fake):
    fake_upstream.answer = lambda handler, received: send(
        handler, 307, b"", {"Location": f"{fake_upstream.url}/elsewhere"}
    )
    response = acme_on_fake.client().get("/v1/agents")
    assert response.status_code == 307 and response["location"] == f"{fake_upstream.url}/elsewhere"
    assert [r.path for r in fake_upstream.requests] == ["/v1/agents"]


def test_an_answer_over_the_bound_is_refused(gateway_mode, fake_upstream, acme_on_fake, monkeypatch):
    monkeypatch.setattr(passthrough, "MAX_RESPONSE_BYTES", 1000)
    fake_upstream.answer = lambda handler, received: send(handler, 200, b"[" + b"0," * 1000 + b"0]")
    response = acme_on_fake.client().get("/v1/agents")
    assert response.status_code == 502
    assert error_of(response) == (
        "api_error",
        f"the remote Managed Agents platform at 127.0.0.1:{fake_upstream.port} answered with more than 1000 bytes, "
        "the most this service relays",
    )


# --- an upstream that is down, slow or failing -------------------------------------------------------


def test_an_unreachable_upstream_is_529_naming_its_host(gateway_mode, acme_on_fake):
    port = free_port()  # nothing listens there
    organization_upstream_credentials_set(
        organization=acme_on_fake.organization, api_key=UPSTREAM_KEY, base_url=f"http://127.0.0.1:{port}"
    )
    response = acme_on_fake.client().get("/v1/sessions")
    assert response.status_code == 529
    assert error_of(response) == (
        "overloaded_error",
        f"the remote Managed Agents platform at 127.0.0.1:{port} is unreachable (ConnectError); try again later",
    )
    assert UPSTREAM_KEY not in response.content.decode()


def test_an_upstream_too_slow_to_answer_is_529(gateway_mode, fake_upstream, acme_on_fake, monkeypatch):
    monkeypatch.setattr(passthrough, "READ_TIMEOUT_SECONDS", 0.3)
    finished = threading.Event()

    def slow(handler, received):
        finished.wait(timeout=10)  # until the test is over
        send_json(handler, 200, {"data": [], "next_page": None})

    fake_upstream.answer = slow
    try:
        response = acme_on_fake.client().get("/v1/environments")
    finally:
        finished.set()
    assert response.status_code == 529
    assert error_of(response)[1] == (
        f"the remote Managed Agents platform at 127.0.0.1:{fake_upstream.port} did not answer in time "
        "(ReadTimeout); try again later"
    )


def test_a_5xx_without_body_is_529_and_with_a_body_comes_back_as_it_is(gateway_mode, fake_upstream, acme_on_fake):
    fake_upstream.answer = lambda handler, received: send(handler, 503, b"")
    response = acme_on_fake.client().get("/v1/agents")
    assert response.status_code == 529
    assert error_of(response)[1] == (
        f"the remote Managed Agents platform at 127.0.0.1:{fake_upstream.port} answered HTTP 503 with no body; "
        "try again later"
    )
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "r"}
    fake_upstream.answer = lambda handler, received: send_json(handler, 529, overloaded)
    response = acme_on_fake.client().get("/v1/agents")
    assert response.status_code == 529 and response.json() == overloaded


# --- the event stream --------------------------------------------------------------------------------


def test_events_stream_relays_each_event_before_the_upstream_finishes(gateway_mode, fake_upstream, acme_on_fake, sdk_for):
    client_has_first = threading.Event()

    def slow_stream(handler, received):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.write(sse("agent.message", message_event("sevt_1", "working on it")))
        handler.wfile.flush()
        # The rest only once the client has the first event: with buffering anywhere on the way it
        # never would, and the wait would run out.
        received.notes["client_had_first_event"] = client_has_first.wait(timeout=15)
        handler.wfile.write(sse("agent.message", message_event("sevt_2", "done")))
        handler.wfile.flush()

    fake_upstream.answer = slow_stream
    stream = sdk_for(acme_on_fake).beta.sessions.events.stream("sesn_01abc")
    events = iter(stream)
    first = next(events)
    assert (first.type, first.id, first.content[0].text) == ("agent.message", "sevt_1", "working on it")
    assert "client_had_first_event" not in fake_upstream.requests[0].notes  # the upstream is still waiting
    client_has_first.set()
    assert [event.id for event in events] == ["sevt_2"]
    assert fake_upstream.requests[0].notes["client_had_first_event"] is True
    (received,) = fake_upstream.requests
    assert received.path == "/v1/sessions/sesn_01abc/events/stream"
    assert received.headers["x-api-key"] == UPSTREAM_KEY
    assert received.headers["accept-encoding"] == "identity"


def test_the_upstream_stream_is_closed_when_the_client_goes_away(gateway_mode, fake_upstream, acme_on_fake, sdk_for):
    upstream_saw_close = threading.Event()

    def endless(handler, received):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.write(sse("agent.message", message_event("sevt_1", "hello")))
        handler.wfile.flush()
        for _ in range(400):  # at most 20 s of pings
            time.sleep(0.05)
            try:
                handler.wfile.write(sse("ping", {}))
                handler.wfile.flush()
            except OSError:
                upstream_saw_close.set()
                return

    fake_upstream.answer = endless
    with sdk_for(acme_on_fake).beta.sessions.events.stream("sesn_01abc") as stream:
        assert next(iter(stream)).id == "sevt_1"
    assert upstream_saw_close.wait(timeout=20)


def test_a_stream_that_breaks_ends_with_an_error_event(gateway_mode, fake_upstream, acme_on_fake, sdk_for, monkeypatch):
    monkeypatch.setattr(passthrough, "STREAM_IDLE_TIMEOUT_SECONDS", 0.5)
    finished = threading.Event()

    def stalls(handler, received):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.write(sse("agent.message", message_event("sevt_1", "hello")))
        handler.wfile.flush()
        finished.wait(timeout=10)

    fake_upstream.answer = stalls
    events = iter(sdk_for(acme_on_fake).beta.sessions.events.stream("sesn_01abc"))
    try:
        assert next(events).id == "sevt_1"
        with pytest.raises(anthropic.APIStatusError) as caught:
            next(events)
    finally:
        finished.set()
    assert caught.value.body["error"] == {
        "type": "overloaded_error",
        "message": f"the remote Managed Agents platform at 127.0.0.1:{fake_upstream.port} did not answer in time "
                   "(ReadTimeout)",
    }


# --- the built-in platform is untouched in local mode -----------------------------------------------


def test_local_mode_keeps_the_built_in_platform(fake_upstream, acme_on_fake):
    with override_settings(SESSION_GATEWAY="local"):
        client = acme_on_fake.client()
        created = client.post("/v1/agents", {"name": "Local", "model": "claude-sonnet-4-6"}, format="json")
        assert created.status_code == 200
        assert Agent.objects.get(pk=created.json()["id"]).organization_id == acme_on_fake.organization.id
        events = client.get("/v1/sessions/sesn_01abc/events")
        assert events.status_code == 404
        assert error_of(events) == ("not_found_error", "no such endpoint: GET /v1/sessions/sesn_01abc/events")
    assert fake_upstream.requests == []


def test_the_beta_header_is_required_as_everywhere(gateway_mode, fake_upstream, acme_on_fake):
    response = acme_on_fake.client(HTTP_ANTHROPIC_BETA="something-else").get("/v1/agents")
    assert response.status_code == 400
    assert error_of(response)[1] == f"the anthropic-beta header must include {BETA} (got 'something-else')"
    assert fake_upstream.requests == []

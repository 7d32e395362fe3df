"""The stub upstream: the official SDK drives it (directly and through the proxy), its answers
parse into the SDK's models, idempotency keys hold, and configured archived or missing resources
are refused the way the platform refuses them."""

import json
import time

import anthropic
import pytest
from anthropic.types.beta import (
    BetaEnvironment,
    BetaManagedAgentsAgent,
    BetaManagedAgentsSession,
    BetaManagedAgentsVault,
)

from tests.upstream_sim.conftest import connect, sdk
from upstream_sim import spawn_proxy, spawn_stub

pytestmark = pytest.mark.timeout(120)

EVENTS = [{"type": "user.message", "content": [{"type": "text", "text": "Run the weekly scan."}]}]


def _create(client, key: str | None = None, **overrides):
    params = {"agent": {"type": "agent", "id": "agent_01STUB", "version": 1}, "environment_id": "env_01STUB",
              "initial_events": EVENTS}
    params.update(overrides)
    headers = {"Idempotency-Key": key} if key else {}
    return client.beta.sessions.create(**params, extra_headers=headers)


def test_the_sdk_creates_and_parses_a_session(stub):
    client = sdk(stub.url)
    raw = client.beta.sessions.with_raw_response.create(
        agent="agent_01STUB", environment_id="env_01STUB", initial_events=EVENTS,
        vault_ids=["vlt_01STUB"], metadata={"fire": "f1"}, title="Weekly scan",
        resources=[{"type": "github_repository", "url": "https://github.com/acme/app.git", "authorization_token": "ghp_secret"}],
        extra_headers={"Idempotency-Key": "fire-1"},
    )
    payload = json.loads(raw.http_response.content)
    session = BetaManagedAgentsSession.model_validate(payload)  # strict: every required field, right types
    assert session.id.startswith("sesn_") and len(session.id) == 33
    assert (session.agent.id, session.agent.version) == ("agent_01STUB", 1)
    assert session.environment_id == "env_01STUB"
    assert session.vault_ids == ["vlt_01STUB"]
    assert session.metadata == {"fire": "f1"}
    assert session.title == "Weekly scan"
    assert session.status == "idle"
    assert session.resources[0].type == "github_repository" and session.resources[0].mount_path == "/workspace/app"
    assert b"ghp_secret" not in raw.http_response.content
    assert raw.headers["request-id"].startswith("req_stub_")

    retrieved = client.beta.sessions.retrieve(session.id)
    assert retrieved.id == session.id and retrieved.created_at == session.created_at
    client.close()


def test_the_same_idempotency_key_returns_the_same_session(stub):
    client = sdk(stub.url)
    first = _create(client, "fire-7")
    again = _create(client, "fire-7")
    other = _create(client, "fire-8")
    unkeyed = [_create(client).id for _ in range(2)]
    client.close()
    assert again.id == first.id
    assert other.id != first.id
    assert unkeyed[0] != unkeyed[1]
    stats = stub.stats()
    assert stats["sessions_created"] == 4
    assert stats["idempotency_keys"] == 2
    assert stats["idempotent_replays"] == 1
    assert stats["requests_by_route"] == {"POST /v1/sessions": 5}
    assert stats["responses_by_status"] == {"200": 5}


def test_agent_environment_and_vault_lookups_parse_into_the_sdk_models(make_stub):
    stub = make_stub(config={"agent_versions": {"agent_01MAIN": 3}, "rosters": {"agent_01MAIN": ["agent_01SUB"]},
                             "archived": ["env_01OLD"]})
    client = sdk(stub.url)
    raw = client.beta.agents.with_raw_response.retrieve("agent_01MAIN")
    agent = BetaManagedAgentsAgent.model_validate(json.loads(raw.http_response.content))
    assert agent.version == 3 and agent.archived_at is None
    assert [(m.id, m.version) for m in agent.multiagent.agents] == [("agent_01SUB", 1)]
    assert client.beta.agents.retrieve("agent_01MAIN", version=2).version == 2

    env_raw = client.beta.environments.with_raw_response.retrieve("env_01OLD")
    environment = BetaEnvironment.model_validate(json.loads(env_raw.http_response.content))
    assert environment.id == "env_01OLD" and environment.archived_at is not None

    vault_raw = client.beta.vaults.with_raw_response.retrieve("vlt_01ANY")
    vault = BetaManagedAgentsVault.model_validate(json.loads(vault_raw.http_response.content))
    assert vault.id == "vlt_01ANY" and vault.archived_at is None

    session_raw = client.beta.sessions.with_raw_response.create(agent="agent_01MAIN", environment_id="env_01NEW")
    session = BetaManagedAgentsSession.model_validate(json.loads(session_raw.http_response.content))
    assert session.agent.version == 3
    assert [a.id for a in session.agent.multiagent.agents] == ["agent_01SUB"]
    client.close()
    assert stub.stats()["requests_by_route"] == {
        "GET /v1/agents/{id}": 2, "GET /v1/environments/{id}": 1, "GET /v1/vaults/{id}": 1, "POST /v1/sessions": 1,
    }


@pytest.mark.parametrize(
    ("config", "overrides", "error", "message"),
    [
        ({"missing": ["agent_01GONE"]}, {"agent": "agent_01GONE"}, anthropic.NotFoundError, "agent agent_01GONE not found"),
        ({"archived": ["agent_01OLD"]}, {"agent": "agent_01OLD"}, anthropic.BadRequestError, "agent agent_01OLD is archived"),
        ({}, {"agent": {"type": "agent", "id": "agent_01STUB", "version": 4}}, anthropic.NotFoundError, "has no version 4"),
        ({"missing": ["env_01GONE"]}, {"environment_id": "env_01GONE"}, anthropic.NotFoundError, "environment env_01GONE not found"),
        ({"archived": ["env_01OLD"]}, {"environment_id": "env_01OLD"}, anthropic.BadRequestError, "environment env_01OLD is archived"),
        ({"missing": ["vlt_01GONE"]}, {"vault_ids": ["vlt_01OK", "vlt_01GONE"]}, anthropic.NotFoundError, "vault vlt_01GONE not found"),
        ({"archived": ["vlt_01OLD"]}, {"vault_ids": ["vlt_01OLD"]}, anthropic.BadRequestError, "vault vlt_01OLD is archived"),
        ({"rosters": {"agent_01STUB": ["agent_01SUB"]}, "archived": ["agent_01SUB"]}, {}, anthropic.BadRequestError,
         "subagent agent_01SUB in the roster of agent agent_01STUB is archived"),
    ],
)
def test_configured_missing_or_archived_resources_are_refused_by_name(stub, config, overrides, error, message):
    stub.config(**config)
    client = sdk(stub.url)
    with pytest.raises(error) as excinfo:
        _create(client, "fire-x", **overrides)
    client.close()
    assert message in excinfo.value.body["error"]["message"]
    stats = stub.stats()
    assert stats["sessions_created"] == 0
    assert stats["responses_by_status"] == {str(excinfo.value.status_code): 1}


def test_lookups_of_missing_resources_are_404s(stub):
    stub.config(missing=["agent_01GONE", "env_01GONE", "vlt_01GONE"])
    client = sdk(stub.url)
    for call in (lambda: client.beta.agents.retrieve("agent_01GONE"),
                 lambda: client.beta.environments.retrieve("env_01GONE"),
                 lambda: client.beta.vaults.retrieve("vlt_01GONE"),
                 lambda: client.beta.sessions.retrieve("sesn_01NEVERCREATED")):
        with pytest.raises(anthropic.NotFoundError):
            call()
    client.close()


def test_the_beta_query_flag_is_accepted_beside_the_version(make_stub):
    stub = make_stub(config={"agent_versions": {"agent_01A": 2}})
    conn = connect(stub.url)
    headers = {"x-api-key": "k", "anthropic-beta": "files-api-2025-04-14, managed-agents-2026-04-01"}
    conn.request("GET", "/v1/agents/agent_01A?beta=true&version=2", headers=headers)
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["version"] == 2
    conn.request("GET", "/v1/agents/agent_01A?version=x", headers=headers)
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["error"]["message"].startswith("version:")
    conn.close()


def test_a_key_is_required_and_an_exact_one_when_configured(make_stub):
    open_stub = make_stub()
    conn = connect(open_stub.url)
    conn.request("GET", "/v1/agents/agent_01A", headers={"anthropic-beta": "managed-agents-2026-04-01"})
    response = conn.getresponse()
    assert response.status == 401
    assert json.loads(response.read())["error"]["type"] == "authentication_error"
    conn.request("GET", "/v1/agents/agent_01A", headers={"x-api-key": "anything"})
    response = conn.getresponse()
    assert response.status == 400
    assert "managed-agents-2026-04-01" in json.loads(response.read())["error"]["message"]
    conn.close()

    locked = make_stub(api_key="sk-right")
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=locked.url, api_key="sk-wrong", max_retries=0).beta.agents.retrieve("agent_01A")
    right = anthropic.Anthropic(base_url=locked.url, api_key="sk-right", max_retries=0)
    assert right.beta.agents.retrieve("agent_01A").id == "agent_01A"
    right.close()


def test_bad_bodies_are_400s_naming_the_field(stub):
    conn = connect(stub.url)
    headers = {"x-api-key": "k", "anthropic-beta": "managed-agents-2026-04-01", "Content-Type": "application/json"}
    for body, field in ((b"not json", "JSON"), (b"[]", "JSON object"), (b'{"environment_id": "env_01A"}', "agent"),
                        (b'{"agent": "agent_01A"}', "environment_id"),
                        (b'{"agent": "agent_01A", "environment_id": "env_01A", "vault_ids": "vlt"}', "vault_ids")):
        conn.request("POST", "/v1/sessions", body=body, headers=headers)
        response = conn.getresponse()
        assert response.status == 400
        assert field in json.loads(response.read())["error"]["message"]
    conn.close()


def test_answers_are_held_back_by_the_latency(make_stub):
    stub = make_stub(latency=0.25)
    client = sdk(stub.url)
    started = time.monotonic()
    _create(client, "fire-1")
    assert time.monotonic() - started >= 0.24
    client.close()
    assert stub.stats()["max_in_flight"] == 1


def test_through_the_proxy_a_lost_answer_is_recovered_with_the_same_key(stub, make_proxy):
    """What the gateway relies on: the session was created, the answer never came; a retry with
    the same Idempotency-Key returns that session and creates nothing."""
    proxy = make_proxy(target=stub.url, latency=0.01, faults=[
        {"method": "POST", "path": "/v1/sessions", "plan": ["answer_lost", "rate_limit"]},
    ])
    client = sdk(proxy.url)
    with pytest.raises(anthropic.APIConnectionError):
        _create(client, "fire-42")
    assert stub.stats()["sessions_created"] == 1  # the upstream acted

    with pytest.raises(anthropic.RateLimitError) as excinfo:
        _create(client, "fire-42")
    assert excinfo.value.response.headers["retry-after"] == "1"

    recovered = _create(client, "fire-42")
    assert recovered.id == client.beta.sessions.retrieve(recovered.id).id
    client.close()
    stub_stats, proxy_stats = stub.stats(), proxy.stats()
    assert stub_stats["sessions_created"] == 1
    assert stub_stats["idempotent_replays"] == 1
    assert proxy_stats["calls_by_key"] == {"fire-42": 3}
    assert proxy_stats["forwarded_by_key"] == {"fire-42": 2}
    assert proxy_stats["faults_by_key"] == {"fire-42": {"answer_lost": 1, "rate_limit": 1}}


def test_reset_forgets_sessions_and_counters(stub):
    client = sdk(stub.url)
    first = _create(client, "fire-1")
    assert stub.reset() == {"reset": True}
    assert stub.stats()["sessions_created"] == 0
    assert _create(client, "fire-1").id != first.id
    client.close()


def test_a_bad_stub_config_is_a_400_and_changes_nothing(stub):
    with pytest.raises(ValueError, match="agent_versions"):
        stub.config(agent_versions={"agent_01A": 0})
    with pytest.raises(ValueError, match="colour"):
        stub.config(colour="blue")
    assert stub.current_config()["agent_versions"] == {}


def test_both_run_as_their_own_processes_from_the_command_line():
    stub = spawn_stub(latency=0.01, api_key="sk-cli")
    try:
        proxy = spawn_proxy(target=stub.url, seed=1, faults=[{"path": "/v1/sessions", "fault": "rate_limit", "burst": 1}])
        try:
            assert stub.url.startswith("http://127.0.0.1:") and proxy.url.startswith("http://127.0.0.1:")
            client = anthropic.Anthropic(base_url=proxy.url, api_key="sk-cli", max_retries=0)
            with pytest.raises(anthropic.RateLimitError):
                _create(client, "fire-1")
            session = _create(client, "fire-1")
            client.close()
            assert session.id.startswith("sesn_")
            assert proxy.stats()["faults_by_kind"] == {"rate_limit": 1}
            assert stub.stats()["sessions_created"] == 1
        finally:
            proxy.stop()
        assert proxy.process.returncode == 0
    finally:
        stub.stop()
    assert stub.process.returncode == 0

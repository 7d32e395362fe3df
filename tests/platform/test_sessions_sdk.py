"""client.beta.sessions.create/retrieve/list through the official SDK."""

import json

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsSession

from platform_app.models import Session
from tests.platform.conftest import USER_MESSAGE, api_message, strict

TOKEN = "ghp_SECRETSECRETSECRET1234567890"


@pytest.fixture
def world(sdk):
    helper = sdk.beta.agents.create(name="helper", model="claude-haiku-4-5", system="help")
    agent = sdk.beta.agents.create(
        name="lead", model="claude-sonnet-4-6", multiagent={"type": "coordinator", "agents": [helper.id]}
    )
    environment = sdk.beta.environments.create(name="env")
    vault = sdk.beta.vaults.create(display_name="creds")
    return {"helper": helper, "agent": agent, "environment": environment, "vault": vault}


def test_create_returns_an_sdk_session_pinned_to_the_latest_version(sdk, world):
    agent, environment, vault = world["agent"], world["environment"], world["vault"]
    sdk.beta.agents.update(agent.id, system="second version")
    session = sdk.beta.sessions.create(
        agent=agent.id,
        environment_id=environment.id,
        initial_events=[USER_MESSAGE],
        vault_ids=[vault.id],
        metadata={"source": "test"},
        title="First run",
        budget={"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}},
    )
    strict(BetaManagedAgentsSession, session)
    assert session.id.startswith("sesn_")
    assert session.type == "session"
    assert session.status == "idle"
    assert session.agent.id == agent.id and session.agent.version == 2
    assert session.agent.system == "second version"
    assert session.environment_id == environment.id
    assert session.vault_ids == [vault.id]
    assert session.metadata == {"source": "test"}
    assert session.title == "First run"
    assert session.budget.max_list_cost.amount == "2500"
    assert session.deployment_id is None
    assert session.outcome_evaluations == []
    roster = session.agent.multiagent.agents
    assert [(a.id, a.version, a.name, a.system) for a in roster] == [(world["helper"].id, 1, "helper", "help")]

    row = Session.objects.get(pk=session.id)
    assert (row.agent_id, row.agent_version, row.environment_id) == (agent.id, 2, environment.id)
    assert row.initial_events == [USER_MESSAGE]


def test_create_with_a_versioned_agent_reference(sdk, world):
    agent = world["agent"]
    sdk.beta.agents.update(agent.id, name="renamed")
    session = sdk.beta.sessions.create(agent={"type": "agent", "id": agent.id, "version": 1}, environment_id=world["environment"].id)
    strict(BetaManagedAgentsSession, session)
    assert (session.agent.version, session.agent.name) == (1, "lead")


def test_unknown_agent_version_is_404(sdk, world):
    with pytest.raises(anthropic.NotFoundError) as error:
        sdk.beta.sessions.create(agent={"type": "agent", "id": world["agent"].id, "version": 9}, environment_id=world["environment"].id)
    assert api_message(error.value) == f"agent {world['agent'].id} has no version 9"


def test_define_outcome_events_get_an_outcome_evaluation(sdk, world):
    outcome = {"type": "user.define_outcome", "description": "A report", "rubric": {"type": "text", "content": "Cites sources"}, "max_iterations": 2}
    session = sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id, initial_events=[USER_MESSAGE, outcome])
    strict(BetaManagedAgentsSession, session)
    (evaluation,) = session.outcome_evaluations
    assert (evaluation.description, evaluation.result, evaluation.iteration) == ("A report", "pending", 0)
    assert evaluation.outcome_id.startswith("outc_")
    assert sdk.beta.sessions.retrieve(session.id).outcome_evaluations[0].outcome_id == evaluation.outcome_id


def test_github_token_is_dropped_from_the_response_and_the_row(sdk, world):
    resources = [
        {"type": "github_repository", "url": "https://github.com/acme/app", "authorization_token": TOKEN, "checkout": {"type": "branch", "name": "main"}},
        {"type": "file", "file_id": "file_011"},
        {"type": "memory_store", "memory_store_id": "memstore_01", "access": "read_only"},
    ]
    raw = sdk.beta.sessions.with_raw_response.create(agent=world["agent"].id, environment_id=world["environment"].id, resources=resources)
    assert TOKEN not in raw.http_response.text
    session = raw.parse()
    strict(BetaManagedAgentsSession, session)
    repo, file, store = session.resources
    assert (repo.type, repo.url, repo.mount_path, repo.checkout.name) == ("github_repository", "https://github.com/acme/app", "/workspace/app", "main")
    assert repo.id.startswith("sesrsc_")
    assert (file.file_id, file.mount_path) == ("file_011", "/mnt/session/uploads/file_011")
    assert (store.memory_store_id, store.access) == ("memstore_01", "read_only")
    assert not hasattr(repo, "authorization_token") or repo.authorization_token is None

    stored = Session.objects.get(pk=session.id).resources
    assert TOKEN not in json.dumps(stored)
    assert "authorization_token" not in stored[0]
    assert TOKEN not in sdk.beta.sessions.with_raw_response.retrieve(session.id).http_response.text


def test_retrieve_and_list(sdk, world):
    agent, environment = world["agent"], world["environment"]
    other_agent = sdk.beta.agents.create(name="solo", model="claude-haiku-4-5")
    first = sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    second = sdk.beta.sessions.create(agent=other_agent.id, environment_id=environment.id)
    fetched = sdk.beta.sessions.retrieve(first.id)
    strict(BetaManagedAgentsSession, fetched)
    assert fetched.id == first.id and fetched.created_at == first.created_at

    listed = list(sdk.beta.sessions.list())
    for item in listed:
        strict(BetaManagedAgentsSession, item)
    assert [s.id for s in listed] == [second.id, first.id]
    assert [s.id for s in sdk.beta.sessions.list(order="asc")] == [first.id, second.id]
    assert [s.id for s in sdk.beta.sessions.list(agent_id=agent.id)] == [first.id]
    assert [s.id for s in sdk.beta.sessions.list(agent_id=agent.id, agent_version=2)] == []
    assert [s.id for s in sdk.beta.sessions.list(statuses=["idle"])] == [second.id, first.id]
    assert [s.id for s in sdk.beta.sessions.list(statuses=["running", "terminated"])] == []
    assert [s.id for s in sdk.beta.sessions.list(created_at_gt=first.created_at)] == [second.id]


def test_list_filters_by_memory_store(sdk, world):
    store = {"type": "memory_store", "memory_store_id": "memstore_A"}
    with_store = sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id, resources=[store])
    sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id)
    assert [s.id for s in sdk.beta.sessions.list(memory_store_id="memstore_A")] == [with_store.id]


def test_list_auto_pages_both_orders(sdk, world):
    ids = [sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id).id for _ in range(23)]
    page = sdk.beta.sessions.list(limit=10)
    assert len(page.data) == 10 and page.next_page and page.prev_page is None
    assert [s.id for s in sdk.beta.sessions.list(limit=10)] == list(reversed(ids))
    assert [s.id for s in sdk.beta.sessions.list(limit=10, order="asc")] == ids


def test_idempotency_key_returns_the_same_session(sdk, world):
    args = {"agent": world["agent"].id, "environment_id": world["environment"].id, "extra_headers": {"Idempotency-Key": "fire-123"}}
    first = sdk.beta.sessions.create(**args)
    second = sdk.beta.sessions.create(**args)
    assert second.id == first.id
    assert Session.objects.filter(idempotency_key="fire-123").count() == 1
    third = sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id)
    assert third.id != first.id


def test_the_same_key_from_another_organization_makes_another_session(sdk, world, other_tenant, live_server):
    key = {"Idempotency-Key": "shared-key"}
    mine = sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id, extra_headers=key)
    other = other_tenant.sdk(live_server.url)
    their_agent = other.beta.agents.create(name="theirs", model="claude-haiku-4-5")
    their_env = other.beta.environments.create(name="theirs")
    theirs = other.beta.sessions.create(agent=their_agent.id, environment_id=their_env.id, extra_headers=key)
    assert theirs.id != mine.id
    assert Session.objects.filter(idempotency_key="shared-key").count() == 2


def test_rate_limit_answers_429_with_retry_after(sdk, world, tenant):
    tenant.organization.session_rate_limit_per_minute = 3
    tenant.organization.save()
    args = {"agent": world["agent"].id, "environment_id": world["environment"].id}
    replayed = sdk.beta.sessions.create(**args, extra_headers={"Idempotency-Key": "k1"})
    for _ in range(2):
        sdk.beta.sessions.create(**args)
    with pytest.raises(anthropic.RateLimitError) as error:
        sdk.beta.sessions.create(**args)
    assert error.value.status_code == 429
    assert error.value.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(error.value.response.headers["retry-after"]) <= 60
    assert sdk.beta.sessions.create(**args, extra_headers={"Idempotency-Key": "k1"}).id == replayed.id
    assert Session.objects.filter(organization=tenant.organization).count() == 3


def test_rate_limit_setting_applies_when_the_organization_has_none(sdk, world, settings):
    settings.LOCAL_SESSION_RATE_LIMIT_PER_MINUTE = 1
    sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id)
    with pytest.raises(anthropic.RateLimitError):
        sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id)


def test_creating_after_the_subagent_is_archived_is_refused(sdk, world):
    sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id)
    sdk.beta.agents.archive(world["helper"].id)
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk.beta.sessions.create(agent=world["agent"].id, environment_id=world["environment"].id)
    assert api_message(error.value) == f"subagent {world['helper'].id} of agent {world['agent'].id} is archived"

"""client.beta.agents.* and client.beta.agents.versions.list through the official SDK."""

from datetime import datetime

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsAgent

from platform_app.models import Agent, AgentVersion
from tests.platform.conftest import api_message, strict

TOOLS = [
    {"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": False}]},
    {"type": "mcp_toolset", "mcp_server_name": "docs"},
    {
        "type": "custom",
        "name": "lookup_ticket",
        "description": "Find a ticket by id",
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    },
]


def test_create_returns_an_sdk_agent_with_every_field(sdk):
    agent = sdk.beta.agents.create(
        name="Triage",
        model={"id": "claude-sonnet-4-6", "effort": "high"},
        system="You triage issues.",
        description="Labels new issues",
        tools=TOOLS,
        mcp_servers=[{"type": "url", "name": "docs", "url": "https://mcp.example.com/sse"}],
        skills=[{"type": "anthropic", "skill_id": "xlsx"}],
        metadata={"team": "support"},
    )
    strict(BetaManagedAgentsAgent, agent)
    assert agent.id.startswith("agent_")
    assert agent.type == "agent"
    assert agent.version == 1
    assert agent.name == "Triage"
    assert agent.model.id == "claude-sonnet-4-6"
    assert agent.model.effort.type == "high"
    assert agent.system == "You triage issues."
    assert agent.description == "Labels new issues"
    assert agent.metadata == {"team": "support"}
    assert agent.multiagent is None
    assert agent.execution_identity.type == "service_account"
    assert agent.archived_at is None
    assert isinstance(agent.created_at, datetime) and agent.created_at.tzinfo is not None
    toolset, mcp, custom = agent.tools
    assert toolset.type == "agent_toolset_20260401"
    assert toolset.default_config.enabled is True
    assert [(c.name, c.enabled, c.permission_policy.type) for c in toolset.configs] == [("bash", False, "always_allow")]
    assert mcp.mcp_server_name == "docs" and mcp.default_config.permission_policy.type == "always_ask"
    assert custom.name == "lookup_ticket" and custom.input_schema.required == ["id"]
    assert agent.mcp_servers[0].url == "https://mcp.example.com/sse"
    assert (agent.skills[0].skill_id, agent.skills[0].version) == ("xlsx", "latest")
    assert AgentVersion.objects.get(agent_id=agent.id).version == 1


def test_a_model_string_becomes_a_model_config(sdk):
    agent = sdk.beta.agents.create(name="Plain", model="claude-haiku-4-5")
    strict(BetaManagedAgentsAgent, agent)
    assert agent.model.id == "claude-haiku-4-5"
    assert agent.model.speed == "standard"
    assert agent.tools == [] and agent.skills == [] and agent.mcp_servers == [] and agent.metadata == {}


def test_update_makes_a_new_version_and_keeps_the_old_one(sdk):
    created = sdk.beta.agents.create(name="Writer", model="claude-sonnet-4-6", system="v1", metadata={"a": "1", "b": "2"})
    updated = sdk.beta.agents.update(created.id, system="v2", metadata={"a": None, "c": "3"}, version=1)
    strict(BetaManagedAgentsAgent, updated)
    assert updated.version == 2
    assert updated.system == "v2"
    assert updated.name == "Writer"
    assert updated.metadata == {"b": "2", "c": "3"}

    latest = sdk.beta.agents.retrieve(created.id)
    assert (latest.version, latest.system) == (2, "v2")
    first = sdk.beta.agents.retrieve(created.id, version=1)
    strict(BetaManagedAgentsAgent, first)
    assert (first.version, first.system, first.metadata) == (1, "v1", {"a": "1", "b": "2"})


def test_update_clears_description_and_system_with_null_or_empty(sdk):
    created = sdk.beta.agents.create(name="A", model="claude-sonnet-4-6", system="s", description="d")
    updated = sdk.beta.agents.update(created.id, system=None, description="")
    assert (updated.system, updated.description, updated.version) == (None, None, 2)


def test_update_with_a_stale_version_is_refused(sdk):
    created = sdk.beta.agents.create(name="A", model="claude-sonnet-4-6")
    sdk.beta.agents.update(created.id, name="B")
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk.beta.agents.update(created.id, name="C", version=1)
    assert "version" in error.value.message and "at version 2" in error.value.message
    assert Agent.objects.get(pk=created.id).latest_version == 2


def test_versions_only_grow_and_list_newest_first(sdk):
    created = sdk.beta.agents.create(name="v1", model="claude-sonnet-4-6")
    for n in range(2, 5):
        assert sdk.beta.agents.update(created.id, name=f"v{n}").version == n
    versions = list(sdk.beta.agents.versions.list(created.id, limit=3))
    for version in versions:
        strict(BetaManagedAgentsAgent, version)
    assert [v.version for v in versions] == [4, 3, 2, 1]
    assert [v.name for v in versions] == ["v4", "v3", "v2", "v1"]


def test_archive_hides_the_agent_from_lists_unless_asked(sdk):
    kept = sdk.beta.agents.create(name="kept", model="claude-sonnet-4-6")
    gone = sdk.beta.agents.create(name="gone", model="claude-sonnet-4-6")
    archived = sdk.beta.agents.archive(gone.id)
    strict(BetaManagedAgentsAgent, archived)
    assert archived.archived_at is not None
    assert [a.id for a in sdk.beta.agents.list()] == [kept.id]
    assert {a.id for a in sdk.beta.agents.list(include_archived=True)} == {kept.id, gone.id}
    assert sdk.beta.agents.retrieve(gone.id).archived_at == archived.archived_at
    again = sdk.beta.agents.archive(gone.id)
    assert again.archived_at == archived.archived_at


def test_updating_an_archived_agent_is_refused(sdk):
    created = sdk.beta.agents.create(name="A", model="claude-sonnet-4-6")
    sdk.beta.agents.archive(created.id)
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk.beta.agents.update(created.id, name="B")
    assert f"agent {created.id} is archived" in error.value.message


def test_list_auto_pages_over_25_agents_newest_first(sdk):
    ids = [sdk.beta.agents.create(name=f"agent {n}", model="claude-sonnet-4-6").id for n in range(25)]
    first_page = sdk.beta.agents.list(limit=10)
    assert len(first_page.data) == 10 and first_page.next_page
    seen = [agent.id for agent in sdk.beta.agents.list(limit=10)]
    assert seen == list(reversed(ids))


def test_list_filters_by_creation_time(sdk):
    first = sdk.beta.agents.create(name="first", model="claude-sonnet-4-6")
    second = sdk.beta.agents.create(name="second", model="claude-sonnet-4-6")
    assert [a.id for a in sdk.beta.agents.list(created_at_gte=second.created_at)] == [second.id]
    assert [a.id for a in sdk.beta.agents.list(created_at_lte=first.created_at)] == [first.id]


def test_coordinator_roster_is_resolved_to_pinned_versions(sdk):
    helper = sdk.beta.agents.create(name="helper", model="claude-haiku-4-5")
    sdk.beta.agents.update(helper.id, system="newer")
    other = sdk.beta.agents.create(name="other", model="claude-haiku-4-5")
    lead = sdk.beta.agents.create(
        name="lead",
        model="claude-opus-4-6",
        multiagent={
            "type": "coordinator",
            "agents": [helper.id, {"type": "agent", "id": other.id, "version": 1}, {"type": "self"}, {"type": "advisor", "model": "claude-opus-4-6"}],
        },
    )
    strict(BetaManagedAgentsAgent, lead)
    roster = lead.multiagent.agents
    assert lead.multiagent.type == "coordinator"
    assert [(a.type, getattr(a, "id", None), getattr(a, "version", None)) for a in roster] == [
        ("agent", helper.id, 2),
        ("agent", other.id, 1),
        ("agent", lead.id, 1),
        ("advisor", None, None),
    ]
    updated = sdk.beta.agents.update(lead.id, name="lead v2")
    assert [(a.id, a.version) for a in updated.multiagent.agents[:3]] == [(helper.id, 2), (other.id, 1), (lead.id, 2)]


def test_multiagent_20261001_takes_defaults_and_merges_on_update(sdk):
    helper = sdk.beta.agents.create(name="helper", model="claude-haiku-4-5")
    lead = sdk.beta.agents.create(
        name="lead",
        model="claude-opus-4-6",
        multiagent={"type": "multiagent_20261001", "subagents": {"type": "enabled", "predefined_agents": [helper.id]}},
    )
    strict(BetaManagedAgentsAgent, lead)
    config = lead.multiagent
    assert config.type == "multiagent_20261001"
    assert config.advisor.type == "disabled"
    assert config.subagents.inline_agents.type == "enabled"
    assert [(a.id, a.version) for a in config.subagents.predefined_agents] == [(helper.id, 1)]
    assert config.workflows.type == "enabled" and config.workflows.predefined_agents == []

    updated = sdk.beta.agents.update(
        lead.id, multiagent={"type": "multiagent_20261001", "advisor": {"type": "enabled", "model": "claude-opus-4-6"}}
    )
    strict(BetaManagedAgentsAgent, updated)
    assert updated.multiagent.advisor.model == "claude-opus-4-6"
    assert [a.id for a in updated.multiagent.subagents.predefined_agents] == [helper.id]
    cleared = sdk.beta.agents.update(lead.id, multiagent=None)
    assert cleared.multiagent is None and cleared.version == 3


def test_a_roster_naming_an_archived_agent_is_refused(sdk):
    helper = sdk.beta.agents.create(name="helper", model="claude-haiku-4-5")
    sdk.beta.agents.archive(helper.id)
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk.beta.agents.create(name="lead", model="claude-opus-4-6", multiagent={"type": "coordinator", "agents": [helper.id]})
    assert api_message(error.value) == f"multiagent.agents[0]: agent {helper.id} is archived"


def test_a_roster_naming_an_unknown_agent_is_404(sdk):
    with pytest.raises(anthropic.NotFoundError) as error:
        sdk.beta.agents.create(name="lead", model="claude-opus-4-6", multiagent={"type": "coordinator", "agents": ["agent_nope"]})
    assert api_message(error.value) == "multiagent.agents[0]: agent agent_nope not found"


def test_subagents_cannot_have_their_own_roster(sdk):
    leaf = sdk.beta.agents.create(name="leaf", model="claude-haiku-4-5")
    middle = sdk.beta.agents.create(name="middle", model="claude-haiku-4-5", multiagent={"type": "coordinator", "agents": [leaf.id]})
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk.beta.agents.create(name="top", model="claude-opus-4-6", multiagent={"type": "coordinator", "agents": [middle.id]})
    assert "multiagent.agents[0]" in error.value.message and "cannot nest" in error.value.message

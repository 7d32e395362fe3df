"""Every platform resource belongs to one organization and workspace: others get 404, never 403."""

import pytest

from platform_app import services
from platform_app.models import Agent, Environment, Session, Vault
from tests.conftest import Tenant
from tests.platform.conftest import USER_MESSAGE

pytestmark = pytest.mark.django_db


def assert_404(response, *names):
    assert response.status_code == 404, response.content
    body = response.json()
    assert body["error"]["type"] == "not_found_error"
    for name in names:
        assert name in body["error"]["message"]
    return body


@pytest.fixture
def theirs(other_tenant, make_agent, make_environment, make_vault):
    agent = make_agent(other_tenant, name="their agent")
    environment = make_environment(other_tenant)
    session, _ = services.session_create(
        organization=other_tenant.organization, workspace=other_tenant.workspace, agent=agent.id, environment_id=environment.id
    )
    return {"agent": agent, "environment": environment, "vault": make_vault(other_tenant), "session": session}


def test_another_organizations_rows_are_404_everywhere(api, theirs):
    agent_id, env_id, vault_id = theirs["agent"].id, theirs["environment"].id, theirs["vault"].id
    assert_404(api.get(f"/v1/agents/{agent_id}"), agent_id)
    assert_404(api.post(f"/v1/agents/{agent_id}", {"name": "mine now"}, format="json"), agent_id)
    assert_404(api.post(f"/v1/agents/{agent_id}/archive"), agent_id)
    assert_404(api.get(f"/v1/agents/{agent_id}/versions"), agent_id)
    assert_404(api.get(f"/v1/environments/{env_id}"), env_id)
    assert_404(api.post(f"/v1/environments/{env_id}", {"name": "x"}, format="json"), env_id)
    assert_404(api.post(f"/v1/environments/{env_id}/archive"), env_id)
    assert_404(api.get(f"/v1/vaults/{vault_id}"), vault_id)
    assert_404(api.post(f"/v1/vaults/{vault_id}", {"display_name": "x"}, format="json"), vault_id)
    assert_404(api.post(f"/v1/vaults/{vault_id}/archive"), vault_id)
    assert_404(api.get(f"/v1/sessions/{theirs['session'].id}"), theirs["session"].id)

    assert Agent.objects.get(pk=agent_id).archived_at is None
    assert Agent.objects.get(pk=agent_id).latest_version == 1
    assert Environment.objects.get(pk=env_id).archived_at is None
    assert Vault.objects.get(pk=vault_id).archived_at is None


def test_lists_show_only_the_callers_rows(api, theirs, make_agent, make_environment):
    mine = make_agent(name="mine")
    env = make_environment()
    for path in ("/v1/agents", "/v1/environments", "/v1/vaults", "/v1/sessions"):
        ids = [row["id"] for row in api.get(path).json()["data"]]
        assert not set(ids) & {theirs["agent"].id, theirs["environment"].id, theirs["vault"].id, theirs["session"].id}
    assert [row["id"] for row in api.get("/v1/agents").json()["data"]] == [mine.id]
    assert [row["id"] for row in api.get("/v1/environments").json()["data"]] == [env.id]


def test_a_session_naming_another_organizations_agent_is_404_naming_it(api, theirs, make_environment):
    env = make_environment()
    body = {"agent": theirs["agent"].id, "environment_id": env.id, "initial_events": [USER_MESSAGE]}
    assert_404(api.post("/v1/sessions", body, format="json"), f"agent {theirs['agent'].id} not found")
    assert list(Session.objects.filter(agent_id=theirs["agent"].id)) == [theirs["session"]]


def test_a_session_naming_another_organizations_environment_or_vault_is_404(api, theirs, make_agent, make_environment):
    agent = make_agent()
    body = {"agent": agent.id, "environment_id": theirs["environment"].id}
    assert_404(api.post("/v1/sessions", body, format="json"), f"environment {theirs['environment'].id} not found")
    body = {"agent": agent.id, "environment_id": make_environment().id, "vault_ids": [theirs["vault"].id]}
    assert_404(api.post("/v1/sessions", body, format="json"), f"vault {theirs['vault'].id} not found")
    assert Session.objects.filter(agent=agent).count() == 0


def test_a_roster_naming_another_organizations_agent_is_404(api, theirs):
    body = {"name": "lead", "model": "claude-opus-4-6", "multiagent": {"type": "coordinator", "agents": [theirs["agent"].id]}}
    assert_404(api.post("/v1/agents", body, format="json"), f"multiagent.agents[0]: agent {theirs['agent'].id} not found")


def test_another_workspace_of_the_same_organization_is_404(tenant, make_agent):
    agent = make_agent()
    neighbour = Tenant("Acme", workspace_name="Research")
    client = neighbour.client()
    assert_404(client.get(f"/v1/agents/{agent.id}"), agent.id)
    assert client.get("/v1/agents").json()["data"] == []
    created = client.post("/v1/agents", {"name": "theirs", "model": "claude-haiku-4-5"}, format="json").json()
    assert Agent.objects.get(pk=created["id"]).workspace_id == neighbour.workspace.id
    assert_404(tenant.client().get(f"/v1/agents/{created['id']}"), created["id"])

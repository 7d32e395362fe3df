"""Tenancy: every id of another organization — and of another workspace of the same organization,
seen from a key bound to its own workspace — is a 404 on every endpoint that takes it, worded
exactly like an id that does not exist (no existence oracle), never a 403 and never the object.
Nothing of the other tenant changes, lists never show its rows, filters by its ids come back
empty, references to its rows in request bodies are 404s, and its cursors leak nothing.
"""

import pytest

from core.ids import new_id
from deployments_app.models import Deployment
from platform_app.models import Agent, Environment, Session, Vault
from runs_app.models import DeploymentRun
from tests.conftest import Tenant
from tests.security.conftest import USER_MESSAGE, build_world
from tests.security.helpers import envelope_message, send

pytestmark = pytest.mark.django_db

# (method, path template, body, the id kind named by `{}`)
BY_ID = [
    ("get", "/v1/deployments/{}", None, "deployment"),
    ("post", "/v1/deployments/{}", {"name": "stolen"}, "deployment"),
    ("post", "/v1/deployments/{}", {"name": ""}, "deployment"),  # an invalid body reveals nothing either
    ("post", "/v1/deployments/{}", {"schedule": None, "metadata": {"owner": "mallory"}}, "deployment"),
    ("post", "/v1/deployments/{}/pause", None, "deployment"),
    ("post", "/v1/deployments/{}/unpause", None, "deployment"),
    ("post", "/v1/deployments/{}/archive", None, "deployment"),
    ("post", "/v1/deployments/{}/run", None, "deployment"),
    ("get", "/v1/deployment_runs/{}", None, "deployment_run"),
    ("get", "/v1/agents/{}", None, "agent"),
    ("get", "/v1/agents/{}?version=1", None, "agent"),
    ("post", "/v1/agents/{}", {"name": "stolen"}, "agent"),
    ("post", "/v1/agents/{}", {"version": 99}, "agent"),
    ("get", "/v1/agents/{}/versions", None, "agent"),
    ("post", "/v1/agents/{}/archive", None, "agent"),
    ("get", "/v1/environments/{}", None, "environment"),
    ("post", "/v1/environments/{}", {"name": "stolen"}, "environment"),
    ("post", "/v1/environments/{}/archive", None, "environment"),
    ("get", "/v1/vaults/{}", None, "vault"),
    ("post", "/v1/vaults/{}", {"display_name": "stolen"}, "vault"),
    ("post", "/v1/vaults/{}/archive", None, "vault"),
    ("get", "/v1/sessions/{}", None, "session"),
]


def _their_id(world, kind: str) -> str:
    return {
        "deployment": world.deployment_id,
        "deployment_run": world.run_id,
        "agent": world.agent_id,
        "environment": world.environment_id,
        "vault": world.vault_id,
        "session": world.session_id,
    }[kind]


def _snapshot(world) -> dict:
    """Everything a foreign request could change about the other tenant's rows."""
    deployment = Deployment.objects.get(pk=world.deployment_id)
    return {
        "deployment": (deployment.name, deployment.status, deployment.archived_at, deployment.metadata,
                       deployment.schedule_expression, deployment.updated_at),
        "runs": DeploymentRun.objects.filter(deployment_id=world.deployment_id).count(),
        "sessions": Session.objects.filter(organization_id=deployment.organization_id).count(),
        "agent": tuple(Agent.objects.filter(pk=world.agent_id).values_list("latest_version", "archived_at",
                                                                           "updated_at").get()),
        "environment": tuple(Environment.objects.filter(pk=world.environment_id).values_list("name", "archived_at",
                                                                                             "updated_at").get()),
        "vault": tuple(Vault.objects.filter(pk=world.vault_id).values_list("display_name", "archived_at",
                                                                           "updated_at").get()),
    }


def _assert_hidden(client, method, template, body, their_id: str, kind: str) -> None:
    response = send(client, method, template.format(their_id), body)
    message = envelope_message(response, 404)
    assert "Globex" not in response.content.decode() and "Acme" not in response.content.decode()
    # Worded exactly like an id that exists nowhere: the message is no existence oracle.
    nowhere = new_id(kind)
    other = envelope_message(send(client, method, template.format(nowhere), body), 404)
    assert message.replace(their_id, "<id>") == other.replace(nowhere, "<id>")


@pytest.fixture
def acme(tenant):
    build_world(tenant, token="ghp_ACMEtoken000000000000000000000")
    return tenant


@pytest.mark.parametrize("method,template,body,kind", BY_ID, ids=[f"{m} {t}" for m, t, _, _ in BY_ID])
def test_another_organizations_ids_are_404_everywhere_and_change_nothing(acme, other_world, method, template, body,
                                                                         kind):
    before = _snapshot(other_world)
    _assert_hidden(acme.client(), method, template, body, _their_id(other_world, kind), kind)
    assert _snapshot(other_world) == before


@pytest.fixture
def staging(tenant):
    """A key of the same organization, bound to its other workspace."""
    return Tenant(tenant.organization.name, workspace_name="Staging")


@pytest.mark.parametrize("method,template,body,kind", BY_ID, ids=[f"{m} {t}" for m, t, _, _ in BY_ID])
def test_a_workspace_bound_key_gets_404_for_every_id_of_another_workspace(world, staging, method, template, body,
                                                                          kind):
    before = _snapshot(world)
    _assert_hidden(staging.client(), method, template, body, _their_id(world, kind), kind)
    assert _snapshot(world) == before


# --- lists and filters ---------------------------------------------------------------------------------

LISTS = ["/v1/deployments", "/v1/deployments?include_archived=true", "/v1/deployment_runs", "/v1/agents",
         "/v1/agents?include_archived=true", "/v1/environments", "/v1/environments?include_archived=true",
         "/v1/vaults", "/v1/vaults?include_archived=true", "/v1/sessions", "/v1/sessions?order=asc"]


def _all_ids(client, path: str) -> list[str]:
    """Every id of a list, following next_page to the end."""
    ids, page = [], None
    while True:
        separator = "&" if "?" in path else "?"
        query = f"{separator}limit=100" + (f"&page={page}" if page else "")
        response = send(client, "get", path + query)
        assert response.status_code == 200, response.content
        data = response.json()
        ids += [row["id"] for row in data["data"]]
        page = data["next_page"]
        if not page:
            return ids


def _ids_of(world) -> set[str]:
    return set(world.as_path_parameters().values())


@pytest.mark.parametrize("path", LISTS)
def test_lists_show_only_the_callers_rows(acme, other_world, path):
    mine = _all_ids(acme.client(), path)
    theirs = _all_ids(Tenant("Globex").client(), path)
    assert mine and theirs, "both tenants have rows of every kind"
    assert not set(mine) & set(theirs)
    assert not set(mine) & _ids_of(other_world)


@pytest.mark.parametrize("path", LISTS)
def test_a_workspace_bound_key_lists_only_its_workspace(world, staging, path):
    build_world(staging, token="ghp_STAGINGtoken00000000000000000")
    listed = set(_all_ids(staging.client(), path))
    assert listed, "the staging workspace has rows of every kind"
    assert not listed & _ids_of(world)


@pytest.mark.parametrize("path,param,kind", [
    ("/v1/deployments", "agent_id", "agent"),
    ("/v1/deployments?include_archived=true", "agent_id", "agent"),
    ("/v1/deployment_runs", "deployment_id", "deployment"),
    ("/v1/sessions", "agent_id", "agent"),
    ("/v1/sessions", "deployment_id", "deployment"),
])
def test_filtering_by_another_organizations_id_returns_nothing(acme, other_world, path, param, kind):
    separator = "&" if "?" in path else "?"
    response = send(acme.client(), "get", f"{path}{separator}{param}={_their_id(other_world, kind)}")
    assert response.json() == {**response.json(), "data": [], "next_page": None}
    # The same filter from the owner does find the rows, so the empty answer means something.
    own = send(Tenant("Globex").client(), "get", f"{path}{separator}{param}={_their_id(other_world, kind)}")
    assert own.json()["data"]


def test_filtering_by_another_workspaces_id_returns_nothing(world, staging):
    client = staging.client()
    for path in (f"/v1/deployments?agent_id={world.agent_id}",
                 f"/v1/deployment_runs?deployment_id={world.deployment_id}",
                 f"/v1/sessions?agent_id={world.agent_id}", f"/v1/sessions?deployment_id={world.deployment_id}"):
        assert send(client, "get", path).json()["data"] == [], path


@pytest.mark.parametrize("path", ["/v1/deployments", "/v1/deployment_runs", "/v1/agents", "/v1/environments",
                                  "/v1/vaults", "/v1/sessions"])
def test_another_organizations_cursor_never_pages_into_its_rows(acme, other_world, other_tenant, path):
    build_world(other_tenant, token="ghp_GLOBEXsecond0000000000000000", name="Globex second")
    their_first = send(other_tenant.client(), "get", f"{path}?limit=1").json()
    assert their_first["next_page"]
    response = send(acme.client(), "get", f"{path}?limit=100&page={their_first['next_page']}")
    if response.status_code == 400:
        assert envelope_message(response, 400).startswith("page:")
        return
    assert response.status_code == 200, response.content
    listed = {row["id"] for row in response.json()["data"]}
    their_ids = set(_all_ids(other_tenant.client(), path))
    assert not listed & their_ids
    assert listed <= set(_all_ids(acme.client(), path))


# --- references to another tenant's rows in request bodies -------------------------------------------------


def _references(world) -> list[tuple[str, dict, str]]:
    """(field, body change, id named) for every reference a request body can make."""
    return [
        ("agent", {"agent": world.agent_id}, world.agent_id),
        ("agent", {"agent": {"type": "agent", "id": world.agent_id, "version": 1}}, world.agent_id),
        ("environment_id", {"environment_id": world.environment_id}, world.environment_id),
        ("vault_ids[0]", {"vault_ids": [world.vault_id]}, world.vault_id),
    ]


def _check_reference_refused(client, path: str, body: dict, field: str, their_id: str):
    message = envelope_message(send(client, "post", path, body), 404)
    assert message.startswith(field) or their_id in message, message


def test_bodies_naming_another_organizations_rows_are_404(acme, other_world):
    client = acme.client()
    mine = build_world(acme, token="ghp_ACMEsecond00000000000000000000", name="Acme second")
    base_deployment = {"name": "x", "agent": mine.agent_id, "environment_id": mine.environment_id,
                       "initial_events": [USER_MESSAGE]}
    base_session = {"agent": mine.agent_id, "environment_id": mine.environment_id}
    deployments_before = Deployment.objects.count()
    for field, change, their_id in _references(other_world):
        _check_reference_refused(client, "/v1/deployments", {**base_deployment, **change}, field, their_id)
        _check_reference_refused(client, f"/v1/deployments/{mine.deployment_id}", change, field, their_id)
        _check_reference_refused(client, "/v1/sessions", {**base_session, **change}, field, their_id)
    assert Deployment.objects.count() == deployments_before
    roster = {"type": "coordinator", "agents": [{"type": "agent", "id": other_world.agent_id}]}
    response = send(client, "post", "/v1/agents", {"name": "x", "model": "claude-sonnet-4-6", "multiagent": roster})
    assert other_world.agent_id in envelope_message(response, 404)
    response = send(client, "post", f"/v1/agents/{mine.agent_id}", {"multiagent": roster})
    assert other_world.agent_id in envelope_message(response, 404)


def test_bodies_naming_another_workspaces_rows_are_404(world, staging):
    client = staging.client()
    mine = build_world(staging, token="ghp_STAGINGsecond000000000000000", name="Staging nightly")
    base_deployment = {"name": "x", "agent": mine.agent_id, "environment_id": mine.environment_id,
                       "initial_events": [USER_MESSAGE]}
    for field, change, their_id in _references(world):
        _check_reference_refused(client, "/v1/deployments", {**base_deployment, **change}, field, their_id)
        _check_reference_refused(client, f"/v1/deployments/{mine.deployment_id}", change, field, their_id)
        _check_reference_refused(client, "/v1/sessions", {"agent": mine.agent_id,
                                                          "environment_id": mine.environment_id, **change},
                                 field, their_id)


# --- workspace selection ----------------------------------------------------------------------------------


def test_a_workspace_bound_key_naming_another_workspace_is_403_without_detail(tenant, staging):
    response = send(staging.client(HTTP_ANTHROPIC_WORKSPACE_ID=tenant.workspace.id), "get", "/v1/deployments")
    assert envelope_message(response, 403) == "this API key cannot act in the requested workspace"


def test_a_workspace_id_of_another_organization_is_the_same_403_as_an_unknown_one(tenant, other_tenant):
    theirs = send(tenant.client(HTTP_ANTHROPIC_WORKSPACE_ID=other_tenant.workspace.id), "get", "/v1/deployments")
    unknown = send(tenant.client(HTTP_ANTHROPIC_WORKSPACE_ID=new_id("workspace")), "get", "/v1/deployments")
    assert envelope_message(theirs, 403) == envelope_message(unknown, 403)


def test_an_organization_key_selects_a_workspace_with_the_header_and_sees_only_it(world, tenant, staging):
    mine = build_world(staging, token="ghp_STAGINGthird0000000000000000", name="Staging third")
    client = tenant.client(HTTP_ANTHROPIC_WORKSPACE_ID=staging.workspace.id)
    assert set(_all_ids(client, "/v1/deployments")) == {mine.deployment_id}
    assert send(client, "get", f"/v1/deployments/{world.deployment_id}").status_code == 404
    assert send(client, "get", f"/v1/deployments/{mine.deployment_id}").status_code == 200


# --- idempotency keys -------------------------------------------------------------------------------------


def test_an_idempotency_key_used_by_another_organization_never_returns_its_session(acme, other_world):
    mine = build_world(acme, token="ghp_ACMEthird000000000000000000000", name="Acme third")
    key = "shared-key-123"
    body_theirs = {"agent": other_world.agent_id, "environment_id": other_world.environment_id}
    theirs = send(Tenant("Globex").client(), "post", "/v1/sessions", body_theirs, keep=True,
                  HTTP_IDEMPOTENCY_KEY=key).json()
    response = send(acme.client(), "post", "/v1/sessions", {"agent": mine.agent_id,
                                                            "environment_id": mine.environment_id},
                    keep=True, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 200, response.content
    assert response.json()["id"] != theirs["id"]
    assert response.json()["agent"]["id"] == mine.agent_id

"""POST /v1/deployments: defaults, agent pinning, accepted shapes, references and every validation rule."""

import copy
import json
import re

import pytest
from django.utils import timezone

from deployments_app.models import Deployment
from tests.deployments.helpers import WEEKLY, add_version, create, error, next_fire, ok, upcoming
from tests.factories import make_agent, make_environment, make_vault

pytestmark = pytest.mark.django_db

RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def test_minimal_create_returns_the_full_object_with_defaults(api, body, agent, environment):
    data = create(api, body)

    assert data["type"] == "deployment"
    assert data["id"].startswith("depl_")
    assert data["name"] == "Weekly compliance scan"
    assert data["description"] is None
    assert data["agent"] == {"type": "agent", "id": agent.id, "version": 1}
    assert data["environment_id"] == environment.id
    assert data["initial_events"] == body["initial_events"]
    assert data["resources"] == []
    assert data["vault_ids"] == []
    assert data["metadata"] == {}
    assert data["schedule"] is None
    assert data["status"] == "active"
    assert data["paused_reason"] is None
    assert data["archived_at"] is None
    assert "budget" not in data
    assert RFC3339_Z.match(data["created_at"]) and RFC3339_Z.match(data["updated_at"])
    assert set(data) == {
        "type", "id", "name", "description", "agent", "environment_id", "initial_events", "resources",
        "vault_ids", "metadata", "schedule", "status", "paused_reason", "archived_at", "created_at", "updated_at",
    }
    row = Deployment.objects.get(pk=data["id"])
    assert row.next_fire_at is None
    assert 0.0 <= row.jitter_fraction < 1.0


def test_create_is_stored_in_the_callers_organization_and_workspace(api, body, tenant):
    data = create(api, body)
    row = Deployment.objects.get(pk=data["id"])
    assert (row.organization_id, row.workspace_id) == (tenant.organization.id, tenant.workspace.id)


def test_scheduled_create_reports_the_next_five_fires_and_sets_next_fire_at(api, body):
    before = timezone.now()
    data = create(api, body, schedule=WEEKLY)
    after = timezone.now()

    assert data["schedule"]["type"] == "cron"
    assert data["schedule"]["expression"] == "0 20 * * 5"
    assert data["schedule"]["timezone"] == "America/New_York"
    assert data["schedule"]["last_run_at"] is None
    assert data["schedule"]["upcoming_runs_at"] in (
        upcoming("0 20 * * 5", "America/New_York", before), upcoming("0 20 * * 5", "America/New_York", after)
    )
    row = Deployment.objects.get(pk=data["id"])
    assert row.next_fire_at in (
        next_fire("0 20 * * 5", "America/New_York", before), next_fire("0 20 * * 5", "America/New_York", after)
    )
    assert row.next_fire_at.isoformat().replace("+00:00", "Z") == data["schedule"]["upcoming_runs_at"][0]


def test_each_deployment_gets_its_own_fixed_jitter_fraction(api, body):
    fractions = {Deployment.objects.get(pk=create(api, body)["id"]).jitter_fraction for _ in range(5)}
    assert len(fractions) == 5
    assert all(0.0 <= f < 1.0 for f in fractions)


# --- agent pinning ------------------------------------------------------------------------------


def test_agent_id_string_pins_the_latest_version(api, body, agent):
    add_version(agent, 2)
    add_version(agent, 3)
    assert create(api, body)["agent"] == {"type": "agent", "id": agent.id, "version": 3}


def test_agent_object_pins_the_given_version(api, body, agent):
    add_version(agent, 2)
    data = create(api, body, agent={"type": "agent", "id": agent.id, "version": 1})
    assert data["agent"] == {"type": "agent", "id": agent.id, "version": 1}
    assert Deployment.objects.get(pk=data["id"]).agent_version == 1


def test_agent_object_without_version_pins_the_latest(api, body, agent):
    add_version(agent, 2)
    assert create(api, body, agent={"type": "agent", "id": agent.id})["agent"]["version"] == 2


def test_pinned_version_stays_when_the_agent_gets_a_new_version(api, body, agent):
    data = create(api, body)
    add_version(agent, 2)
    assert ok(api.get(f"/v1/deployments/{data['id']}"))["agent"]["version"] == 1


def test_agent_version_that_does_not_exist_is_404_naming_it(api, body, agent):
    message = error(api.post("/v1/deployments", {**body, "agent": {"type": "agent", "id": agent.id, "version": 7}},
                             format="json"), 404)
    assert message == f"agent.version: agent {agent.id} has no version 7"


@pytest.mark.parametrize(
    "agent_value, expected",
    [
        ({"type": "agent", "id": "x", "version": 0}, "agent.version: must be between 1 and 2147483647"),
        ({"type": "agent", "id": "x", "version": -1}, "agent.version: must be between 1 and 2147483647"),
        ({"type": "agent", "id": "x", "version": 2**40}, "agent.version: must be between 1 and 2147483647"),
        ({"type": "agent", "id": "x", "version": "1"}, "agent.version: must be an integer"),
        ({"type": "agent", "id": "x", "version": 1.0}, "agent.version: must be an integer"),
        ({"type": "agent", "id": "x", "version": True}, "agent.version: must be an integer"),
        ({"type": "agent", "version": 1}, "agent.id: is required"),
        ({"id": "x"}, "agent.type: is required"),
        ({"type": "agent_with_overrides", "id": "x"}, 'agent.type: must be one of: "agent"'),
        ({"type": "agent", "id": "x", "extra": 1}, "agent.extra: unknown field"),
        (5, "agent: must be an agent id or an object"),
        ([], "agent: must be an agent id or an object"),
        ("", "agent: must not be empty"),
        ("a" * 65, "agent: must be at most 64 characters"),
    ],
)
def test_malformed_agent_is_400_naming_the_field(api, body, agent_value, expected):
    message = error(api.post("/v1/deployments", {**body, "agent": agent_value}, format="json"), 400)
    assert message.startswith(expected), message


def test_unknown_agent_is_404(api, body):
    assert error(api.post("/v1/deployments", {**body, "agent": "agent_nope"}, format="json"), 404) == (
        "agent: agent agent_nope not found"
    )


def test_agent_of_another_tenant_is_404(api, body, other_tenant):
    foreign = make_agent(other_tenant)
    message = error(api.post("/v1/deployments", {**body, "agent": foreign.id}, format="json"), 404)
    assert message == f"agent: agent {foreign.id} not found"


def test_agent_of_another_workspace_of_the_same_organization_is_404(api, body, tenant):
    from tests.conftest import Tenant

    sibling = Tenant(tenant.organization.name, workspace_name="Staging")
    foreign = make_agent(sibling)
    assert error(api.post("/v1/deployments", {**body, "agent": foreign.id}, format="json"), 404).startswith("agent:")


def test_archived_agent_is_400(api, body, tenant):
    archived = make_agent(tenant, archived=True)
    message = error(api.post("/v1/deployments", {**body, "agent": archived.id}, format="json"), 400)
    assert message == f"agent: agent {archived.id} is archived"


# --- environment and vaults ----------------------------------------------------------------------


def test_unknown_environment_is_404(api, body):
    message = error(api.post("/v1/deployments", {**body, "environment_id": "env_nope"}, format="json"), 404)
    assert message == "environment_id: environment env_nope not found"


def test_environment_of_another_tenant_is_404(api, body, other_tenant):
    foreign = make_environment(other_tenant)
    message = error(api.post("/v1/deployments", {**body, "environment_id": foreign.id}, format="json"), 404)
    assert message == f"environment_id: environment {foreign.id} not found"


def test_archived_environment_is_400(api, body, tenant):
    archived = make_environment(tenant, archived=True)
    message = error(api.post("/v1/deployments", {**body, "environment_id": archived.id}, format="json"), 400)
    assert message == f"environment_id: environment {archived.id} is archived"


def test_vaults_are_checked_one_by_one(api, body, tenant, other_tenant, vault):
    foreign = make_vault(other_tenant)
    response = api.post("/v1/deployments", {**body, "vault_ids": [vault.id, foreign.id]}, format="json")
    assert error(response, 404) == f"vault_ids[1]: vault {foreign.id} not found"

    archived = make_vault(tenant, name="old")
    archived.archived_at = timezone.now()
    archived.save()
    response = api.post("/v1/deployments", {**body, "vault_ids": [archived.id]}, format="json")
    assert error(response, 400) == f"vault_ids[0]: vault {archived.id} is archived"

    assert create(api, body, vault_ids=[vault.id])["vault_ids"] == [vault.id]


def test_nothing_is_created_when_a_reference_fails(api, body):
    api.post("/v1/deployments", {**body, "vault_ids": ["vlt_nope"]}, format="json")
    assert Deployment.objects.count() == 0


# --- every accepted shape is stored and echoed ---------------------------------------------------------

EVERY_EVENT = [
    {
        "type": "user.message",
        "content": [
            {"type": "text", "text": "Scan the repository."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "image", "source": {"type": "file", "file_id": "file_01abc"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
             "title": "Policy", "context": "The current policy"},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}, "title": None},
            {"type": "document", "source": {"type": "file", "file_id": "file_01def"}},
            {"type": "redacted"},
        ],
    },
    {"type": "system.message", "content": [{"type": "text", "text": "Be terse."}]},
    {"type": "user.define_outcome", "description": "A report", "rubric": {"type": "text", "content": "Complete"}},
    {"type": "user.define_outcome", "description": "A fix", "rubric": {"type": "file", "file_id": "file_01rub"},
     "max_iterations": 20},
    {"type": "user.define_outcome", "description": "Again", "rubric": {"type": "text", "content": "x"},
     "max_iterations": None},
]

EVERY_RESOURCE_AS_RETURNED = [
    {"type": "github_repository", "url": "https://github.com/acme/app"},
    {"type": "github_repository", "url": "https://github.com/acme/lib", "checkout": {"type": "branch", "name": "main"},
     "mount_path": "/workspace/lib"},
    {"type": "github_repository", "url": "https://github.com/acme/pinned",
     "checkout": {"type": "commit", "sha": "a" * 40}, "mount_path": None},
    {"type": "file", "file_id": "file_01abc"},
    {"type": "file", "file_id": "file_01def", "mount_path": "/mnt/data/report.csv"},
    {"type": "memory_store", "memory_store_id": "memstore_01abc"},
    {"type": "memory_store", "memory_store_id": "memstore_01def", "access": "read_only", "instructions": "Notes"},
]


def test_every_event_resource_budget_and_field_shape_is_accepted_and_echoed(api, body, vault):
    resources = copy.deepcopy(EVERY_RESOURCE_AS_RETURNED)
    resources[1]["authorization_token"] = "ghp_private"
    budget = {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}}
    data = create(
        api, body, initial_events=EVERY_EVENT, resources=resources, vault_ids=[vault.id], budget=budget,
        description="Scans weekly", metadata={"team": "security", "tier": ""},
    )
    assert data["initial_events"] == EVERY_EVENT
    assert data["resources"] == EVERY_RESOURCE_AS_RETURNED
    assert data["budget"] == budget
    assert data["description"] == "Scans weekly"
    assert data["metadata"] == {"team": "security", "tier": ""}
    assert ok(api.get(f"/v1/deployments/{data['id']}")) == {**data, "schedule": None}


def test_name_is_trimmed_and_empty_description_is_stored_as_null(api, body):
    data = create(api, body, name="  Nightly  ", description="")
    assert data["name"] == "Nightly"
    assert data["description"] is None


def test_optional_collections_may_be_null_on_create(api, body):
    data = create(api, body, resources=None, vault_ids=None, metadata=None, budget=None, schedule=None,
                  description=None)
    assert (data["resources"], data["vault_ids"], data["metadata"], data["schedule"]) == ([], [], {}, None)
    assert "budget" not in data


def test_limits_at_their_maximum_are_accepted(api, body, tenant):
    vaults = [make_vault(tenant, name=f"v{i}").id for i in range(50)]
    data = create(
        api, body,
        name="n" * 256,
        initial_events=[copy.deepcopy(body["initial_events"][0]) for _ in range(50)],
        resources=[{"type": "file", "file_id": f"file_{i}"} for i in range(500)],
        vault_ids=vaults,
        metadata={f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)},
    )
    assert len(data["initial_events"]) == 50
    assert len(data["resources"]) == 500
    assert len(data["vault_ids"]) == 50
    assert len(data["metadata"]) == 16


# --- validation: one rule per case, the message names the field -----------------------------------------

TEXT = {"type": "text", "text": "hi"}


def _event(**fields):
    return {"type": "user.message", "content": [TEXT], **fields}


def _outcome(**fields):
    return {"type": "user.define_outcome", "description": "d", "rubric": {"type": "text", "content": "r"}, **fields}


INVALID = [
    # required fields and the top level
    ({"name": None}, "name: must not be null"),
    ({"name": ""}, "name: must not be empty"),
    ({"name": "   "}, "name: must not be empty"),
    ({"name": 5}, "name: must be a string"),
    ({"name": "n" * 257}, "name: must be at most 256 characters"),
    ({"name": "bad\x00name"}, "name: Null characters are not allowed."),
    ({"name": "\ud800"}, "name: must be valid Unicode text"),
    ({"description": 3}, "description: must be a string"),
    ({"description": "d" * 2049}, "description: must be at most 2048 characters"),
    ({"environment_id": None}, "environment_id: must not be null"),
    ({"environment_id": 12}, "environment_id: must be a string"),
    ({"environment_id": "e" * 65}, "environment_id: must be at most 64 characters"),
    ({"unexpected": True}, "unexpected: unknown field"),
    # initial events
    ({"initial_events": []}, "initial_events: must contain at least 1 event"),
    ({"initial_events": [_event()] * 51}, "initial_events: must contain at most 50 events"),
    ({"initial_events": {"type": "user.message"}}, "initial_events: must be an array of events"),
    ({"initial_events": ["hello"]}, 'initial_events[0]: must be an object with a "type"'),
    ({"initial_events": [{"content": [TEXT]}]}, "initial_events[0].type: is required"),
    ({"initial_events": [{"type": "user.tool_result"}]},
     'initial_events[0].type: must be one of: "user.message", "system.message", "user.define_outcome"'),
    ({"initial_events": [{"type": "user.message"}]}, "initial_events[0].content: is required"),
    ({"initial_events": [_event(content=[])]}, "initial_events[0].content: must contain at least 1 content block"),
    ({"initial_events": [_event(content=[TEXT] * 101)]},
     "initial_events[0].content: must contain at most 100 content blocks"),
    ({"initial_events": [_event(content="hello")]}, "initial_events[0].content: "),
    ({"initial_events": [_event(content=[{"type": "text"}])]}, "initial_events[0].content[0].text: is required"),
    ({"initial_events": [_event(content=[{"type": "text", "text": ""}])]},
     "initial_events[0].content[0].text: must not be empty"),
    ({"initial_events": [_event(content=[{"type": "text", "text": 1}])]},
     "initial_events[0].content[0].text: must be a string"),
    ({"initial_events": [_event(content=[{"type": "text", "text": "x", "cache_control": {}}])]},
     "initial_events[0].content[0].cache_control: unknown field"),
    ({"initial_events": [_event(content=[{"type": "tool_use"}])]},
     'initial_events[0].content[0].type: must be one of: "text", "image", "document", "redacted"'),
    ({"initial_events": [_event(content=[{"type": "image", "source": {"type": "base64", "media_type": "image/bmp",
                                                                         "data": "x"}}])]},
     "initial_events[0].content[0].source.media_type: must be one of"),
    ({"initial_events": [_event(content=[{"type": "image", "source": {"type": "url", "url": "ftp://x/y"}}])]},
     "initial_events[0].content[0].source.url: must be an http or https URL"),
    ({"initial_events": [_event(content=[{"type": "image"}])]}, "initial_events[0].content[0].source: is required"),
    ({"initial_events": [_event(content=[{"type": "document", "source": {"type": "text", "media_type": "text/html",
                                                                            "data": "x"}}])]},
     'initial_events[0].content[0].source.media_type: must be one of: "text/plain"'),
    ({"initial_events": [_event(extra=1)]}, "initial_events[0].extra: unknown field"),
    ({"initial_events": [{"type": "system.message", "content": [{"type": "image", "source": {}}]}]},
     'initial_events[0].content[0].type: must be one of: "text"'),
    ({"initial_events": [{"type": "system.message", "content": []}]},
     "initial_events[0].content: must contain at least 1 text block"),
    ({"initial_events": [_outcome(max_iterations=0)]}, "initial_events[0].max_iterations: must be between 1 and 20"),
    ({"initial_events": [_outcome(max_iterations=21)]}, "initial_events[0].max_iterations: must be between 1 and 20"),
    ({"initial_events": [_outcome(max_iterations=2.5)]}, "initial_events[0].max_iterations: must be an integer"),
    ({"initial_events": [_outcome(description=None)]}, "initial_events[0].description: must not be null"),
    ({"initial_events": [{"type": "user.define_outcome", "description": "d"}]}, "initial_events[0].rubric: is required"),
    ({"initial_events": [_outcome(rubric={"type": "url", "url": "https://x"})]},
     'initial_events[0].rubric.type: must be one of: "text", "file"'),
    ({"initial_events": [_outcome(rubric={"type": "text", "content": "r" * 262145})]},
     "initial_events[0].rubric.content: must be at most 262144 characters"),
    ({"initial_events": [_outcome(rubric={"type": "file"})]}, "initial_events[0].rubric.file_id: is required"),
    # resources
    ({"resources": {"type": "file"}}, "resources: must be an array of resources"),
    ({"resources": [{"type": "file", "file_id": "f"}] * 501}, "resources: must contain at most 500 resources"),
    ({"resources": [{"type": "skill", "skill_id": "s"}]},
     'resources[0].type: must be one of: "github_repository", "file", "memory_store"'),
    ({"resources": [{"type": "github_repository"}]}, "resources[0].url: is required"),
    ({"resources": [{"type": "github_repository", "url": "github.com/acme/app"}]},
     "resources[0].url: must be an http or https URL"),
    ({"resources": [{"type": "github_repository", "url": "https://github.com/a/b", "checkout": {"type": "tag"}}]},
     'resources[0].checkout.type: must be one of: "branch", "commit"'),
    ({"resources": [{"type": "github_repository", "url": "https://github.com/a/b",
                     "checkout": {"type": "commit", "sha": "abc"}}]},
     "resources[0].checkout.sha: must be a full commit SHA"),
    ({"resources": [{"type": "github_repository", "url": "https://github.com/a/b",
                     "checkout": {"type": "branch"}}]}, "resources[0].checkout.name: is required"),
    ({"resources": [{"type": "file", "file_id": "f", "mount_path": "relative/path"}]},
     "resources[0].mount_path: must be an absolute path"),
    ({"resources": [{"type": "file"}]}, "resources[0].file_id: is required"),
    ({"resources": [{"type": "file", "file_id": "f", "authorization_token": "t"}]},
     "resources[0].authorization_token: unknown field"),
    ({"resources": [{"type": "memory_store", "memory_store_id": "m", "access": "write"}]},
     'resources[0].access: must be one of: "read_write", "read_only"'),
    ({"resources": [{"type": "memory_store", "memory_store_id": "m", "instructions": "i" * 4097}]},
     "resources[0].instructions: must be at most 4096 characters"),
    # vaults
    ({"vault_ids": "vlt_1"}, "vault_ids: must be an array of vault ids"),
    ({"vault_ids": [f"vlt_{i}" for i in range(51)]}, "vault_ids: must contain at most 50 vault ids"),
    ({"vault_ids": [5]}, "vault_ids[0]: must be a string"),
    ({"vault_ids": ["vlt_1", "vlt_1"]}, "vault_ids: vault vlt_1 is listed more than once"),
    # metadata
    ({"metadata": ["a"]}, "metadata: must be an object"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata: must have at most 16 pairs (got 17)"),
    ({"metadata": {"k" * 65: "v"}}, "metadata.kkk"),
    ({"metadata": {"": "v"}}, "metadata: keys must not be empty"),
    ({"metadata": {"k": "v" * 513}}, "metadata.k: must be at most 512 characters"),
    ({"metadata": {"k": 1}}, "metadata.k: must be a string"),
    ({"metadata": {"k": None}}, "metadata.k: must be a string"),
    ({"metadata": {"k": True}}, "metadata.k: must be a string"),
    # budget
    ({"budget": {"type": "limit"}}, "budget.max_list_cost: is required"),
    ({"budget": {"type": "cap", "max_list_cost": {"amount": "1", "currency": "USD"}}},
     'budget.type: must be one of: "limit"'),
    ({"budget": {"type": "limit", "max_list_cost": {"amount": 2500, "currency": "USD"}}},
     "budget.max_list_cost.amount: must be a string"),
    ({"budget": {"type": "limit", "max_list_cost": {"amount": "025", "currency": "USD"}}},
     "budget.max_list_cost.amount: must be a positive whole number"),
    ({"budget": {"type": "limit", "max_list_cost": {"amount": "12.50", "currency": "USD"}}},
     "budget.max_list_cost.amount: must be a positive whole number"),
    ({"budget": {"type": "limit", "max_list_cost": {"amount": "100", "currency": "EUR"}}},
     'budget.max_list_cost.currency: must be one of: "USD"'),
    # schedule
    ({"schedule": {"type": "cron", "expression": "0 20 * * 5"}}, "schedule.timezone: is required"),
    ({"schedule": {"type": "cron", "timezone": "UTC"}}, "schedule.expression: is required"),
    ({"schedule": {"expression": "0 20 * * 5", "timezone": "UTC"}}, "schedule.type: is required"),
    ({"schedule": {"type": "rrule", "expression": "0 20 * * 5", "timezone": "UTC"}},
     'schedule.type: must be one of: "cron"'),
    ({"schedule": {"type": "cron", "expression": "0 0 20 * * 5", "timezone": "UTC"}},
     "schedule.expression: expected 5 fields"),
    ({"schedule": {"type": "cron", "expression": "@daily", "timezone": "UTC"}}, "schedule.expression: shortcut"),
    ({"schedule": {"type": "cron", "expression": "0 0 L * *", "timezone": "UTC"}}, "schedule.expression: "),
    ({"schedule": {"type": "cron", "expression": "0 0 * * 5#2", "timezone": "UTC"}}, "schedule.expression: "),
    ({"schedule": {"type": "cron", "expression": "*/0 * * * *", "timezone": "UTC"}}, "schedule.expression: "),
    ({"schedule": {"type": "cron", "expression": "61 * * * *", "timezone": "UTC"}}, "schedule.expression: "),
    ({"schedule": {"type": "cron", "expression": "0 0 31 2 *", "timezone": "UTC"}},
     "schedule.expression: never fires"),
    ({"schedule": {"type": "cron", "expression": "", "timezone": "UTC"}}, "schedule.expression: expression is empty"),
    ({"schedule": {"type": "cron", "expression": 5, "timezone": "UTC"}}, "schedule.expression: must be a string"),
    ({"schedule": {"type": "cron", "expression": "0 20 * * 5", "timezone": "EST5EDTX"}},
     "schedule.timezone: unknown time zone"),
    ({"schedule": {"type": "cron", "expression": "0 20 * * 5", "timezone": "america/new_york"}},
     "schedule.timezone: unknown time zone"),
    ({"schedule": {"type": "cron", "expression": "0 20 * * 5", "timezone": ""}}, "schedule.timezone: "),
    ({"schedule": {"type": "cron", "expression": "0 20 * * 5", "timezone": "UTC", "jitter": 3}},
     "schedule.jitter: unknown field"),
    ({"schedule": "0 20 * * 5"}, "schedule: must be an object"),
]


@pytest.mark.parametrize("changes, expected", INVALID, ids=[f"{i}-{e[:40]}" for i, (_, e) in enumerate(INVALID)])
def test_invalid_create_is_400_naming_the_field(api, body, changes, expected):
    # json.dumps escapes lone surrogates, which the test client's own encoder cannot carry.
    response = api.generic("POST", "/v1/deployments", json.dumps({**body, **changes}), content_type="application/json")
    message = error(response, 400)
    assert message.startswith(expected), message
    assert Deployment.objects.count() == 0


@pytest.mark.parametrize("missing", ["name", "agent", "environment_id", "initial_events"])
def test_each_required_field_is_named_when_missing(api, body, missing):
    del body[missing]
    assert error(api.post("/v1/deployments", body, format="json"), 400) == f"{missing}: is required"


def test_all_problems_are_reported_together(api, body):
    message = error(api.post("/v1/deployments", {"name": "", "metadata": {"k": 1}}, format="json"), 400)
    for part in ("name: must not be empty", "agent: is required", "environment_id: is required",
                 "initial_events: is required", "metadata.k: must be a string"):
        assert part in message


def test_empty_body_names_every_required_field(api):
    response = api.generic("POST", "/v1/deployments", "", content_type="application/json")
    assert error(response, 400) == "name: is required; agent: is required; environment_id: is required; " \
                                   "initial_events: is required"


def test_the_schedule_message_is_the_engines_own(api, body):
    from deployments_app import schedule

    with pytest.raises(schedule.ScheduleError) as raised:
        schedule.validate("0 25 * * *", "UTC")
    response = api.post("/v1/deployments", {**body, "schedule": {"type": "cron", "expression": "0 25 * * *",
                                                                  "timezone": "UTC"}}, format="json")
    assert error(response, 400) == f"schedule.expression: {raised.value}"

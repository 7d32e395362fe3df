"""Every method of client.beta.deployments through the official SDK against a live server; each
response parsed by the SDK's own models."""

from datetime import datetime, timedelta, timezone

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsDeployment
from anthropic.types.beta.beta_managed_agents_file_resource_config import BetaManagedAgentsFileResourceConfig
from anthropic.types.beta.beta_managed_agents_github_repository_resource_config import (
    BetaManagedAgentsGitHubRepositoryResourceConfig,
)
from anthropic.types.beta.beta_managed_agents_manual_deployment_paused_reason import (
    BetaManagedAgentsManualDeploymentPausedReason,
)
from anthropic.types.beta.beta_managed_agents_memory_store_resource_config import (
    BetaManagedAgentsMemoryStoreResourceConfig,
)

from deployments_app import schedule
from deployments_app.models import Deployment
from tests.deployments.helpers import USER_MESSAGE, add_version
from tests.factories import make_agent, make_environment, make_vault

TOKEN = "ghp_sdkSECRETtoken000111222"
BUDGET = {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}}


def _fires(expression: str, tz: str, after: datetime) -> list[datetime]:
    return schedule.next_fires(expression, tz, after, 5)


def test_public_docs_python_snippet(live_server, tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    client = anthropic.Anthropic(base_url=live_server.url, api_key=tenant.key)
    before = datetime.now(timezone.utc)

    # The Python snippet of the public docs, unchanged.
    deployment = client.beta.deployments.create(
        name="Weekly compliance scan",
        agent=agent.id,
        environment_id=environment.id,
        initial_events=[
            {
                "type": "user.message",
                "content": [{"type": "text", "text": "Run the weekly compliance scan."}],
            },
        ],
        schedule={
            "type": "cron",
            "expression": "0 20 * * 5",
            "timezone": "America/New_York",
        },
    )

    after = datetime.now(timezone.utc)
    assert isinstance(deployment, BetaManagedAgentsDeployment)
    assert deployment.id.startswith("depl_")
    assert deployment.status == "active"
    assert deployment.paused_reason is None
    assert deployment.schedule.type == "cron"
    assert deployment.schedule.expression == "0 20 * * 5"
    assert deployment.schedule.timezone == "America/New_York"
    assert deployment.schedule.last_run_at is None
    assert deployment.schedule.upcoming_runs_at in (
        _fires("0 20 * * 5", "America/New_York", before), _fires("0 20 * * 5", "America/New_York", after)
    )
    # 20:00 in New York is 00:00 or 01:00 UTC on Saturday, whether EST or EDT.
    for fire in deployment.schedule.upcoming_runs_at:
        assert fire.weekday() == 5 and fire.hour in (0, 1) and fire.minute == 0
    assert deployment.agent.id == agent.id and deployment.agent.version == 1
    client.close()


def test_sdk_create_and_retrieve_parse_every_field(sdk, tenant):
    agent = add_version(make_agent(tenant), 2)
    environment = make_environment(tenant)
    vault = make_vault(tenant)
    created = sdk.beta.deployments.create(
        name="Full",
        description="Every field",
        agent={"type": "agent", "id": agent.id, "version": 1},
        environment_id=environment.id,
        initial_events=[
            USER_MESSAGE,
            {"type": "system.message", "content": [{"type": "text", "text": "Be terse."}]},
            {"type": "user.define_outcome", "description": "A report", "rubric": {"type": "file", "file_id": "file_r"},
             "max_iterations": 5},
        ],
        resources=[
            {"type": "github_repository", "url": "https://github.com/acme/app", "authorization_token": TOKEN,
             "checkout": {"type": "commit", "sha": "b" * 40}},
            {"type": "file", "file_id": "file_01", "mount_path": "/mnt/in.csv"},
            {"type": "memory_store", "memory_store_id": "memstore_01", "access": "read_only"},
        ],
        vault_ids=[vault.id],
        metadata={"team": "security"},
        budget=BUDGET,
        schedule={"type": "cron", "expression": "*/15 9-17 * * 1-5", "timezone": "Europe/London"},
    )
    assert isinstance(created, BetaManagedAgentsDeployment)
    assert (created.agent.id, created.agent.version) == (agent.id, 1)
    assert created.description == "Every field"
    assert created.environment_id == environment.id
    assert [e.type for e in created.initial_events] == ["user.message", "system.message", "user.define_outcome"]
    assert created.initial_events[0].content[0].text == "Run the weekly compliance scan."
    assert created.initial_events[2].rubric.file_id == "file_r"
    assert created.initial_events[2].max_iterations == 5
    github, file, memory = created.resources
    assert isinstance(github, BetaManagedAgentsGitHubRepositoryResourceConfig)
    assert github.checkout.sha == "b" * 40
    assert not hasattr(github, "authorization_token") or github.authorization_token is None
    assert isinstance(file, BetaManagedAgentsFileResourceConfig) and file.mount_path == "/mnt/in.csv"
    assert isinstance(memory, BetaManagedAgentsMemoryStoreResourceConfig) and memory.access == "read_only"
    assert created.vault_ids == [vault.id]
    assert created.metadata == {"team": "security"}
    assert created.budget.type == "limit"
    assert (created.budget.max_list_cost.amount, created.budget.max_list_cost.currency) == ("2500", "USD")
    assert len(created.schedule.upcoming_runs_at) == 5
    assert isinstance(created.created_at, datetime) and created.created_at.tzinfo is not None
    assert created.archived_at is None

    retrieved = sdk.beta.deployments.retrieve(created.id)
    assert isinstance(retrieved, BetaManagedAgentsDeployment)
    assert retrieved.model_dump(exclude={"schedule"}) == created.model_dump(exclude={"schedule"})
    assert TOKEN not in retrieved.to_json()

    manual = sdk.beta.deployments.create(
        name="Manual", agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE],
    )
    assert manual.schedule is None
    assert manual.budget is None
    assert manual.agent.version == 2
    raw = sdk.beta.deployments.with_raw_response.retrieve(manual.id)
    assert "budget" not in raw.http_response.json()


def test_sdk_update(sdk, tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    created = sdk.beta.deployments.create(
        name="Before", agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE],
        description="old", metadata={"keep": "1", "drop": "2"}, budget=BUDGET,
        schedule={"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"},
    )
    add_version(agent, 2)
    updated = sdk.beta.deployments.update(
        created.id, name="After", agent=agent.id, description=None, metadata={"drop": None, "new": "3"},
        budget=None, schedule={"type": "cron", "expression": "0 8 * * *", "timezone": "Asia/Tokyo"},
    )
    assert isinstance(updated, BetaManagedAgentsDeployment)
    assert updated.name == "After"
    assert updated.agent.version == 2
    assert updated.description is None
    assert updated.metadata == {"keep": "1", "new": "3"}
    assert updated.budget is None
    assert (updated.schedule.expression, updated.schedule.timezone) == ("0 8 * * *", "Asia/Tokyo")
    assert all(at.hour == 23 and at.minute == 0 for at in updated.schedule.upcoming_runs_at)
    assert updated.updated_at >= created.updated_at

    manual = sdk.beta.deployments.update(created.id, schedule=None, resources=None, vault_ids=None)
    assert manual.schedule is None and manual.resources == [] and manual.vault_ids == []
    assert Deployment.objects.get(pk=created.id).next_fire_at is None

    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.beta.deployments.update(created.id, initial_events=[])
    assert raised.value.status_code == 400
    assert raised.value.body["error"]["message"] == "initial_events: must contain at least 1 event"


def test_sdk_list_auto_paginates_and_filters(sdk, tenant):
    agent = make_agent(tenant)
    other = make_agent(tenant, name="other")
    environment = make_environment(tenant)

    def make(name, agent_id):
        return sdk.beta.deployments.create(
            name=name, agent=agent_id, environment_id=environment.id, initial_events=[USER_MESSAGE]
        ).id

    ids = [make(f"d{i}", agent.id) for i in range(5)]
    theirs = make("other", other.id)
    sdk.beta.deployments.pause(ids[1])
    sdk.beta.deployments.archive(ids[2])

    page = sdk.beta.deployments.list(limit=2)
    assert len(page.data) == 2 and page.next_page is not None
    everything = list(sdk.beta.deployments.list(limit=2))
    assert all(isinstance(d, BetaManagedAgentsDeployment) for d in everything)
    assert [d.id for d in everything] == [theirs, ids[4], ids[3], ids[1], ids[0]]

    assert [d.id for d in sdk.beta.deployments.list(limit=2, include_archived=True)] == [
        theirs, *reversed(ids)
    ]
    assert [d.id for d in sdk.beta.deployments.list(status="paused")] == [ids[1]]
    assert [d.id for d in sdk.beta.deployments.list(agent_id=other.id)] == [theirs]
    assert [d.id for d in sdk.beta.deployments.list(status="active", agent_id=agent.id, limit=1)] == [
        ids[4], ids[3], ids[0]
    ]
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert list(sdk.beta.deployments.list(created_at_gte=future)) == []
    assert len(list(sdk.beta.deployments.list(created_at_lte=future, include_archived=True))) == 6
    assert len(list(sdk.beta.deployments.list(created_at_gte="2000-01-01T00:00:00Z"))) == 5

    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.beta.deployments.list(status="paused", include_archived=True)
    assert raised.value.body["error"]["message"] == "include_archived: cannot be combined with status"


def test_sdk_pause_unpause_archive(sdk, tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    created = sdk.beta.deployments.create(
        name="Lifecycle", agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE],
        schedule={"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"},
    )

    paused = sdk.beta.deployments.pause(created.id)
    assert isinstance(paused, BetaManagedAgentsDeployment)
    assert paused.status == "paused"
    assert isinstance(paused.paused_reason, BetaManagedAgentsManualDeploymentPausedReason)
    assert len(paused.schedule.upcoming_runs_at) == 5
    assert sdk.beta.deployments.pause(created.id).updated_at == paused.updated_at

    unpaused = sdk.beta.deployments.unpause(created.id)
    assert (unpaused.status, unpaused.paused_reason) == ("active", None)

    archived = sdk.beta.deployments.archive(created.id)
    assert isinstance(archived, BetaManagedAgentsDeployment)
    assert archived.archived_at is not None
    assert archived.status == "active"
    assert archived.schedule.upcoming_runs_at == []
    assert sdk.beta.deployments.archive(created.id).archived_at == archived.archived_at

    for method in (sdk.beta.deployments.pause, sdk.beta.deployments.unpause):
        with pytest.raises(anthropic.BadRequestError) as raised:
            method(created.id)
        assert "is archived" in raised.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        sdk.beta.deployments.update(created.id, name="too late")


def test_sdk_not_found_for_unknown_and_foreign_deployments(sdk, live_server, tenant, other_tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    mine = sdk.beta.deployments.create(
        name="Mine", agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE]
    )
    stranger = other_tenant.sdk(live_server.url)
    calls = [
        lambda c, pk: c.beta.deployments.retrieve(pk),
        lambda c, pk: c.beta.deployments.update(pk, name="x"),
        lambda c, pk: c.beta.deployments.pause(pk),
        lambda c, pk: c.beta.deployments.unpause(pk),
        lambda c, pk: c.beta.deployments.archive(pk),
    ]
    for call in calls:
        for client, pk in ((stranger, mine.id), (sdk, "depl_01NOTHERE")):
            with pytest.raises(anthropic.NotFoundError) as raised:
                call(client, pk)
            assert raised.value.body["error"]["type"] == "not_found_error"
            assert raised.value.body["error"]["message"] == f"deployment {pk} not found"
    assert sdk.beta.deployments.retrieve(mine.id).name == "Mine"
    stranger.close()

"""Deployments whose agents live on a remote platform (SESSION_GATEWAY=anthropic), through the SDK
as a user drives them: a second live instance of this service (built-in platform, its own process)
is the remote platform, and each organization reaches it with its own upstream credentials."""

from datetime import timedelta

import anthropic
import pytest

from deployments_app.models import Deployment
from platform_app.models import Session
from runs_app import firing, scheduler
from runs_app.models import DeploymentRun, Fire
from tests.conftest import Tenant
from tests.factories import USER_MESSAGE

WEEKLY = {"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"}


@pytest.fixture
def remote_setup(upstream, gateway_mode, live_server, settings):
    """Our organization connected to an upstream organization; an SDK client of ours (one
    base_url: this service) and one of the upstream organization (straight at the upstream)."""
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0
    tenant = Tenant("Acme remote")
    remote = upstream.connect(tenant)
    ours = tenant.sdk(live_server.url)
    theirs = anthropic.Anthropic(base_url=upstream.url, api_key=remote.key, max_retries=0)
    agent = theirs.beta.agents.create(name="triage", model="claude-sonnet-4-6")
    environment = theirs.beta.environments.create(name="prod")
    yield tenant, remote, ours, theirs, agent, environment
    ours.close()
    theirs.close()


def create(client, agent, environment, **fields):
    return client.beta.deployments.create(
        name="Weekly compliance scan", agent=agent, environment_id=environment,
        initial_events=[USER_MESSAGE], **fields,
    )


def test_the_public_docs_flow_runs_against_one_base_url(upstream, gateway_mode, live_server):
    """agents.create, environments.create, deployments.create, run, deployment_runs.list and
    sessions.retrieve: every call to this service, the platform's forwarded upstream."""
    tenant = Tenant("Docs flow")
    upstream.connect(tenant)
    with tenant.sdk(live_server.url) as client:
        agent = client.beta.agents.create(name="Compliance", model="claude-sonnet-4-6")
        environment = client.beta.environments.create(name="prod")
        deployment = client.beta.deployments.create(
            name="Weekly compliance scan",
            agent=agent.id,
            environment_id=environment.id,
            initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "Run the weekly compliance scan."}]}],
            schedule={"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"},
        )
        assert deployment.agent.id == agent.id and deployment.agent.version == agent.version == 1
        assert len(deployment.schedule.upcoming_runs_at) == 5
        run = client.beta.deployments.run(deployment.id)
        assert run.session_id and run.error is None and run.trigger_context.type == "manual"
        runs = list(client.beta.deployment_runs.list(deployment_id=deployment.id))
        assert [r.id for r in runs] == [run.id]
        session = client.beta.sessions.retrieve(run.session_id)
        assert session.id == run.session_id and session.agent.id == agent.id
        client.beta.deployments.pause(deployment.id)
        client.beta.deployments.unpause(deployment.id)
        assert client.beta.deployments.archive(deployment.id).archived_at is not None
    # Nothing of the remote agent exists in this organization's built-in platform tables.
    assert not Session.objects.filter(organization=tenant.organization).exists()


def test_create_pins_the_remote_latest_version_and_update_repins(remote_setup):
    _tenant, _remote, ours, theirs, agent, environment = remote_setup
    theirs.beta.agents.update(agent.id, version=1, system="be brief")
    deployment = create(ours, agent.id, environment.id, schedule=WEEKLY)
    assert (deployment.agent.id, deployment.agent.version) == (agent.id, 2)
    pinned = create(ours, {"type": "agent", "id": agent.id, "version": 1}, environment.id)
    assert pinned.agent.version == 1
    theirs.beta.agents.update(agent.id, version=2, system="be briefer")
    updated = ours.beta.deployments.update(deployment.id, agent=agent.id)
    assert updated.agent.version == 3


def test_remote_references_get_the_local_envelopes_and_field_names(remote_setup):
    _tenant, _remote, ours, theirs, agent, environment = remote_setup
    with pytest.raises(anthropic.NotFoundError) as missing_env:
        create(ours, agent.id, "env_01missing")
    assert missing_env.value.body["error"]["message"] == "environment_id: environment env_01missing not found"
    with pytest.raises(anthropic.NotFoundError) as missing_agent:
        create(ours, "agent_01missing", environment.id)
    assert missing_agent.value.body["error"]["message"] == "agent: agent agent_01missing not found"
    with pytest.raises(anthropic.NotFoundError) as missing_version:
        create(ours, {"type": "agent", "id": agent.id, "version": 9}, environment.id)
    assert missing_version.value.body["error"]["message"] == f"agent.version: agent {agent.id} has no version 9"
    vault = theirs.beta.vaults.create(display_name="keys")
    with pytest.raises(anthropic.NotFoundError) as missing_vault:
        create(ours, agent.id, environment.id, vault_ids=[vault.id, "vlt_01missing"])
    assert missing_vault.value.body["error"]["message"] == "vault_ids[1]: vault vlt_01missing not found"
    theirs.beta.vaults.archive(vault.id)
    with pytest.raises(anthropic.BadRequestError) as archived_vault:
        create(ours, agent.id, environment.id, vault_ids=[vault.id])
    assert archived_vault.value.body["error"]["message"] == f"vault_ids[0]: vault {vault.id} is archived"
    deployment = create(ours, agent.id, environment.id)
    theirs.beta.environments.archive(environment.id)
    with pytest.raises(anthropic.BadRequestError) as archived_env:
        ours.beta.deployments.update(deployment.id, environment_id=environment.id)
    assert archived_env.value.body["error"]["message"] == f"environment_id: environment {environment.id} is archived"
    theirs.beta.agents.archive(agent.id)
    with pytest.raises(anthropic.BadRequestError) as archived_agent:
        create(ours, agent.id, theirs.beta.environments.create(name="staging").id)
    assert archived_agent.value.body["error"]["message"] == f"agent: agent {agent.id} is archived"


def test_one_organization_never_reaches_anothers_upstream(upstream, gateway_mode, live_server):
    acme, globex = Tenant("Acme A"), Tenant("Globex B")
    upstream.connect(acme)
    globex_remote = upstream.connect(globex)
    with anthropic.Anthropic(base_url=upstream.url, api_key=globex_remote.key, max_retries=0) as theirs:
        agent = theirs.beta.agents.create(name="globex agent", model="claude-sonnet-4-6")
        environment = theirs.beta.environments.create(name="globex env")
        session = theirs.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    with acme.sdk(live_server.url) as client:
        with pytest.raises(anthropic.NotFoundError):
            create(client, agent.id, environment.id)
        with pytest.raises(anthropic.NotFoundError):
            client.beta.sessions.retrieve(session.id)
        with pytest.raises(anthropic.NotFoundError):
            client.beta.agents.retrieve(agent.id)
    assert not Deployment.objects.filter(organization=acme.organization).exists()


def test_upstream_trouble_during_create_is_a_typed_error_never_a_500(upstream, gateway_mode, live_server, settings):
    from accounts_app.services import organization_upstream_credentials_set

    tenant = Tenant("Trouble")
    with tenant.sdk(live_server.url) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as no_credentials:
            create(client, "agent_01x", "env_01x")
        assert "no upstream credentials" in no_credentials.value.body["error"]["message"]

        organization_upstream_credentials_set(organization=tenant.organization, api_key="sk-wrong-key", base_url=upstream.url)
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            create(client, "agent_01x", "env_01x")
        message = refused.value.body["error"]["message"]
        assert "upstream credentials were refused" in message and "sk-wrong-key" not in message

        organization_upstream_credentials_set(organization=tenant.organization, api_key="sk-any", base_url="http://127.0.0.1:9")
        settings.UPSTREAM_TIMEOUT_SECONDS = 2
        with pytest.raises(anthropic.APIStatusError) as down:
            create(client, "agent_01x", "env_01x")
        assert down.value.status_code == 529
        assert down.value.body["error"]["type"] == "overloaded_error"
        assert "127.0.0.1:9" in down.value.body["error"]["message"]


# --- fires ----------------------------------------------------------------------------------------


def fire_now(deployment_id: str) -> firing.FireResult:
    """Let the scheduler write the deployment's next fire (as if its time had come) and execute
    it, as a worker would."""
    deployment = Deployment.objects.get(pk=deployment_id)
    Deployment.objects.filter(pk=deployment_id).update(jitter_fraction=0.0)
    pending = Fire.objects.filter(deployment_id=deployment_id, status="pending")
    if not pending.exists():  # (another deployment's tick may have written it already)
        scheduler.claim_due(deployment.next_fire_at + timedelta(seconds=1))
    return firing.execute_fire(pending.order_by("scheduled_at").first().id)


def test_a_scheduled_fire_creates_one_session_upstream_keyed_by_the_fire(remote_setup):
    tenant, remote, ours, _theirs, agent, environment = remote_setup
    deployment = create(ours, agent.id, environment.id, schedule={"type": "cron", "expression": "* * * * *", "timezone": "UTC"})
    result = fire_now(deployment.id)
    assert result.status == "done"
    run = DeploymentRun.objects.get(deployment_id=deployment.id)
    session = Session.objects.get(pk=run.session_id)
    assert session.organization_id == remote.organization.pk  # created upstream, as the upstream organization
    assert session.idempotency_key == run.fire_id and session.agent_version == 1
    # Executing the same fire again creates nothing: the claim refuses, and a retried call with the
    # same key would get the same session.
    assert firing.execute_fire(run.fire_id).status == "not_claimed"
    assert Session.objects.filter(organization=remote.organization).count() == 1
    assert not Session.objects.filter(organization=tenant.organization).exists()


def test_remote_archived_agent_archives_and_archived_environment_pauses(remote_setup):
    _tenant, _remote, ours, theirs, agent, environment = remote_setup
    every_minute = {"type": "cron", "expression": "* * * * *", "timezone": "UTC"}
    other_env = theirs.beta.environments.create(name="staging")
    first = create(ours, agent.id, environment.id, schedule=every_minute)
    second = create(ours, agent.id, other_env.id, schedule=every_minute)
    theirs.beta.environments.archive(other_env.id)
    fire_now(second.id)
    run = DeploymentRun.objects.get(deployment_id=second.id)
    assert run.error_type == "environment_archived_error" and other_env.id in run.error_message
    paused = ours.beta.deployments.retrieve(second.id)
    assert paused.status == "paused" and paused.paused_reason.type == "error"
    theirs.beta.agents.archive(agent.id)
    assert fire_now(first.id).status == "archived"
    assert ours.beta.deployments.retrieve(first.id).archived_at is not None
    assert not DeploymentRun.objects.filter(deployment_id=first.id).exists()


def test_a_batch_of_remote_fires_shares_its_calls(remote_setup, upstream):
    """Twenty deployments due together: one message, one claim, twenty sessions upstream, and no
    reference look-up when every session is created."""
    _tenant, remote, ours, _theirs, agent, environment = remote_setup
    every_minute = {"type": "cron", "expression": "* * * * *", "timezone": "UTC"}
    ids = [create(ours, agent.id, environment.id, schedule=every_minute).id for _ in range(20)]
    Deployment.objects.filter(pk__in=ids).update(jitter_fraction=0.0)
    due = Deployment.objects.filter(pk__in=ids).values_list("next_fire_at", flat=True).first()
    fire_ids = [fire_id for fire_id, _, _ in scheduler.claim_due(due + timedelta(seconds=1)).fires]
    assert len(fire_ids) == 20
    before = upstream.log_text().count("GET /v1/agents/")
    results = firing.execute_fires(fire_ids)
    assert [result.status for result in results.values()] == ["done"] * 20
    assert Session.objects.filter(organization=remote.organization).count() == 20
    assert DeploymentRun.objects.filter(deployment_id__in=ids, session_id__isnull=False).count() == 20
    assert Fire.objects.filter(pk__in=fire_ids, status="done").count() == 20
    assert upstream.log_text().count("GET /v1/agents/") == before

"""The anthropic gateway end to end: pointed at a live instance of this service running the
built-in platform, with the remote organization's key."""

from datetime import datetime, timezone

import pytest

from platform_app.models import Session
from runs_app import firing, scheduler
from gateways.anthropic import AnthropicGateway
from runs_app.models import DeploymentRun
from tests.conftest import Tenant
from tests.factories import USER_MESSAGE

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)


@pytest.fixture
def remote(live_server, transactional_db):
    """The organization on the 'other instance', its SDK client and a gateway using its key."""
    tenant = Tenant("Remote platform")
    client = tenant.sdk(live_server.url)
    gateway = AnthropicGateway(api_key=tenant.key, base_url=live_server.url)
    return tenant, client, gateway


@pytest.fixture
def local_deployment(tenant):
    def make(*, agent_id, environment_id, vault_ids=()):
        from deployments_app.models import Deployment

        return Deployment.objects.create(
            organization=tenant.organization, workspace=tenant.workspace, name="remote run",
            agent_id=agent_id, agent_version=1, environment_id=environment_id, vault_ids=list(vault_ids),
            initial_events=[USER_MESSAGE], schedule_expression="* * * * *", schedule_timezone="UTC",
            next_fire_at=datetime(2026, 11, 23, 10, 0, tzinfo=UTC), jitter_fraction=0.0,
        )

    return make


def fire_once(gateway):
    [(fire_id, _, _)] = scheduler.claim_due(T0).fires
    return firing.execute_fire(fire_id, gateway=gateway)


def test_session_is_created_on_the_remote_platform(remote, local_deployment):
    remote_tenant, client, gateway = remote
    agent = client.beta.agents.create(name="remote agent", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="remote env")
    deployment = local_deployment(agent_id=agent.id, environment_id=environment.id)
    assert fire_once(gateway).status == "done"
    run = DeploymentRun.objects.get(deployment=deployment)
    session = Session.objects.get(pk=run.session_id)
    assert session.organization_id == remote_tenant.organization.id
    assert session.idempotency_key == run.fire_id
    assert session.initial_events == [USER_MESSAGE]


def test_retry_with_the_same_key_returns_the_same_remote_session(remote, local_deployment):
    _, client, gateway = remote
    agent = client.beta.agents.create(name="remote agent", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="remote env")
    local_deployment(agent_id=agent.id, environment_id=environment.id)
    [(fire_id, _, _)] = scheduler.claim_due(T0).fires
    fire = firing.Fire.objects.get(pk=fire_id)
    deployment = fire.deployment
    request = firing.session_request(deployment, idempotency_key=fire_id, run_id="drun_x", title="t")
    [first] = gateway.create_sessions([request])
    [second] = gateway.create_sessions([request])
    assert first.session_id and first.session_id == second.session_id
    assert Session.objects.filter(idempotency_key=fire_id).count() == 1


def test_remote_archived_environment_is_recorded_and_pauses(remote, local_deployment):
    _, client, gateway = remote
    agent = client.beta.agents.create(name="remote agent", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="remote env")
    client.beta.environments.archive(environment.id)
    deployment = local_deployment(agent_id=agent.id, environment_id=environment.id)
    fire_once(gateway)
    run = DeploymentRun.objects.get(deployment=deployment)
    assert run.error_type == "environment_archived_error" and environment.id in run.error_message
    deployment.refresh_from_db()
    assert deployment.status == "paused"


def test_remote_archived_agent_archives_the_deployment(remote, local_deployment):
    _, client, gateway = remote
    agent = client.beta.agents.create(name="remote agent", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="remote env")
    client.beta.agents.archive(agent.id)
    deployment = local_deployment(agent_id=agent.id, environment_id=environment.id)
    assert fire_once(gateway).status == "archived"
    deployment.refresh_from_db()
    assert deployment.archived_at is not None
    assert not DeploymentRun.objects.filter(deployment=deployment).exists()


def test_remote_missing_vault_is_vault_not_found(remote, local_deployment):
    _, client, gateway = remote
    agent = client.beta.agents.create(name="remote agent", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="remote env")
    deployment = local_deployment(agent_id=agent.id, environment_id=environment.id, vault_ids=["vlt_missing"])
    fire_once(gateway)
    assert DeploymentRun.objects.get(deployment=deployment).error_type == "vault_not_found_error"


def test_remote_rate_limit_is_recorded_without_retry(remote, local_deployment):
    remote_tenant, client, gateway = remote
    agent = client.beta.agents.create(name="remote agent", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="remote env")
    remote_tenant.organization.session_rate_limit_per_minute = 1
    remote_tenant.organization.save()
    client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    deployment = local_deployment(agent_id=agent.id, environment_id=environment.id)
    fire_once(gateway)
    run = DeploymentRun.objects.get(deployment=deployment)
    assert run.error_type == "session_rate_limited_error"
    deployment.refresh_from_db()
    assert deployment.status == "active"


def test_unreachable_platform_becomes_service_unavailable(transactional_db, local_deployment, settings):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0
    gateway = AnthropicGateway(api_key="sk-x", base_url="http://127.0.0.1:1", timeout=1)
    deployment = local_deployment(agent_id="agent_x", environment_id="env_x")
    fire_once(gateway)
    run = DeploymentRun.objects.get(deployment=deployment)
    assert run.error_type == "service_unavailable_error"
    assert deployment.__class__.objects.get(pk=deployment.pk).status == "active"



"""platform_app.services.session_create: the checks, their order and their typed errors."""

import pytest
from django.db import transaction
from django.utils import timezone

from core.errors import InvalidRequest
from platform_app import errors, services
from platform_app.models import Agent, Session
from tests.platform.conftest import USER_MESSAGE

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready(tenant, make_agent, make_environment, make_vault):
    helper = make_agent(name="helper")
    agent = make_agent(name="lead", multiagent={"type": "coordinator", "agents": [helper.id]})
    return {"helper": helper, "agent": agent, "environment": make_environment(), "vault": make_vault()}


def create(tenant, ready, **overrides):
    args = {
        "organization": tenant.organization,
        "workspace": tenant.workspace,
        "agent": ready["agent"].id,
        "environment_id": ready["environment"].id,
        "initial_events": [USER_MESSAGE],
        "vault_ids": [ready["vault"].id],
    }
    args.update(overrides)
    return services.session_create(**args)


def test_creates_an_idle_session_record(tenant, ready):
    session, created = create(tenant, ready, metadata={"a": "b"}, title="t", deployment_run_id="drun_01X")
    assert created is True
    session.refresh_from_db()
    assert session.status == "idle"
    assert (session.agent_id, session.agent_version) == (ready["agent"].id, 1)
    assert session.environment_id == ready["environment"].id
    assert session.vault_ids == [ready["vault"].id]
    assert session.initial_events == [USER_MESSAGE]
    assert (session.metadata, session.title, session.deployment_run_id) == ({"a": "b"}, "t", "drun_01X")
    assert (session.organization_id, session.workspace_id) == (tenant.organization.id, tenant.workspace.id)


def test_a_github_token_is_never_stored(tenant, ready):
    resources = [{"type": "github_repository", "url": "https://github.com/acme/app.git", "authorization_token": "ghp_topsecret"}]
    session, _ = create(tenant, ready, resources=resources)
    session.refresh_from_db()
    assert "ghp_topsecret" not in str(session.resources)
    assert session.resources[0]["url"] == "https://github.com/acme/app.git"
    assert session.resources[0]["mount_path"] == "/workspace/app"
    assert set(session.resources[0]) == {"id", "type", "url", "checkout", "mount_path", "created_at", "updated_at"}


def test_unknown_agent_raises_agent_not_found(tenant, ready):
    with pytest.raises(errors.AgentNotFound) as error:
        create(tenant, ready, agent="agent_missing")
    assert (error.value.status, error.value.resource_id, error.value.message) == (404, "agent_missing", "agent agent_missing not found")
    assert error.value.archives_deployment is True and error.value.run_error_type is None


def test_archived_agent_raises_agent_archived(tenant, ready):
    Agent.objects.filter(pk=ready["agent"].pk).update(archived_at=timezone.now())
    with pytest.raises(errors.AgentArchived) as error:
        create(tenant, ready)
    assert error.value.status == 400
    assert error.value.message == f"agent {ready['agent'].id} is archived"
    assert error.value.archives_deployment is True


def test_missing_version_raises_agent_version_not_found(tenant, ready):
    with pytest.raises(errors.AgentVersionNotFound) as error:
        create(tenant, ready, agent={"type": "agent", "id": ready["agent"].id, "version": 7})
    assert error.value.status == 404 and error.value.resource_id == ready["agent"].id
    assert error.value.archives_deployment is False and error.value.run_error_type is None


def test_archived_subagent_raises_subagent_archived(tenant, ready):
    Agent.objects.filter(pk=ready["helper"].pk).update(archived_at=timezone.now())
    with pytest.raises(errors.SubagentArchived) as error:
        create(tenant, ready)
    assert error.value.run_error_type == "agent_archived_error"
    assert error.value.resource_id == ready["helper"].id
    assert ready["helper"].id in error.value.message and "archived" in error.value.message


def test_deleted_subagent_raises_subagent_archived(tenant, ready):
    Agent.objects.filter(pk=ready["helper"].pk).delete()
    with pytest.raises(errors.SubagentArchived) as error:
        create(tenant, ready)
    assert error.value.message == f"subagent {ready['helper'].id} of agent {ready['agent'].id} no longer exists"


def test_subagents_of_a_multiagent_20261001_roster_are_checked(tenant, ready, make_agent):
    agent = make_agent(
        name="planner",
        multiagent={"type": "multiagent_20261001", "workflows": {"type": "enabled", "predefined_agents": [ready["helper"].id]}},
    )
    services.agent_archive(agent=ready["helper"])
    with pytest.raises(errors.SubagentArchived):
        create(tenant, ready, agent=agent.id)


def test_missing_environment_raises_environment_not_found(tenant, ready):
    with pytest.raises(errors.EnvironmentNotFound) as error:
        create(tenant, ready, environment_id="env_missing")
    assert error.value.run_error_type == "environment_not_found_error"
    assert error.value.message == "environment env_missing not found"


def test_archived_environment_raises_environment_archived(tenant, ready):
    services.environment_archive(environment=ready["environment"])
    with pytest.raises(errors.EnvironmentArchived) as error:
        create(tenant, ready)
    assert error.value.run_error_type == "environment_archived_error"
    assert error.value.message == f"environment {ready['environment'].id} is archived"


def test_missing_vault_raises_vault_not_found(tenant, ready):
    with pytest.raises(errors.VaultNotFound) as error:
        create(tenant, ready, vault_ids=[ready["vault"].id, "vlt_missing"])
    assert (error.value.run_error_type, error.value.resource_id) == ("vault_not_found_error", "vlt_missing")


def test_archived_vault_raises_vault_archived(tenant, ready):
    services.vault_archive(vault=ready["vault"])
    with pytest.raises(errors.VaultArchived) as error:
        create(tenant, ready)
    assert error.value.run_error_type == "vault_archived_error"
    assert error.value.message == f"vault {ready['vault'].id} is archived"


def test_archived_workspace_raises_workspace_archived(tenant, ready):
    tenant.workspace.archived_at = timezone.now()
    tenant.workspace.save()
    with pytest.raises(errors.WorkspaceArchived) as error:
        create(tenant, ready)
    assert error.value.run_error_type == "workspace_archived_error"


def test_disabled_organization_is_checked_first(tenant, ready):
    tenant.organization.disabled_at = timezone.now()
    tenant.organization.save()
    services.environment_archive(environment=ready["environment"])
    with pytest.raises(errors.OrganizationDisabled) as error:
        create(tenant, ready, agent="agent_missing")
    assert error.value.status == 403 and error.value.error_type == "permission_error"
    assert error.value.run_error_type == "organization_disabled_error"


def test_rate_limit_raises_session_rate_limited(tenant, ready):
    tenant.organization.session_rate_limit_per_minute = 2
    tenant.organization.save()
    create(tenant, ready)
    create(tenant, ready)
    with pytest.raises(errors.SessionRateLimited) as error:
        create(tenant, ready)
    assert error.value.status == 429 and error.value.error_type == "rate_limit_error"
    assert error.value.run_error_type == "session_rate_limited_error"
    assert 1 <= int(error.value.headers["retry-after"]) <= 60
    assert Session.objects.count() == 2


def test_sessions_older_than_a_minute_do_not_count(tenant, ready):
    tenant.organization.session_rate_limit_per_minute = 1
    tenant.organization.save()
    old, _ = create(tenant, ready)
    Session.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(seconds=61))
    session, created = create(tenant, ready)
    assert created and session.pk != old.pk


def test_an_idempotent_replay_comes_before_every_other_check(tenant, ready):
    first, created = create(tenant, ready, idempotency_key="fire_01")
    assert created
    Agent.objects.filter(pk=ready["agent"].pk).update(archived_at=timezone.now())
    services.environment_archive(environment=ready["environment"])
    tenant.organization.session_rate_limit_per_minute = 1
    tenant.organization.save()
    again, created = create(tenant, ready, idempotency_key="fire_01")
    assert (again.pk, created) == (first.pk, False)
    assert Session.objects.count() == 1


def test_works_inside_an_outer_transaction_and_rolls_back_with_it(tenant, ready):
    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        with transaction.atomic():
            session, created = create(tenant, ready, idempotency_key="k")
            assert created and Session.objects.filter(pk=session.pk).exists()
            with pytest.raises(errors.EnvironmentNotFound):
                create(tenant, ready, environment_id="env_nope")
            assert Session.objects.filter(pk=session.pk).exists()
            raise Abort
    assert not Session.objects.exists()


def test_a_malformed_request_names_the_field(tenant, ready):
    cases = [
        ({"agent": 5}, "agent: must be an agent id string or an object"),
        ({"agent": {"type": "agent"}}, "agent.id: is required"),
        ({"agent": {"type": "agent_with_overrides", "id": "a"}}, "agent.type:"),
        ({"initial_events": [{"type": "user.message", "content": []}]}, "initial_events[0].content: must have at least 1 item"),
        ({"initial_events": [{"type": "user.shout"}]}, "initial_events[0].type: must be one of"),
        ({"resources": [{"type": "github_repository"}]}, "resources[0].url: is required"),
        ({"vault_ids": "vlt_1"}, "vault_ids: must be an array"),
        ({"metadata": {"k" * 65: "v"}}, "metadata: keys must be 1 to 64 characters"),
        ({"budget": {"type": "limit", "max_list_cost": {"amount": "007", "currency": "USD"}}}, "budget.max_list_cost.amount:"),
        ({"title": "x" * 513}, "title: must be at most 512 characters"),
    ]
    for overrides, message in cases:
        with pytest.raises(InvalidRequest) as error:
            create(tenant, ready, **overrides)
        assert error.value.message.startswith(message), (overrides, error.value.message)
    assert not Session.objects.exists()


def test_a_session_made_by_a_deployment_run_reports_its_deployment(api, tenant, ready):
    from deployments_app.models import Deployment
    from runs_app.models import DeploymentRun

    deployment = Deployment.objects.create(
        organization=tenant.organization, workspace=tenant.workspace, name="nightly", agent_id=ready["agent"].id,
        agent_version=1, environment_id=ready["environment"].id, initial_events=[USER_MESSAGE],
    )
    session, _ = create(tenant, ready, deployment_run_id="drun_01TEST", idempotency_key="fire_01TEST")
    plain, _ = create(tenant, ready)
    DeploymentRun.objects.create(
        id="drun_01TEST", organization=tenant.organization, workspace=tenant.workspace, deployment=deployment,
        agent_id=ready["agent"].id, agent_version=1, trigger_type="manual", session_id=session.id, started_at=timezone.now(),
    )
    assert api.get(f"/v1/sessions/{session.id}").json()["deployment_id"] == deployment.id
    assert api.get(f"/v1/sessions/{plain.id}").json()["deployment_id"] is None
    listed = api.get(f"/v1/sessions?deployment_id={deployment.id}").json()["data"]
    assert [row["id"] for row in listed] == [session.id]

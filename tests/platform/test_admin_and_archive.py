"""Agent archive (with its deployments, in one transaction) and the admin pages of the platform."""

import pytest
from django.db import transaction
from django.urls import reverse

from deployments_app.models import Deployment
from platform_app import services
from platform_app.models import Agent, Session
from tests.platform.conftest import USER_MESSAGE

pytestmark = pytest.mark.django_db


def _deployment(tenant, agent, **fields):
    return Deployment.objects.create(
        organization=tenant.organization,
        workspace=tenant.workspace,
        name=fields.pop("name", "nightly"),
        agent_id=agent.id,
        agent_version=agent.latest_version,
        environment_id="env_x",
        initial_events=[USER_MESSAGE],
        **fields,
    )


def test_archiving_an_agent_archives_its_deployments(tenant, make_agent):
    agent, other = make_agent(), make_agent(name="other")
    mine = _deployment(tenant, agent)
    theirs = _deployment(tenant, other, name="other")
    services.agent_archive(agent=agent)
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert Agent.objects.get(pk=agent.pk).archived_at is not None
    assert mine.archived_at is not None and mine.next_fire_at is None
    assert theirs.archived_at is None


def test_agent_archive_is_one_transaction_with_the_deployments(tenant, make_agent, monkeypatch):
    import deployments_app.services

    agent = make_agent()
    deployment = _deployment(tenant, agent)

    def fail(*, agent_id, organization_id):
        raise RuntimeError("deployments unavailable")

    monkeypatch.setattr(deployments_app.services, "deployments_archive_for_agent", fail)
    with pytest.raises(RuntimeError):
        services.agent_archive(agent=agent)
    assert Agent.objects.get(pk=agent.pk).archived_at is None
    deployment.refresh_from_db()
    assert deployment.archived_at is None


def test_archiving_inside_an_outer_transaction_rolls_back_with_it(tenant, make_agent):
    agent = make_agent()
    deployment = _deployment(tenant, agent)
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            services.agent_archive(agent=agent)
            1 / 0
    deployment.refresh_from_db()
    assert deployment.archived_at is None and Agent.objects.get(pk=agent.pk).archived_at is None


def test_admin_lists_and_shows_every_platform_model(admin_client, tenant, make_agent, make_environment, make_vault):
    agent = make_agent(name="Admin-visible agent")
    services.agent_update(agent=agent, name="Second name")
    environment, vault = make_environment(name="admin-env"), make_vault(display_name="admin-vault")
    session, _ = services.session_create(
        organization=tenant.organization, workspace=tenant.workspace, agent=agent.id, environment_id=environment.id,
        resources=[{"type": "github_repository", "url": "https://github.com/a/b", "authorization_token": "ghp_admin_secret"}],
    )
    pages = {
        "platform_app_agent": ["Second name"],
        "platform_app_environment": ["admin-env"],
        "platform_app_vault": ["admin-vault"],
        "platform_app_session": [session.id],
    }
    for name, expected in pages.items():
        response = admin_client.get(reverse(f"admin:{name}_changelist"))
        assert response.status_code == 200, name
        for text in expected:
            assert text in response.content.decode()

    page = admin_client.get(reverse("admin:platform_app_agent_change", args=[agent.pk])).content.decode()
    assert "Admin-visible agent" in page and "Second name" in page
    session_page = admin_client.get(reverse("admin:platform_app_session_change", args=[session.pk]))
    assert session_page.status_code == 200
    body = session_page.content.decode()
    assert "github.com/a/b" in body and "ghp_admin_secret" not in body
    assert admin_client.get(reverse("admin:platform_app_session_add")).status_code == 403
    assert admin_client.post(reverse("admin:platform_app_session_delete", args=[session.pk]), {"post": "yes"}).status_code == 403
    assert Session.objects.filter(pk=session.pk).exists()


def test_admin_archive_action_goes_through_the_service(admin_client, tenant, make_agent):
    agent = make_agent()
    deployment = _deployment(tenant, agent)
    response = admin_client.post(
        reverse("admin:platform_app_agent_changelist"), {"action": "archive", "_selected_action": [agent.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "Archived 1 agent(s)." in response.content.decode()
    assert Agent.objects.get(pk=agent.pk).archived_at is not None
    deployment.refresh_from_db()
    assert deployment.archived_at is not None


def test_admin_environment_edits_are_checked_like_the_api(admin_client, tenant, make_environment):
    environment = make_environment(name="before")
    url = reverse("admin:platform_app_environment_change", args=[environment.pk])
    form = {
        "organization": tenant.organization.pk, "workspace": tenant.workspace.pk, "name": "after", "description": "",
        "config": '{"type": "moon"}', "metadata": "{}",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 200
    assert "config.type: must be one of cloud, self_hosted" in response.content.decode()
    environment.refresh_from_db()
    assert environment.name == "before"

    admin_client.post(url, {**form, "config": '{"type": "cloud", "networking": {"type": "limited"}}'})
    environment.refresh_from_db()
    assert environment.name == "after"
    assert environment.config["networking"] == {
        "type": "limited", "allow_mcp_servers": False, "allow_package_managers": False, "allowed_hosts": []
    }
    assert environment.config["packages"]["pip"] == []

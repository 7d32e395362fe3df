"""Fixtures of the security tests: a tenant with one of everything (agent with two versions,
environment, vault, scheduled deployment holding a GitHub token, a manual run and its session),
built through the services the API uses."""

from dataclasses import dataclass

import pytest

from deployments_app import services as deployment_services
from deployments_app.models import Deployment
from platform_app import services as platform_services
from runs_app.firing import run_manually

GITHUB_TOKEN = "ghp_SECURITYsuiteTOKEN0123456789abcdefXYZ"
USER_MESSAGE = {"type": "user.message", "content": [{"type": "text", "text": "Triage the open issues."}]}
DAILY = {"type": "cron", "expression": "0 6 * * *", "timezone": "Europe/Paris"}


@dataclass
class World:
    """Ids of one tenant's resources, by the path parameter that names them."""

    agent_id: str
    environment_id: str
    vault_id: str
    deployment_id: str
    run_id: str
    session_id: str

    def as_path_parameters(self) -> dict[str, str]:
        return {
            "agent_id": self.agent_id,
            "environment_id": self.environment_id,
            "vault_id": self.vault_id,
            "deployment_id": self.deployment_id,
            "run_id": self.run_id,
            "session_id": self.session_id,
        }


def build_world(tenant, *, token: str = GITHUB_TOKEN, name: str = "Nightly triage") -> World:
    scope = {"organization": tenant.organization, "workspace": tenant.workspace}
    agent = platform_services.agent_create(**scope, name="Triage bot", model="claude-sonnet-4-6")
    agent = platform_services.agent_update(agent=agent, system="Be brief.")
    environment = platform_services.environment_create(**scope, name="prod")
    vault = platform_services.vault_create(**scope, display_name="Team credentials")
    deployment = deployment_services.deployment_create(
        **scope,
        name=name,
        agent=agent.id,
        environment_id=environment.id,
        initial_events=[USER_MESSAGE],
        vault_ids=[vault.id],
        resources=[{"type": "github_repository", "url": "https://github.com/acme/app", "authorization_token": token}],
        metadata={"team": "platform"},
        schedule=dict(DAILY),
    )
    run = run_manually(deployment=Deployment.objects.get(pk=deployment.pk)).run
    assert run is not None and run.session_id, run
    return World(
        agent_id=agent.id,
        environment_id=environment.id,
        vault_id=vault.id,
        deployment_id=deployment.id,
        run_id=run.id,
        session_id=run.session_id,
    )


@pytest.fixture
def world(tenant) -> World:
    return build_world(tenant)


@pytest.fixture
def other_world(other_tenant) -> World:
    return build_world(other_tenant, token="ghp_OTHERtenantTOKEN9876543210zyxwvu", name="Globex nightly")

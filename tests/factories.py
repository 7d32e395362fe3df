"""Row factories for tests: platform resources and deployments straight in the database."""

import random
from datetime import datetime

from django.utils import timezone

from deployments_app import schedule
from deployments_app.models import Deployment
from platform_app.models import Agent, AgentVersion, Environment, Vault

USER_MESSAGE = {"type": "user.message", "content": [{"type": "text", "text": "Run the nightly triage."}]}


def make_agent(tenant, *, name="triage", roster: list[str] | None = None, archived=False) -> Agent:
    agent = Agent.objects.create(
        organization=tenant.organization, workspace=tenant.workspace, latest_version=1,
        archived_at=timezone.now() if archived else None,
    )
    multiagent = None
    if roster:
        multiagent = {"type": "coordinator", "agents": [{"type": "agent", "id": sub, "version": None} for sub in roster]}
    AgentVersion.objects.create(
        agent=agent, version=1, name=name, model={"id": "claude-sonnet-4-6"}, multiagent=multiagent,
    )
    return agent


def make_environment(tenant, *, name="prod", archived=False) -> Environment:
    return Environment.objects.create(
        organization=tenant.organization, workspace=tenant.workspace, name=name,
        config={"type": "cloud"}, archived_at=timezone.now() if archived else None,
    )


def make_vault(tenant, *, name="secrets") -> Vault:
    return Vault.objects.create(organization=tenant.organization, workspace=tenant.workspace, display_name=name)


def make_deployment(
    tenant, *, agent: Agent, environment: Environment, expression: str | None = "* * * * *",
    timezone_name: str = "UTC", now: datetime | None = None, jitter_fraction: float | None = None,
    vault_ids: list[str] | None = None, name: str = "nightly",
) -> Deployment:
    now = now or timezone.now()
    next_fire_at = schedule.next_fires(expression, timezone_name, now, n=1)[0] if expression else None
    return Deployment.objects.create(
        organization=tenant.organization, workspace=tenant.workspace, name=name,
        agent_id=agent.id, agent_version=agent.latest_version, environment_id=environment.id,
        initial_events=[USER_MESSAGE], vault_ids=vault_ids or [],
        schedule_expression=expression, schedule_timezone=timezone_name if expression else None,
        next_fire_at=next_fire_at,
        jitter_fraction=random.random() if jitter_fraction is None else jitter_fraction,
    )

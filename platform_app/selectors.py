"""Reads of the local platform, always scoped to one organization and workspace: a row of another
tenant is reported exactly like a row that does not exist."""

from datetime import datetime

from django.db import connection
from django.db.models import Q, QuerySet

from core.pagination import decode_cursor, encode_cursor, paginate
from platform_app import shapes
from platform_app.errors import (
    AgentNotFound,
    AgentVersionNotFound,
    EnvironmentNotFound,
    SessionNotFound,
    VaultNotFound,
)
from platform_app.models import Agent, AgentVersion, Environment, Session, Vault


def _tenant(model, organization, workspace) -> QuerySet:
    return model.objects.filter(organization=organization, workspace=workspace)


def _created_filters(queryset: QuerySet, created: dict[str, datetime] | None) -> QuerySet:
    for op, value in (created or {}).items():
        queryset = queryset.filter(**{f"created_at__{op}": value})
    return queryset


# --- agents ------------------------------------------------------------------------------------


def agent_get(*, organization, workspace, agent_id: str) -> Agent:
    queryset = _tenant(Agent, organization, workspace)
    agent = queryset.filter(pk=agent_id).first() if isinstance(agent_id, str) else None
    if agent is None:
        raise AgentNotFound(str(agent_id)[:64])
    return agent


def agent_version_get(*, agent: Agent, version: int | None = None) -> AgentVersion:
    """The given version of the agent, or its latest when `version` is None."""
    wanted = agent.latest_version if version is None else version
    row = AgentVersion.objects.filter(agent=agent, version=wanted).first()
    if row is None:
        raise AgentVersionNotFound(agent.id, wanted)
    return row


def agent_list(
    *, organization, workspace, include_archived: bool = False, created: dict | None = None, page: str | None, limit: int
):
    queryset = _created_filters(_tenant(Agent, organization, workspace), created)
    if not include_archived:
        queryset = queryset.filter(archived_at__isnull=True)
    agents, next_page = paginate(queryset, kind="agent", page=page, limit=limit)
    return agents, latest_versions(agents), next_page


def latest_versions(agents: list[Agent]) -> dict[str, AgentVersion]:
    """{agent id: its latest AgentVersion} in one query."""
    if not agents:
        return {}
    condition = Q()
    for agent in agents:
        condition |= Q(agent_id=agent.id, version=agent.latest_version)
    return {row.agent_id: row for row in AgentVersion.objects.filter(condition)}


def agent_version_list(*, agent: Agent, page: str | None, limit: int):
    return paginate(AgentVersion.objects.filter(agent=agent), kind=f"agent_version:{agent.id}", page=page, limit=limit)


def agent_roster_ids(version: AgentVersion) -> list[str]:
    """Ids of the other agents this version's multiagent roster names (its subagents), in roster
    order, without duplicates and without the agent itself (a `self` entry)."""
    ids: list[str] = []
    for _path, entries in shapes.multiagent_rosters(version.multiagent):
        for entry in entries:
            if entry.get("type") == "agent" and entry.get("id") != version.agent_id and entry["id"] not in ids:
                ids.append(entry["id"])
    return ids


def agent_roster_refs(version: AgentVersion) -> list[tuple[str, int]]:
    """(agent id, pinned version) of every subagent, the agent itself excluded."""
    refs: list[tuple[str, int]] = []
    for _path, entries in shapes.multiagent_rosters(version.multiagent):
        for entry in entries:
            if entry.get("type") == "agent" and entry.get("id") != version.agent_id:
                ref = (entry["id"], entry["version"])
                if ref not in refs:
                    refs.append(ref)
    return refs


def agent_versions_by_ref(refs) -> dict[tuple[str, int], AgentVersion]:
    refs = set(refs)
    if not refs:
        return {}
    condition = Q()
    for agent_id, version in refs:
        condition |= Q(agent_id=agent_id, version=version)
    return {(row.agent_id, row.version): row for row in AgentVersion.objects.filter(condition)}


# --- environments and vaults -------------------------------------------------------------------


def environment_get(*, organization, workspace, environment_id: str) -> Environment:
    queryset = _tenant(Environment, organization, workspace)
    environment = queryset.filter(pk=environment_id).first() if isinstance(environment_id, str) else None
    if environment is None:
        raise EnvironmentNotFound(str(environment_id)[:64])
    return environment


def environment_list(*, organization, workspace, include_archived: bool = False, page: str | None, limit: int):
    queryset = _tenant(Environment, organization, workspace)
    if not include_archived:
        queryset = queryset.filter(archived_at__isnull=True)
    return paginate(queryset, kind="environment", page=page, limit=limit)


def vault_get(*, organization, workspace, vault_id: str) -> Vault:
    queryset = _tenant(Vault, organization, workspace)
    vault = queryset.filter(pk=vault_id).first() if isinstance(vault_id, str) else None
    if vault is None:
        raise VaultNotFound(str(vault_id)[:64])
    return vault


def vault_list(*, organization, workspace, include_archived: bool = False, page: str | None, limit: int):
    queryset = _tenant(Vault, organization, workspace)
    if not include_archived:
        queryset = queryset.filter(archived_at__isnull=True)
    return paginate(queryset, kind="vault", page=page, limit=limit)


# --- sessions ----------------------------------------------------------------------------------


def session_get(*, organization, workspace, session_id: str) -> Session:
    session = _tenant(Session, organization, workspace).filter(pk=session_id).first() if isinstance(session_id, str) else None
    if session is None:
        raise SessionNotFound(str(session_id)[:64])
    return session


def session_list(
    *,
    organization,
    workspace,
    agent_id: str | None = None,
    agent_version: int | None = None,
    deployment_id: str | None = None,
    memory_store_id: str | None = None,
    statuses: list[str] | None = None,
    created: dict | None = None,
    order: str = "desc",
    page: str | None,
    limit: int,
):
    queryset = _created_filters(_tenant(Session, organization, workspace), created)
    if agent_id is not None:
        queryset = queryset.filter(agent_id=agent_id)
        if agent_version is not None:
            queryset = queryset.filter(agent_version=agent_version)
    if deployment_id is not None:
        from runs_app.models import DeploymentRun

        run_ids = DeploymentRun.objects.filter(deployment_id=deployment_id, session_id__isnull=False).values("id")
        queryset = queryset.filter(deployment_run_id__in=run_ids)
    if statuses:
        queryset = queryset.filter(status__in=statuses)
    if memory_store_id is not None:
        queryset = _with_memory_store(queryset, memory_store_id)
    if order == "desc":
        return paginate(queryset, kind="session", page=page, limit=limit)
    return _paginate_ascending(queryset, kind="session:asc", page=page, limit=limit)


def _with_memory_store(queryset: QuerySet, memory_store_id: str) -> QuerySet:
    if connection.vendor == "postgresql":
        return queryset.filter(resources__contains=[{"type": "memory_store", "memory_store_id": memory_store_id}])
    # SQLite has no JSON containment: match in Python over the tenant's rows (the embedded default
    # is a one-machine setup, so the scan stays small).
    ids = [
        pk
        for pk, resources in queryset.values_list("id", "resources")
        if any(r.get("type") == "memory_store" and r.get("memory_store_id") == memory_store_id for r in resources or [])
    ]
    return queryset.filter(id__in=ids)


def _paginate_ascending(queryset: QuerySet, *, kind: str, page: str | None, limit: int):
    queryset = queryset.order_by("created_at", "id")
    if page:
        created_at, pk = decode_cursor(kind, page)
        queryset = queryset.filter(Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=pk))
    rows = list(queryset[: limit + 1])
    next_page = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_page = encode_cursor(kind, rows[-1].created_at, rows[-1].pk)
    return rows, next_page


def session_deployment_ids(sessions: list[Session]) -> dict[str, str]:
    """{deployment run id: deployment id} for the sessions that a deployment run made."""
    run_ids = {s.deployment_run_id for s in sessions if s.deployment_run_id}
    if not run_ids:
        return {}
    from runs_app.models import DeploymentRun

    return dict(DeploymentRun.objects.filter(id__in=run_ids).values_list("id", "deployment_id"))


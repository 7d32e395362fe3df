"""Local gateway: the built-in platform (platform_app), in the caller's transaction. The only module
outside platform_app that reads or writes its tables."""

from collections.abc import Iterable

from django.db import DatabaseError

from core.errors import ApiError, shorten
from gateways.base import GatewayUnavailable, ResolvedReferences, SessionGateway, SessionOutcome, SessionRequest
from gateways.errors import ReferenceArchived, ReferenceNotFound
from platform_app.models import Agent, AgentVersion, Environment, Session, Vault
from platform_app.services import session_create, sessions_create_batch, sessions_stop


class LocalGateway(SessionGateway):
    name = "local"
    transactional = True

    # --- references -------------------------------------------------------------------------------

    def resolve_references(
        self, *, organization_id: str, workspace_id: str, agent: str | dict | None = None,
        environment_id: str | None = None, vault_ids: list[str] | None = None,
    ) -> ResolvedReferences:
        scope = {"organization_id": organization_id, "workspace_id": workspace_id}
        if environment_id is not None:
            _check_environment(**scope, environment_id=environment_id)
        _check_vaults(**scope, vault_ids=vault_ids or [])
        if agent is None:
            return ResolvedReferences()
        return ResolvedReferences(*_resolve_agent(**scope, agent=agent))

    def agent_names(self, agent_ids: list[str]) -> dict[str, str]:
        names = {}
        rows = AgentVersion.objects.filter(agent_id__in=agent_ids).order_by("version").values_list("agent_id", "name")
        for agent_id, name in rows:
            names[agent_id] = name  # the last (highest) version's name wins
        return names

    # --- sessions ---------------------------------------------------------------------------------

    def create_sessions(self, requests: list[SessionRequest]) -> list[SessionOutcome]:
        """Every request that passes all of the platform's checks gets its session in a few
        statements for the whole batch; each other one is asked alone (in a savepoint), which
        names its precise error."""
        try:
            sessions = sessions_create_batch([_batch_request(request) for request in requests]) if len(requests) > 1 else [None]
        except DatabaseError as exc:
            return [SessionOutcome.unavailable(f"platform database error: {type(exc).__name__}")] * len(requests)
        return [
            SessionOutcome.success(session.id) if session is not None else _create_one(request)
            for request, session in zip(requests, sessions, strict=True)
        ]

    def session_states(self, *, organization_id: str, session_ids: list[str]) -> dict[str, str | None]:
        try:
            found = dict(
                Session.objects.filter(organization_id=organization_id, pk__in=session_ids).values_list("pk", "status")
            )
        except DatabaseError as exc:
            raise GatewayUnavailable(f"platform database error: {type(exc).__name__}") from exc
        return {session_id: found.get(session_id) for session_id in session_ids}

    def sessions_stop(self, *, organization_id: str, session_ids: list[str]) -> dict[str, str | None]:
        try:
            sessions_stop(organization_id=organization_id, session_ids=session_ids)
        except DatabaseError as exc:
            raise GatewayUnavailable(f"platform database error: {type(exc).__name__}") from exc
        return {session_id: None for session_id in session_ids}


def _create_one(request: SessionRequest) -> SessionOutcome:
    from accounts_app.models import Organization, Workspace

    # session_create reads both rows itself (and refuses a disabled organization or an archived
    # workspace): hand it their keys only, not two more queries per fire.
    organization = Organization(pk=request.organization_id)
    workspace = Workspace(pk=request.workspace_id, organization_id=request.organization_id)
    try:
        session, _created = session_create(organization=organization, workspace=workspace, **_arguments(request))
    except ApiError as exc:
        return outcome_for_platform_error(exc)
    except DatabaseError as exc:
        return SessionOutcome.unavailable(f"platform database error: {type(exc).__name__}")
    return SessionOutcome.success(session.id)


def _arguments(request: SessionRequest) -> dict:
    """The keyword arguments of platform_app's session creation for this request, but the tenant."""
    return {
        "agent": {"type": "agent", "id": request.agent_id, "version": request.agent_version},
        "environment_id": request.environment_id,
        "initial_events": request.initial_events,
        "resources": request.resources,
        "vault_ids": request.vault_ids,
        "metadata": request.metadata,
        "title": request.title,
        "budget": request.budget,
        "idempotency_key": request.idempotency_key,
        "deployment_run_id": request.deployment_run_id,
    }


def _batch_request(request: SessionRequest) -> dict:
    return {"organization_id": request.organization_id, "workspace_id": request.workspace_id, **_arguments(request)}


def outcome_for_platform_error(exc: ApiError) -> SessionOutcome:
    if getattr(exc, "archives_deployment", False):
        return SessionOutcome.agent_gone(exc.message)
    run_error_type = getattr(exc, "run_error_type", None)
    if run_error_type:
        return SessionOutcome.failure(run_error_type, exc.message)
    if exc.error_type == "rate_limit_error":
        return SessionOutcome.failure("session_rate_limited_error", exc.message)
    if exc.status >= 500:
        return SessionOutcome.unavailable(exc.message)
    return SessionOutcome.failure("session_creation_rejected_error", exc.message)


# --- reference checks ------------------------------------------------------------------------------


def _agent_ref(agent: str | dict) -> tuple[str, int | None]:
    if isinstance(agent, str):
        return agent, None
    return agent["id"], agent.get("version")


def _resolve_agent(*, organization_id: str, workspace_id: str, agent: str | dict) -> tuple[str, int]:
    """(agent id, concrete version). Locks the agent row so an archive of the agent running
    concurrently either sees this deployment or makes this call fail."""
    agent_id, version = _agent_ref(agent)
    row = (
        Agent.objects.select_for_update(no_key=True)
        .filter(pk=agent_id, organization_id=organization_id, workspace_id=workspace_id)
        .first()
    )
    if row is None:
        raise ReferenceNotFound(f"agent: agent {shorten(agent_id)} not found")
    if row.archived_at is not None:
        raise ReferenceArchived(f"agent: agent {agent_id} is archived")
    if version is None:
        version = row.latest_version
    if not AgentVersion.objects.filter(agent_id=row.pk, version=version).exists():
        raise ReferenceNotFound(f"agent.version: agent {agent_id} has no version {version}")
    return row.pk, version


def _check_environment(*, organization_id: str, workspace_id: str, environment_id: str) -> None:
    row = (
        Environment.objects.filter(pk=environment_id, organization_id=organization_id, workspace_id=workspace_id)
        .values("archived_at")
        .first()
    )
    if row is None:
        raise ReferenceNotFound(f"environment_id: environment {shorten(environment_id)} not found")
    if row["archived_at"] is not None:
        raise ReferenceArchived(f"environment_id: environment {environment_id} is archived")


def _check_vaults(*, organization_id: str, workspace_id: str, vault_ids: Iterable[str]) -> None:
    vault_ids = list(vault_ids)
    if not vault_ids:
        return
    found = dict(
        Vault.objects.filter(pk__in=vault_ids, organization_id=organization_id, workspace_id=workspace_id)
        .values_list("pk", "archived_at")
    )
    for index, vault_id in enumerate(vault_ids):
        if vault_id not in found:
            raise ReferenceNotFound(f"vault_ids[{index}]: vault {shorten(vault_id)} not found")
        if found[vault_id] is not None:
            raise ReferenceArchived(f"vault_ids[{index}]: vault {vault_id} is archived")

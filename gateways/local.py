"""Local gateway: sessions on the built-in platform (platform_app), in the caller's transaction."""

from django.db import DatabaseError

from core.errors import ApiError
from gateways.base import GatewayUnavailable, SessionGateway, SessionOutcome, SessionRequest


class LocalGateway(SessionGateway):
    transactional = True

    def create_session(self, request: SessionRequest) -> SessionOutcome:
        from accounts_app.models import Organization, Workspace
        from platform_app.services import session_create

        # session_create reads both rows itself (and refuses a disabled organization or an
        # archived workspace): hand it their keys only, not two more queries per fire.
        organization = Organization(pk=request.organization_id)
        workspace = Workspace(pk=request.workspace_id, organization_id=request.organization_id)
        try:
            session, _created = session_create(organization=organization, workspace=workspace, **_arguments(request))
        except ApiError as exc:
            return outcome_for_platform_error(exc)
        except DatabaseError as exc:
            raise GatewayUnavailable(f"platform database error: {type(exc).__name__}") from exc
        return SessionOutcome.success(session.id)

    def create_sessions(self, requests: list[SessionRequest]) -> list[SessionOutcome | None]:
        """Every request that passes all of the platform's checks gets its session here, in a few
        statements for the whole batch; the others are left to create_session, which reports the
        precise error."""
        from platform_app.services import sessions_create_batch

        try:
            sessions = sessions_create_batch([_batch_request(request) for request in requests])
        except DatabaseError as exc:
            raise GatewayUnavailable(f"platform database error: {type(exc).__name__}") from exc
        return [None if session is None else SessionOutcome.success(session.id) for session in sessions]


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
        raise GatewayUnavailable(exc.message)
    return SessionOutcome.failure("session_creation_rejected_error", exc.message)

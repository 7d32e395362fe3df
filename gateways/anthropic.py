"""Anthropic gateway: sessions on the Managed Agents API through the official SDK.

Before creating the session it checks what SPEC §7 distinguishes — the agent (archived or deleted →
archive the deployment), its roster, the environment and the vaults — so the run records the
precise error type. Then `sessions.create` with the fire's id as `Idempotency-Key`: a retry after a
lost answer returns the same session.
"""

from functools import cached_property

import anthropic
from django.conf import settings

from gateways.base import GatewayUnavailable, SessionGateway, SessionOutcome, SessionRequest

_UNAVAILABLE = (anthropic.APIConnectionError, anthropic.APITimeoutError, anthropic.InternalServerError)


def _roster_ids(multiagent) -> list[str]:
    if multiagent is None or getattr(multiagent, "type", None) != "coordinator":
        return []
    return [entry.id for entry in multiagent.agents if getattr(entry, "type", None) == "agent"]


class _Refused(Exception):
    def __init__(self, outcome: SessionOutcome):
        self.outcome = outcome


class AnthropicGateway(SessionGateway):
    transactional = False

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, timeout: float = 10.0):
        self._api_key = api_key or settings.ANTHROPIC_API_KEY
        self._base_url = base_url or settings.ANTHROPIC_BASE_URL
        self._timeout = timeout

    @cached_property
    def client(self) -> anthropic.Anthropic:
        # Retries are the firing engine's job (same idempotency key, bounded, never on 429).
        return anthropic.Anthropic(api_key=self._api_key, base_url=self._base_url, max_retries=0, timeout=self._timeout)

    def create_session(self, request: SessionRequest) -> SessionOutcome:
        try:
            self._check_references(request)
            session = self.client.beta.sessions.create(
                agent={"type": "agent", "id": request.agent_id, "version": request.agent_version},
                environment_id=request.environment_id,
                initial_events=request.initial_events,
                resources=request.resources,
                vault_ids=request.vault_ids,
                metadata=request.metadata,
                title=request.title,
                **({"budget": request.budget} if request.budget else {}),
                extra_headers={"Idempotency-Key": request.idempotency_key},
            )
        except _Refused as refused:
            return refused.outcome
        except anthropic.RateLimitError as exc:
            return SessionOutcome.failure("session_rate_limited_error", f"session creation was rate-limited: {_message(exc)}")
        except _UNAVAILABLE as exc:
            raise GatewayUnavailable(f"{type(exc).__name__}: {_message(exc)}") from exc
        except anthropic.APIStatusError as exc:
            if exc.status_code >= 500:
                raise GatewayUnavailable(f"HTTP {exc.status_code}: {_message(exc)}") from exc
            return SessionOutcome.failure("session_creation_rejected_error", f"session creation was refused: {_message(exc)}")
        return SessionOutcome.success(session.id)

    def _check_references(self, request: SessionRequest) -> None:
        beta = self.client.beta
        agent = self._get(lambda: beta.agents.retrieve(request.agent_id, version=request.agent_version))
        if agent is None or agent.archived_at is not None:
            state = "not found" if agent is None else "archived"
            raise _Refused(SessionOutcome.agent_gone(f"agent {request.agent_id} is {state}"))
        for sub_id in _roster_ids(agent.multiagent):
            sub = self._get(lambda: beta.agents.retrieve(sub_id))
            if sub is None or sub.archived_at is not None:
                state = "not found" if sub is None else "archived"
                raise _Refused(SessionOutcome.failure(
                    "agent_archived_error", f"subagent {sub_id} in the roster of agent {request.agent_id} is {state}"
                ))
        environment = self._get(lambda: beta.environments.retrieve(request.environment_id))
        if environment is None:
            raise _Refused(SessionOutcome.failure(
                "environment_not_found_error", f"environment {request.environment_id} was not found"))
        if environment.archived_at is not None:
            raise _Refused(SessionOutcome.failure(
                "environment_archived_error", f"environment {request.environment_id} is archived"))
        for vault_id in request.vault_ids:
            vault = self._get(lambda: beta.vaults.retrieve(vault_id))
            if vault is None:
                raise _Refused(SessionOutcome.failure("vault_not_found_error", f"vault {vault_id} was not found"))
            if getattr(vault, "archived_at", None) is not None:
                raise _Refused(SessionOutcome.failure("vault_archived_error", f"vault {vault_id} is archived"))

    @staticmethod
    def _get(call):
        try:
            return call()
        except anthropic.NotFoundError:
            return None


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:500]
    return str(exc)[:500]

"""The session gateway interface: one call, "create a session for this fire", and a typed outcome.

Both backends (local, anthropic) report outcomes the same way so the outcome policy in
runs_app.firing applies to either unchanged.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SessionRequest:
    organization_id: str
    workspace_id: str
    agent_id: str
    agent_version: int
    environment_id: str
    initial_events: list
    resources: list  # with secrets, decrypted; never log this object
    vault_ids: list
    metadata: dict
    budget: dict | None
    title: str
    idempotency_key: str
    deployment_run_id: str

    def __repr__(self) -> str:  # keep secrets out of tracebacks and logs
        return f"SessionRequest(agent={self.agent_id} v{self.agent_version}, environment={self.environment_id}, key={self.idempotency_key})"


@dataclass(frozen=True)
class SessionOutcome:
    """Exactly one of: a session id; an error (SDK run error type + message); or `archive_deployment`
    (the deployment's own agent is archived or deleted: no run is recorded)."""

    session_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    archive_deployment: bool = False
    details: dict = field(default_factory=dict)

    @classmethod
    def success(cls, session_id: str) -> "SessionOutcome":
        return cls(session_id=session_id)

    @classmethod
    def failure(cls, error_type: str, message: str) -> "SessionOutcome":
        return cls(error_type=error_type, error_message=message)

    @classmethod
    def agent_gone(cls, message: str) -> "SessionOutcome":
        return cls(archive_deployment=True, error_message=message)


class GatewayUnavailable(Exception):
    """The platform could not be reached or answered 5xx: retryable with the same idempotency key."""


class SessionGateway:
    #: True when create_session writes to this service's own database, so the session and the run
    #: record can commit in one transaction.
    transactional = False

    def create_session(self, request: SessionRequest) -> SessionOutcome:
        raise NotImplementedError

    def create_sessions(self, requests: list[SessionRequest]) -> list[SessionOutcome | None]:
        """Sessions for many requests at once, where the backend can do that cheaper than one by
        one. None for a request means "not answered here: call create_session for it". Only
        called on transactional gateways, inside the fire batch's transaction."""
        return [None] * len(requests)

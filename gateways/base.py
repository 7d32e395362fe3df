"""The one door to a Managed Agents platform.

Two questions, asked the same way of every platform (the built-in one, the remote API, a custom
class), so the deployment services and the outcome policy in runs_app.firing apply unchanged:

- `resolve_references(...)`: do the agent, environment and vaults a deployment names exist for this
  tenant, and which agent version does it pin? A typed, field-named error otherwise.
- `create_sessions(requests)`: a session per request, batch first; exactly one typed outcome per
  request, in order. A single fire or a manual run is a batch of one.

Two more serve the overlap policy of a deployment (is the previous run's session still running;
stop it), asked once per fire batch, never polled:

- `session_states(organization_id, session_ids)`: each session's status.
- `sessions_stop(organization_id, session_ids)`: interrupt and archive each one.
"""

from dataclasses import dataclass, field


#: Statuses (the SDK's session `status`) of a session that is still running.
RUNNING_SESSION_STATUSES = frozenset({"running", "rescheduling"})


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
    """Exactly one of: a session id; an error (SDK run error type + message); `archive_deployment`
    (the deployment's own agent is archived or deleted: no run is recorded); or `retryable` (the
    platform could not be reached or answered 5xx: ask again with the same idempotency key)."""

    session_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    archive_deployment: bool = False
    retryable: bool = False
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

    @classmethod
    def unavailable(cls, message: str) -> "SessionOutcome":
        return cls(retryable=True, error_message=message)


@dataclass(frozen=True)
class ResolvedReferences:
    """What a deployment pins: the agent and its concrete version (None when no agent was asked)."""

    agent_id: str | None = None
    agent_version: int | None = None


class GatewayUnavailable(Exception):
    """The platform could not be reached or answered 5xx: retryable with the same idempotency key."""


class SessionGateway:
    #: A short name for metrics and logs.
    name = "custom"
    #: True when sessions are created in this service's own database, so they and the run records
    #: can commit in one transaction (the caller holds it open across create_sessions).
    transactional = False
    #: True when the Managed Agents endpoints of this service (agents, environments, vaults,
    #: sessions) are forwarded to the platform instead of served by the built-in one.
    forwards_platform_api = False

    def resolve_references(
        self, *, organization_id: str, workspace_id: str, agent: str | dict | None = None,
        environment_id: str | None = None, vault_ids: list[str] | None = None,
    ) -> ResolvedReferences:
        """Check what a deployment names, in this order: environment, vaults, agent (an id string
        pins the agent's latest version; `{"id", "version"}` that version). Raises
        gateways.errors.ReferenceNotFound / ReferenceArchived naming the field (`environment_id`,
        `vault_ids[2]`, `agent`, `agent.version`), or an upstream error (unreachable, credentials
        refused). Called inside the caller's transaction."""
        raise NotImplementedError

    def create_sessions(self, requests: list[SessionRequest]) -> list[SessionOutcome]:
        """One outcome per request, in order. Never raises for one request's failure: a platform
        that cannot be reached answers `SessionOutcome.unavailable` for the requests concerned."""
        raise NotImplementedError

    def session_states(self, *, organization_id: str, session_ids: list[str]) -> dict[str, str | None]:
        """{session id: its status} — the SDK's `running`, `rescheduling`, `idle` or `terminated`,
        None for a session the platform does not know (any more). One call per batch. Raises
        GatewayUnavailable when the platform cannot be reached (retryable), or an ApiError when it
        refuses this service's credentials."""
        raise NotImplementedError

    def sessions_stop(self, *, organization_id: str, session_ids: list[str]) -> dict[str, str | None]:
        """Stop each session — interrupt it, then archive it where the platform archives sessions:
        {session id: None when it no longer runs (stopped now, or already gone), else why it could
        not be stopped}. Raises GatewayUnavailable when the platform cannot be reached."""
        raise NotImplementedError

    def warm(self) -> None:
        """Import and build now what the first request would (called once in a worker's main
        process, before its pool forks). Opens no connection and starts no thread."""

    def agent_names(self, agent_ids: list[str]) -> dict[str, str]:
        """Display names of agents (their latest version's name) where this platform knows them
        without a call per agent; the admin shows bare ids for the others."""
        return {}

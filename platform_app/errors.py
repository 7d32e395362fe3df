"""Typed errors of the local platform.

Each error is an API error (rendered by core.errors' one handler) that also says what it means for
a deployment at fire time: `run_error_type` is the SDK's deployment-run error type to record (None
when no typed run error applies) and `archives_deployment` says the deployment's own agent is gone,
so the deployment is archived instead of recording a run (SPEC §7).
"""

from core.errors import ApiError


class PlatformError(ApiError):
    run_error_type: str | None = None
    archives_deployment: bool = False
    resource_kind: str = "resource"

    def __init__(self, resource_id: str, message: str | None = None, *, headers: dict | None = None):
        self.resource_id = resource_id
        super().__init__(message or self.default_message(resource_id), headers=headers)

    def default_message(self, resource_id: str) -> str:
        return f"{self.resource_kind} {resource_id} is invalid"


class _NotFound(PlatformError):
    error_type = "not_found_error"

    def default_message(self, resource_id: str) -> str:
        return f"{self.resource_kind} {resource_id} not found"


class _Archived(PlatformError):
    error_type = "invalid_request_error"

    def default_message(self, resource_id: str) -> str:
        return f"{self.resource_kind} {resource_id} is archived"


class AgentNotFound(_NotFound):
    resource_kind = "agent"
    archives_deployment = True


class AgentArchived(_Archived):
    resource_kind = "agent"
    archives_deployment = True


class AgentVersionNotFound(_NotFound):
    """The agent exists but not at that version (resource_id is the agent id)."""

    resource_kind = "agent"

    def __init__(self, resource_id: str, version: int | None = None, message: str | None = None):
        self.version = version
        super().__init__(resource_id, message or f"agent {resource_id} has no version {version}")


class SubagentArchived(_Archived):
    """A subagent in the agent's multiagent roster is archived or no longer exists."""

    resource_kind = "subagent"
    run_error_type = "agent_archived_error"


class EnvironmentNotFound(_NotFound):
    resource_kind = "environment"
    run_error_type = "environment_not_found_error"


class EnvironmentArchived(_Archived):
    resource_kind = "environment"
    run_error_type = "environment_archived_error"


class VaultNotFound(_NotFound):
    resource_kind = "vault"
    run_error_type = "vault_not_found_error"


class VaultArchived(_Archived):
    resource_kind = "vault"
    run_error_type = "vault_archived_error"


class SessionNotFound(_NotFound):
    resource_kind = "session"


class WorkspaceArchived(_Archived):
    resource_kind = "workspace"
    run_error_type = "workspace_archived_error"


class OrganizationDisabled(PlatformError):
    error_type = "permission_error"
    resource_kind = "organization"
    run_error_type = "organization_disabled_error"

    def default_message(self, resource_id: str) -> str:
        return f"organization {resource_id} is disabled"


class SessionRateLimited(PlatformError):
    error_type = "rate_limit_error"
    resource_kind = "organization"
    run_error_type = "session_rate_limited_error"

    def __init__(self, resource_id: str, *, limit: int, retry_after: int):
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            resource_id,
            f"session creation rate limit exceeded for organization {resource_id}: "
            f"at most {limit} sessions per minute; retry after {retry_after} s",
            headers={"retry-after": str(retry_after)},
        )

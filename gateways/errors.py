"""Typed errors a gateway raises while resolving a deployment's references; core.errors renders
them as the API envelope."""

from core.errors import ApiError, InvalidRequest, NotFound, PermissionDeniedError


class ReferenceNotFound(NotFound):
    """An agent, agent version, environment or vault named in the request does not exist for the caller."""


class ReferenceArchived(InvalidRequest):
    """An agent, environment or vault named in the request is archived."""


class UpstreamUnavailable(ApiError):
    """The remote platform could not be reached, timed out or answered 5xx (529, retry later)."""

    error_type = "overloaded_error"


class UpstreamRateLimited(ApiError):
    """The remote platform rate-limited this service's calls."""

    error_type = "rate_limit_error"


class UpstreamCredentialsRefused(PermissionDeniedError):
    """The organization's upstream credentials are missing, or the remote platform refused them."""

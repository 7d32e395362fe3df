"""Typed errors of accounts, mapped to the API's envelope by core.errors."""

from core.errors import InvalidRequest, PermissionDeniedError


class UpstreamCredentialsInvalid(InvalidRequest):
    """An upstream API key or base URL that cannot be stored; the message names the field and
    never repeats the key."""


class UpstreamCredentialsUnreadable(PermissionDeniedError):
    """The stored key cannot be decrypted with the configured FIELD_ENCRYPTION_KEYS."""

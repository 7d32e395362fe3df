"""Typed errors of the webhooks API, mapped to the error envelope by core.errors."""

from core.errors import InvalidRequest


class EndpointLimitExceeded(InvalidRequest):
    def __init__(self, *, limit: int):
        super().__init__(f"an organization can have at most {limit} webhook endpoints; delete one first")
        self.limit = limit


class UnsafeWebhookUrl(InvalidRequest):
    """The URL is not one deliveries may go to (scheme, credentials, a private or loopback target)."""

    def __init__(self, reason: str):
        super().__init__(f"url: {reason}")
        self.reason = reason

"""Standard Webhooks signatures (https://www.standardwebhooks.com), with the `standardwebhooks`
package the official SDK verifies with (`client.beta.webhooks.unwrap(payload, headers=..., key=...)`).

Headers: `webhook-id` (the event id, the same on every attempt), `webhook-timestamp` (Unix seconds
of the attempt) and `webhook-signature` (`v1,<base64 HMAC-SHA256>`, space-separated when a rotated
secret is still in its grace period: a receiver holding either secret verifies).
"""

import base64
import os
from datetime import datetime, timezone

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode("ascii")


class Signer:
    """Signs with every secret it is given (the current one first)."""

    def __init__(self, secrets: list[str]):
        self._webhooks = [Webhook(secret) for secret in secrets if secret]

    def headers(self, *, message_id: str, body: bytes, timestamp: int) -> dict[str, str]:
        moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
        text = body.decode("utf-8")
        signatures = " ".join(hook.sign(message_id, moment, text) for hook in self._webhooks)
        return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures}

"""The events this service announces, with the names of the official SDK 2.10.0
(`anthropic/types/beta/beta_webhook_deployment_*_event_data.py`), and the payload they travel in.

No Django import here: the fire path imports `Event` on every batch, and the payload is built by
the delivery worker.
"""

import json
from datetime import datetime, timezone
from typing import NamedTuple

DEPLOYMENT_CREATED = "deployment.created"
DEPLOYMENT_UPDATED = "deployment.updated"
DEPLOYMENT_PAUSED = "deployment.paused"
DEPLOYMENT_UNPAUSED = "deployment.unpaused"
DEPLOYMENT_ARCHIVED = "deployment.archived"
DEPLOYMENT_RUN_STARTED = "deployment_run.started"
DEPLOYMENT_RUN_SUCCEEDED = "deployment_run.succeeded"
DEPLOYMENT_RUN_FAILED = "deployment_run.failed"

# What an endpoint can subscribe to, in the order the docs list them.
EVENT_TYPES: tuple[str, ...] = (
    DEPLOYMENT_CREATED,
    DEPLOYMENT_UPDATED,
    DEPLOYMENT_PAUSED,
    DEPLOYMENT_UNPAUSED,
    DEPLOYMENT_ARCHIVED,
    DEPLOYMENT_RUN_STARTED,
    DEPLOYMENT_RUN_SUCCEEDED,
    DEPLOYMENT_RUN_FAILED,
)
EVENT_TYPE_SET = frozenset(EVENT_TYPES)

# Sent only by the admin's "send test event" action, to one endpoint, whatever it subscribes to.
TEST_EVENT = "webhook_endpoint.test"


class Event(NamedTuple):
    """One change to announce. A plain tuple `(type, organization_id, workspace_id, object_id)`
    is accepted wherever an Event is."""

    type: str
    organization_id: str
    workspace_id: str
    object_id: str


def payload(*, event_id: str, event_type: str, created_at: datetime, organization_id: str, workspace_id: str,
            object_id: str) -> bytes:
    """The body of a delivery: the SDK's `BetaWebhookEvent` envelope. Only ids travel — never a
    deployment's content, so a secret it holds can never leave in a webhook. The same event gives
    the same bytes on every attempt."""
    created = created_at.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    body = {
        "type": "event",
        "id": event_id,
        "created_at": created,
        "data": {
            "type": event_type,
            "id": object_id,
            "organization_id": organization_id,
            "workspace_id": workspace_id,
        },
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")

"""Reads: endpoints in a caller's scope, and which organizations want which events."""

import threading
import time

from django.conf import settings

from core.errors import NotFound
from webhooks_app.models import WebhookEndpoint


def _scope_filter(*, organization, workspace) -> dict:
    """An organization-wide key manages the organization's endpoints (workspace None); a key bound
    to one workspace manages that workspace's endpoints only."""
    return {"organization_id": organization.pk, "workspace_id": workspace.pk if workspace is not None else None}


def webhook_endpoint_list(*, organization, workspace):
    return WebhookEndpoint.objects.filter(**_scope_filter(organization=organization, workspace=workspace))


def webhook_endpoint_get(*, organization, workspace, endpoint_id: str) -> WebhookEndpoint:
    endpoint = (
        webhook_endpoint_list(organization=organization, workspace=workspace).filter(pk=endpoint_id).first()
        if endpoint_id and len(endpoint_id) <= 64 else None
    )
    if endpoint is None:
        raise NotFound(f"webhook endpoint {endpoint_id[:80]} not found")
    return endpoint


def webhook_endpoint_count(*, organization_id: str) -> int:
    return WebhookEndpoint.objects.filter(organization_id=organization_id).count()


class SubscriptionMemo:
    """Per process: {organization id: event types some enabled endpoint of it wants}, read with one
    statement and remembered for WEBHOOK_SUBSCRIPTION_CACHE_SECONDS (default 1 s; 0 = read every
    time). `events_record` uses it to write nothing for organizations no endpoint listens to. An
    endpoint created, changed or deleted in this process is seen at once (`forget`); in other
    processes at most that many seconds later."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._value: dict[str, frozenset[str]] | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> dict[str, frozenset[str]]:
        seconds = settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS
        value = self._value
        if value is not None and seconds > 0 and self.clock() < self._expires_at:
            return value
        value = _read_subscriptions()
        with self._lock:
            self._value, self._expires_at = value, self.clock() + seconds
        return value

    def forget(self) -> None:
        with self._lock:
            self._value, self._expires_at = None, 0.0


def _read_subscriptions() -> dict[str, frozenset[str]]:
    wanted: dict[str, set[str]] = {}
    rows = WebhookEndpoint.objects.filter(state=WebhookEndpoint.State.ENABLED).values_list(
        "organization_id", "enabled_events"
    )
    for organization_id, types in rows:
        wanted.setdefault(organization_id, set()).update(t for t in types or () if isinstance(t, str))
    return {organization_id: frozenset(types) for organization_id, types in wanted.items()}


subscriptions = SubscriptionMemo()


def webhook_endpoint_page(*, organization, workspace, limit: int, order: str, after_id: str | None,
                          before_id: str | None) -> tuple[list[WebhookEndpoint], bool]:
    """One page of the SDK's `SyncPage` (keyset on the time-sorted id, like `created_at`):
    `after_id` → the endpoints after it in list order; `before_id` → the first `limit` endpoints
    before it in list order. Returns (rows, has_more)."""
    queryset = webhook_endpoint_list(organization=organization, workspace=workspace)
    descending = order == "desc"
    if after_id:
        queryset = queryset.filter(pk__lt=after_id) if descending else queryset.filter(pk__gt=after_id)
    elif before_id:
        queryset = queryset.filter(pk__gt=before_id) if descending else queryset.filter(pk__lt=before_id)
    rows = list(queryset.order_by("-pk" if descending else "pk")[: limit + 1])
    return rows[:limit], len(rows) > limit

"""Outgoing webhooks: endpoints, the event outbox, deliveries and their attempts.

- `WebhookEvent` is the transactional outbox: written by `events_record` in the same transaction
  as the change it reports, fanned out to the matching endpoints afterwards.
- `WebhookDelivery` is one event for one endpoint: the durable to-do of the delivery worker
  (pending → delivering → succeeded | failed), claimed with a conditional update and a lease, so a
  lost message or a killed worker delays a delivery but never loses it.
- `WebhookAttempt` is one HTTP request of a delivery, kept for the admin.
"""

from django.db import models

from core.ids import new_webhook_endpoint_id
from webhooks_app.events import EVENT_TYPES, TEST_EVENT

EXCERPT_BYTES = 1024


class WebhookEndpoint(models.Model):
    """Where an organization's events go. `workspace` set: only that workspace's events."""

    class State(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"

    id = models.CharField(primary_key=True, max_length=64, default=new_webhook_endpoint_id, editable=False)
    organization = models.ForeignKey(
        "accounts_app.Organization", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    workspace = models.ForeignKey(
        "accounts_app.Workspace", on_delete=models.CASCADE, null=True, blank=True, related_name="webhook_endpoints",
        help_text="When set, only this workspace's events are delivered; otherwise the whole organization's.",
    )
    url = models.CharField(max_length=2048, help_text="http(s) URL that deliveries are POSTed to")
    name = models.CharField(max_length=256, blank=True, default="")
    description = models.TextField(blank=True, default="")
    enabled_events = models.JSONField(default=list, help_text="Event types delivered to this endpoint")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ENABLED)
    disabled_reason = models.TextField(
        blank=True, default="", help_text="Why the service disabled it (empty when enabled or disabled by a person)"
    )
    signing_secret = models.TextField(editable=False, help_text="Fernet token of the whsec_ secret; never shown")
    previous_signing_secret = models.TextField(blank=True, default="", editable=False)
    previous_secret_expires_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Until then deliveries are signed with both secrets"
    )
    failing_since = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="First failed attempt since the last success"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "workspace", "-created_at"], name="webhook_endpoint_scope")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(state="disabled") | models.Q(disabled_reason=""),
                name="webhook_endpoint_reason_only_when_disabled",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.id} ({self.state})"

    @property
    def is_enabled(self) -> bool:
        return self.state == self.State.ENABLED


class WebhookEvent(models.Model):
    """One announced change (the outbox). Ids are time-ordered ULIDs, monotonic within one
    `events_record` call, so ordering by id is ordering by creation."""

    TYPE_CHOICES = [(name, name) for name in (*EVENT_TYPES, TEST_EVENT)]

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    type = models.CharField(max_length=64, choices=TYPE_CHOICES)
    organization = models.ForeignKey("accounts_app.Organization", on_delete=models.CASCADE, related_name="+")
    workspace_id = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, help_text="data.id: the deployment or the run")
    created_at = models.DateTimeField()
    fanned_out_at = models.DateTimeField(
        null=True, blank=True, help_text="When deliveries were made for the endpoints that wanted it"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["id"], condition=models.Q(fanned_out_at__isnull=True), name="webhook_event_unsent"),
            models.Index(fields=["created_at"], name="webhook_event_created"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.type} {self.object_id}"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERING = "delivering"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(help_text="A pending delivery is tried from then on")
    give_up_at = models.DateTimeField(help_text="No retry is scheduled past this")
    published_at = models.DateTimeField(null=True, blank=True, help_text="Last time a message was sent for it")
    lease_expires_at = models.DateTimeField(null=True, blank=True, help_text="A delivering worker's claim")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once_per_endpoint"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"), name="webhook_delivery_due"),
            models.Index(
                fields=["lease_expires_at"], condition=models.Q(status="delivering"), name="webhook_delivery_claimed"
            ),
            models.Index(fields=["endpoint", "-id"], name="webhook_delivery_endpoint"),
            models.Index(fields=["endpoint", "event"], condition=models.Q(status="pending"),
                         name="webhook_delivery_endpoint_due"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event_id} to {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery: what came back (status, the first KB) or what went wrong."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField(help_text="From the start of the request to the end of what was read")
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True, default="", help_text=f"First {EXCERPT_BYTES} bytes of the body")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]
        indexes = [models.Index(fields=["delivery", "number"], name="webhook_attempt_delivery")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

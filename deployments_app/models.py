from django.db import models

from core.ids import new_deployment_id


class Deployment(models.Model):
    """An agent bound to an environment, credentials, resources, initial events and a schedule.

    Firing state for the scheduler: `next_fire_at` is the next nominal fire instant (UTC) while the
    deployment should fire, else null; every service that changes schedule or status keeps it right
    in the same transaction.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    id = models.CharField(primary_key=True, max_length=64, default=new_deployment_id, editable=False)
    organization = models.ForeignKey("accounts_app.Organization", on_delete=models.CASCADE, related_name="deployments")
    workspace = models.ForeignKey("accounts_app.Workspace", on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=256)
    description = models.TextField(null=True, blank=True)
    agent_id = models.CharField(max_length=64, db_index=True)
    agent_version = models.PositiveIntegerField()
    environment_id = models.CharField(max_length=64)
    initial_events = models.JSONField(default=list)
    resources = models.JSONField(default=list, blank=True, help_text="As returned: write-only secrets removed")
    resource_secrets = models.JSONField(
        default=dict, blank=True, help_text="{resource index: {field: Fernet token}}; never returned"
    )
    vault_ids = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    budget = models.JSONField(null=True, blank=True)
    schedule_expression = models.CharField(max_length=256, null=True, blank=True)
    schedule_timezone = models.CharField(max_length=64, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    paused_reason = models.JSONField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    next_fire_at = models.DateTimeField(null=True, blank=True)
    jitter_fraction = models.FloatField(
        default=0.0, help_text="Fixed offset of each fire, as a fraction of SCHEDULER_MAX_JITTER_SECONDS"
    )
    missed_fires = models.PositiveIntegerField(default=0, help_text="Fires older than the catch-up window, skipped")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_fire_at"], condition=models.Q(next_fire_at__isnull=False), name="deployment_due"
            ),
            models.Index(fields=["organization", "workspace", "-created_at"], name="deployment_tenant_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(schedule_expression__isnull=True, schedule_timezone__isnull=True)
                | models.Q(schedule_expression__isnull=False, schedule_timezone__isnull=False),
                name="deployment_schedule_complete",
            ),
            models.CheckConstraint(
                condition=models.Q(status="paused", paused_reason__isnull=False)
                | models.Q(status="active", paused_reason__isnull=True),
                name="deployment_paused_reason_iff_paused",
            ),
            models.CheckConstraint(
                condition=models.Q(jitter_fraction__gte=0.0, jitter_fraction__lt=1.0),
                name="deployment_jitter_fraction_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def has_schedule(self) -> bool:
        return self.schedule_expression is not None

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def should_fire(self) -> bool:
        return self.has_schedule and not self.is_archived and self.status == self.Status.ACTIVE

from django.db import models

from core.ids import new_deployment_run_id, new_fire_id


class Fire(models.Model):
    """One nominal fire of a deployment's schedule: the durable to-do of the firing path.

    Unique on (deployment, scheduled_at): at most one fire, hence one run, per occurrence.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        DONE = "done"
        SKIPPED = "skipped"

    id = models.CharField(primary_key=True, max_length=64, default=new_fire_id, editable=False)
    deployment = models.ForeignKey("deployments_app.Deployment", on_delete=models.CASCADE, related_name="fires")
    scheduled_at = models.DateTimeField(help_text="Nominal instant, before jitter")
    due_at = models.DateTimeField(help_text="Nominal instant plus the deployment's jitter")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When a worker first claimed it")
    skip_reason = models.CharField(max_length=64, blank=True, default="")
    run_id = models.CharField(
        max_length=64, null=True, blank=True, help_text="Id the run will get; fixed at first claim so retries agree"
    )
    backfill = models.BooleanField(default=False, db_default=False, help_text="Written by a backfill of past occurrences")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-scheduled_at"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "scheduled_at"], name="fire_unique_occurrence"),
        ]
        indexes = [
            models.Index(
                fields=["status", "due_at"],
                condition=models.Q(status__in=["pending", "claimed"]),
                name="fire_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.deployment_id} @ {self.scheduled_at:%Y-%m-%dT%H:%M}Z ({self.status})"


class DeploymentRun(models.Model):
    """Append-only record of one deployment execution: a session id or a typed error."""

    class TriggerType(models.TextChoices):
        SCHEDULE = "schedule"
        MANUAL = "manual"

    id = models.CharField(primary_key=True, max_length=64, default=new_deployment_run_id, editable=False)
    organization = models.ForeignKey("accounts_app.Organization", on_delete=models.CASCADE, related_name="+")
    workspace = models.ForeignKey("accounts_app.Workspace", on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey("deployments_app.Deployment", on_delete=models.CASCADE, related_name="runs")
    fire = models.OneToOneField(Fire, on_delete=models.PROTECT, null=True, blank=True, related_name="run")
    agent_id = models.CharField(max_length=64)
    agent_version = models.PositiveIntegerField()
    trigger_type = models.CharField(max_length=16, choices=TriggerType.choices)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    session_id = models.CharField(max_length=64, null=True, blank=True)
    error_type = models.CharField(max_length=64, null=True, blank=True, db_index=True)
    error_message = models.TextField(null=True, blank=True)
    started_at = models.DateTimeField(help_text="When the session creation began")
    backfill = models.BooleanField(default=False, db_default=False, help_text="The run of a backfilled past occurrence")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "scheduled_at"],
                condition=models.Q(trigger_type="schedule"),
                name="run_unique_scheduled_occurrence",
            ),
            models.CheckConstraint(
                condition=models.Q(session_id__isnull=False, error_type__isnull=True)
                | models.Q(session_id__isnull=True, error_type__isnull=False),
                name="run_session_xor_error",
            ),
            models.CheckConstraint(
                condition=models.Q(trigger_type="manual", scheduled_at__isnull=True)
                | models.Q(trigger_type="schedule", scheduled_at__isnull=False),
                name="run_trigger_consistent",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "workspace", "-created_at"], name="run_tenant_created"),
            models.Index(fields=["deployment", "-created_at"], name="run_deployment_created"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def succeeded(self) -> bool:
        return self.session_id is not None

from django.db import models

from core.ids import new_deployment_id


class Deployment(models.Model):
    """An agent bound to an environment, credentials, resources, initial events and a schedule.

    Firing state for the scheduler: `next_fire_at` is the next nominal fire instant (UTC) while the
    deployment should fire, else null; every service that changes schedule or status keeps it right
    in the same transaction.

    Scheduling policies (README "Scheduling policies"; all optional, the defaults are the hosted
    API's behaviour): the schedule's active window, run limit and DST fold policy, and what a fire
    does while the previous run's session still runs or after failures in a row. The two counters
    are kept by the fire path under the deployment's row lock.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    class DstFold(models.TextChoices):
        BOTH = "both"
        FIRST = "first"
        LAST = "last"

    class Overlap(models.TextChoices):
        ALLOW = "allow"
        SKIP = "skip"
        CANCEL_PREVIOUS = "cancel_previous"

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
    schedule_start_at = models.DateTimeField(null=True, blank=True, help_text="No fire before this instant")
    schedule_end_at = models.DateTimeField(null=True, blank=True, help_text="No fire after this instant")
    schedule_max_runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Archive after this many scheduled runs (counted since it was set)"
    )
    schedule_dst_fold = models.CharField(
        max_length=8, choices=DstFold.choices, default=DstFold.BOTH, db_default=DstFold.BOTH,
        help_text="A local time that happens twice fires at both instants, the first or the last",
    )
    runs_counted = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Scheduled runs counted toward schedule_max_runs since it was set"
    )
    policy_overlap = models.CharField(
        max_length=16, choices=Overlap.choices, default=Overlap.ALLOW, db_default=Overlap.ALLOW,
        help_text="What a fire does while the previous run's session is still running",
    )
    policy_pause_after_failures = models.PositiveIntegerField(
        null=True, blank=True, help_text="Pause after this many failed scheduled runs in a row"
    )
    consecutive_failures = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Failed scheduled runs in a row, while policy_pause_after_failures is set"
    )
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
            models.CheckConstraint(
                condition=models.Q(schedule_start_at__isnull=True) | models.Q(schedule_end_at__isnull=True)
                | models.Q(schedule_end_at__gt=models.F("schedule_start_at")),
                name="deployment_window_ordered",
            ),
            models.CheckConstraint(
                condition=models.Q(schedule_max_runs__isnull=True) | models.Q(schedule_max_runs__gte=1),
                name="deployment_max_runs_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(policy_pause_after_failures__isnull=True)
                | models.Q(policy_pause_after_failures__gte=1),
                name="deployment_pause_after_failures_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(schedule_dst_fold__in=["both", "first", "last"]),
                name="deployment_dst_fold_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(policy_overlap__in=["allow", "skip", "cancel_previous"]),
                name="deployment_overlap_valid",
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

    @property
    def schedule_options(self) -> dict:
        """The keyword options of the schedule engine (`next_fires`, `dst_notes`) for this schedule:
        only those that differ from the engine's defaults, so a schedule without extensions asks
        the engine exactly what the hosted API's rule needs."""
        options = {}
        if self.schedule_dst_fold != self.DstFold.BOTH:
            options["dst_fold"] = self.schedule_dst_fold
        if self.schedule_start_at is not None:
            options["start_at"] = self.schedule_start_at
        if self.schedule_end_at is not None:
            options["end_at"] = self.schedule_end_at
        return options

    @property
    def runs_remaining(self) -> int | None:
        """Scheduled runs left before the deployment archives itself; None without a run limit."""
        if self.schedule_max_runs is None:
            return None
        return max(0, self.schedule_max_runs - self.runs_counted)

    @property
    def has_schedule_extensions(self) -> bool:
        """Whether the schedule uses any option beyond the hosted API's (window, run limit, fold)."""
        return (self.schedule_start_at is not None or self.schedule_end_at is not None
                or self.schedule_max_runs is not None or self.schedule_dst_fold != self.DstFold.BOTH)

    @property
    def has_policy(self) -> bool:
        """Whether `policy` differs from its defaults (overlap allowed, no failure threshold)."""
        return self.policy_overlap != self.Overlap.ALLOW or self.policy_pause_after_failures is not None

    @property
    def policy(self) -> dict:
        return {"overlap": self.policy_overlap, "pause_after_failures": self.policy_pause_after_failures}

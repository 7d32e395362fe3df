"""The built-in Managed Agents platform behind the local session gateway (agents, environments,
vaults, sessions). Every row belongs to an organization and a workspace."""

from django.db import models

from core.ids import new_agent_id, new_environment_id, new_session_id, new_vault_id


class TenantModel(models.Model):
    organization = models.ForeignKey("accounts_app.Organization", on_delete=models.CASCADE, related_name="+")
    workspace = models.ForeignKey("accounts_app.Workspace", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Agent(TenantModel):
    """An agent; its configuration lives in AgentVersion rows (an update makes a new version)."""

    id = models.CharField(primary_key=True, max_length=64, default=new_agent_id, editable=False)
    latest_version = models.PositiveIntegerField(default=1)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "workspace", "-created_at"], name="agent_tenant_created")]

    def __str__(self) -> str:
        return self.id


class AgentVersion(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=256)
    model = models.JSONField(help_text="Model config as given, e.g. {'id': 'claude-sonnet-4-6'}")
    system = models.TextField(null=True, blank=True)
    description = models.TextField(null=True, blank=True)
    tools = models.JSONField(default=list, blank=True)
    mcp_servers = models.JSONField(default=list, blank=True)
    skills = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    multiagent = models.JSONField(null=True, blank=True, help_text="Roster of subagents, as given")
    extra = models.JSONField(default=dict, blank=True, help_text="Other fields stored as given")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "-version"]
        constraints = [models.UniqueConstraint(fields=["agent", "version"], name="agent_version_unique")]

    def __str__(self) -> str:
        return f"{self.agent_id} v{self.version}"


class Environment(TenantModel):
    id = models.CharField(primary_key=True, max_length=64, default=new_environment_id, editable=False)
    name = models.CharField(max_length=256)
    description = models.TextField(null=True, blank=True)
    config = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class Vault(TenantModel):
    id = models.CharField(primary_key=True, max_length=64, default=new_vault_id, editable=False)
    display_name = models.CharField(max_length=256)
    metadata = models.JSONField(default=dict, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.id})"


class Session(TenantModel):
    """A session record. Nothing executes the agent; resources are stored without secrets."""

    class Status(models.TextChoices):
        IDLE = "idle"
        RUNNING = "running"
        TERMINATED = "terminated"

    id = models.CharField(primary_key=True, max_length=64, default=new_session_id, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="sessions")
    agent_version = models.PositiveIntegerField()
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="sessions")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IDLE)
    title = models.CharField(max_length=512, null=True, blank=True)
    initial_events = models.JSONField(default=list, blank=True)
    resources = models.JSONField(default=list, blank=True)
    vault_ids = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    budget = models.JSONField(null=True, blank=True)
    deployment_run_id = models.CharField(max_length=64, null=True, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="session_idempotency_key_unique",
            )
        ]
        indexes = [models.Index(fields=["organization", "created_at"], name="session_org_created")]

    def __str__(self) -> str:
        return self.id

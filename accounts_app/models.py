import hashlib

from django.db import models

from core.ids import new_api_key_id, new_organization_id, new_workspace_id  # noqa: F401 (generated)


class Organization(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_organization_id, editable=False)
    name = models.CharField(max_length=200, unique=True)
    scheduled_deployment_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Overrides ORG_SCHEDULED_DEPLOYMENT_LIMIT for this organization."
    )
    session_rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Overrides LOCAL_SESSION_RATE_LIMIT_PER_MINUTE for this organization."
    )
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Credentials for the remote Managed Agents platform (SESSION_GATEWAY=anthropic), written only
    # through accounts_app.services and read through accounts_app.upstream. The key is stored as a
    # Fernet token (core.crypto) and never shown again; its last characters are kept for display.
    upstream_api_key_encrypted = models.TextField(blank=True, default="", editable=False)
    upstream_api_key_last4 = models.CharField(max_length=4, blank=True, default="", editable=False)
    upstream_base_url = models.CharField(
        max_length=500, blank=True, default="", editable=False,
        help_text="Base URL of the remote platform for this organization's key; empty: ANTHROPIC_BASE_URL, "
                  "else https://api.anthropic.com.",
    )
    upstream_credentials_updated_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            # A base URL belongs to the organization's own key: there is none without one.
            models.CheckConstraint(
                condition=models.Q(upstream_base_url="") | ~models.Q(upstream_api_key_encrypted=""),
                name="organization_upstream_base_url_needs_key",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def has_own_upstream_credentials(self) -> bool:
        return bool(self.upstream_api_key_encrypted)


class Workspace(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_workspace_id, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="workspaces")
    name = models.CharField(max_length=200)
    is_default = models.BooleanField(default=False)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="workspace_unique_name"),
            models.UniqueConstraint(
                fields=["organization"], condition=models.Q(is_default=True), name="workspace_one_default"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization.name} / {self.name}"


def hash_key(plain: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is a sound verifier (no salt/stretching needed).
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


class ApiKey(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_api_key_id, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys",
        help_text="When set, the key can act only in this workspace.",
    )
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=32, editable=False, help_text="First characters of the key, for display.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or self.organization.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

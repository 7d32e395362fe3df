from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from accounts_app.errors import UpstreamCredentialsInvalid, UpstreamCredentialsUnreadable
from accounts_app.models import ApiKey, Organization, Workspace
from accounts_app.services import (
    api_key_create,
    api_key_revoke,
    clean_upstream_api_key,
    clean_upstream_base_url,
    organization_upstream_credentials_clear,
    organization_upstream_credentials_set,
    upstream_key_tail,
)
from accounts_app.upstream import PUBLIC_API, shared_default_credentials, upstream_credentials


class WorkspaceInline(admin.TabularInline):
    model = Workspace
    extra = 0
    fields = ("id", "name", "is_default", "archived_at", "created_at")
    readonly_fields = ("id", "created_at")


def _key_shown(last4: str) -> str:
    return f"key …{last4}" if last4 else "a key too short to show any of it"


def describe_upstream_credentials(organization: Organization) -> str:
    """One plain sentence: which credentials the organization uses on the remote platform."""
    try:
        credentials = upstream_credentials(organization=organization)
    except UpstreamCredentialsUnreadable:
        return "Its own, but they cannot be decrypted with the configured FIELD_ENCRYPTION_KEYS: set them again."
    if credentials is None:
        return (
            "None: this organization cannot reach a remote Managed Agents platform "
            "(set a key below, or ANTHROPIC_API_KEY as a shared default for every organization)."
        )
    base_url = credentials.base_url or f"{PUBLIC_API} (the public API)"
    if credentials.source == "organization":
        return f"Its own: {_key_shown(organization.upstream_api_key_last4)} at {base_url}."
    default = shared_default_credentials()
    return (
        "The shared default ANTHROPIC_API_KEY — shared with every organization that has no credentials "
        f"of its own ({_key_shown(upstream_key_tail(default.api_key))} at {base_url})."
    )


class OrganizationForm(forms.ModelForm):
    """The organization's fields plus its upstream credentials, which are written only through the
    services: a new key is never rendered back (empty keeps the current one)."""

    new_upstream_api_key = forms.CharField(
        label="New upstream API key", required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Key for the remote Managed Agents platform (SESSION_GATEWAY=anthropic). Stored encrypted, "
                  "never shown again. Leave empty to keep the current one.",
    )
    new_upstream_base_url = forms.CharField(
        label="Upstream base URL", required=False, max_length=500,
        help_text="http(s) URL of the remote platform for this organization's key; empty: ANTHROPIC_BASE_URL, "
                  f"else {PUBLIC_API}.",
    )
    clear_upstream_credentials = forms.BooleanField(
        label="Clear upstream credentials", required=False,
        help_text="Remove this organization's own key and base URL (it then uses the shared default, if any).",
    )

    class Meta:
        model = Organization
        fields = ("name", "scheduled_deployment_limit", "session_rate_limit_per_minute", "disabled_at")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["new_upstream_base_url"].initial = self.instance.upstream_base_url

    def clean(self):
        cleaned = super().clean()
        key = cleaned.get("new_upstream_api_key") or ""
        base_url = cleaned.get("new_upstream_base_url") or ""
        clear = cleaned.get("clear_upstream_credentials")
        if clear and key:
            self.add_error("clear_upstream_credentials", "Either clear the credentials or set a new key, not both.")
            return cleaned
        if key:
            try:
                clean_upstream_api_key(key)
            except UpstreamCredentialsInvalid as exc:
                self.add_error("new_upstream_api_key", exc.message)
        if base_url and not clear:
            try:
                cleaned["new_upstream_base_url"] = clean_upstream_base_url(base_url)
            except UpstreamCredentialsInvalid as exc:
                self.add_error("new_upstream_base_url", exc.message)
            else:
                if not key and not self.instance.has_own_upstream_credentials:
                    self.add_error("new_upstream_api_key", "A base URL needs a key of the organization's own: set one.")
        if not key and not clear and self.instance.has_own_upstream_credentials:
            try:  # a new base URL alone keeps the stored key, which must then be readable
                upstream_credentials(organization=self.instance)
            except UpstreamCredentialsUnreadable as exc:
                self.add_error("new_upstream_api_key", exc.message)
        return cleaned


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    form = OrganizationForm
    list_display = (
        "name", "id", "upstream", "scheduled_deployment_limit", "session_rate_limit_per_minute", "disabled_at",
        "created_at",
    )
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at", "upstream_credentials_in_use", "upstream_credentials_updated_at")
    fieldsets = (
        (None, {"fields": ("id", "name", "scheduled_deployment_limit", "session_rate_limit_per_minute",
                           "disabled_at", "created_at")}),
        ("Remote platform (SESSION_GATEWAY=anthropic)", {"fields": (
            "upstream_credentials_in_use", "upstream_credentials_updated_at",
            "new_upstream_api_key", "new_upstream_base_url", "clear_upstream_credentials",
        )}),
    )
    inlines = [WorkspaceInline]

    @admin.display(description="Upstream")
    def upstream(self, obj):
        if obj.has_own_upstream_credentials:
            return f"own ({_key_shown(obj.upstream_api_key_last4)})"
        return "shared default" if shared_default_credentials() else "none"

    @admin.display(description="Upstream credentials")
    def upstream_credentials_in_use(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        return describe_upstream_credentials(obj)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        data = form.cleaned_data
        key, base_url = data.get("new_upstream_api_key"), data.get("new_upstream_base_url") or ""
        if data.get("clear_upstream_credentials"):
            if obj.has_own_upstream_credentials:
                organization_upstream_credentials_clear(organization=obj)
                messages.info(request, f"Upstream credentials of {obj.name} cleared.")
        elif key:
            organization_upstream_credentials_set(organization=obj, api_key=key, base_url=base_url)
            messages.info(request, f"New upstream credentials of {obj.name} stored ({_key_shown(obj.upstream_api_key_last4)}).")
        elif obj.has_own_upstream_credentials and base_url != obj.upstream_base_url:
            # Only the base URL changed: keep the stored key.
            current = upstream_credentials(organization=obj)
            organization_upstream_credentials_set(organization=obj, api_key=current.api_key, base_url=base_url)
            messages.info(request, f"Upstream base URL of {obj.name} changed.")


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "organization", "is_default", "archived_at", "created_at")
    list_filter = ("organization", "is_default")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "organization", "workspace", "created_at", "last_used_at", "revoked_at")
    list_filter = ("organization", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix", "id")
    fields = ("organization", "workspace", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return ("organization", "workspace", *self.readonly_fields)
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        created, plain = api_key_create(organization=obj.organization, workspace=obj.workspace, name=obj.name)
        obj.pk = created.pk
        obj.prefix = created.prefix
        obj.key_hash = created.key_hash
        obj.created_at = created.created_at
        obj._state.adding = False
        obj._state.db = created._state.db
        messages.warning(request, f"New API key (copy it now; it is not shown again): {plain}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key)
            count += 1
        self.message_user(request, f"Revoked {count} key(s) at {timezone.now():%Y-%m-%d %H:%M}Z.")

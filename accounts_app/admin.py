from django.contrib import admin, messages
from django.utils import timezone

from accounts_app.models import ApiKey, Organization, Workspace
from accounts_app.services import api_key_create, api_key_revoke


class WorkspaceInline(admin.TabularInline):
    model = Workspace
    extra = 0
    fields = ("id", "name", "is_default", "archived_at", "created_at")
    readonly_fields = ("id", "created_at")


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "scheduled_deployment_limit", "session_rate_limit_per_minute", "disabled_at", "created_at")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")
    inlines = [WorkspaceInline]


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

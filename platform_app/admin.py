from django import forms
from django.contrib import admin, messages

from core.errors import ApiError
from platform_app import services, shapes
from platform_app.models import Agent, AgentVersion, Environment, Session, Vault


class AgentVersionInline(admin.TabularInline):
    """Versions are immutable history: shown, never edited or deleted here."""

    model = AgentVersion
    extra = 0
    can_delete = False
    fields = ("version", "name", "model", "multiagent", "created_at")
    readonly_fields = fields
    ordering = ("-version",)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("id", "latest_name", "latest_version", "organization", "workspace", "archived_at", "created_at")
    list_filter = ("organization", ("archived_at", admin.EmptyFieldListFilter))
    search_fields = ("id", "versions__name")
    readonly_fields = ("id", "organization", "workspace", "latest_version", "archived_at", "created_at", "updated_at")
    fields = readonly_fields
    inlines = [AgentVersionInline]
    actions = ["archive"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("organization", "workspace").distinct()

    @admin.display(description="name")
    def latest_name(self, obj):
        version = obj.versions.filter(version=obj.latest_version).first()
        return version.name if version else "—"

    def has_add_permission(self, request):
        # An agent without a version is not usable: agents are created through the API.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Archive selected agents (and their deployments)")
    def archive(self, request, queryset):
        archived = 0
        for agent in queryset:
            try:
                services.agent_archive(agent=agent)
            except ApiError as exc:
                self.message_user(request, f"{agent.id}: {exc.message}", level=messages.ERROR)
                continue
            archived += 1
        self.message_user(request, f"Archived {archived} agent(s).", level=messages.SUCCESS)


class _ShapedForm(forms.ModelForm):
    """Admin edits go through the same shape checks as the API, so every stored row still renders
    into the SDK's model."""

    shaped_fields: dict = {}

    def clean(self):
        cleaned = super().clean()
        for field, normalize in self.shaped_fields.items():
            if field in cleaned:
                try:
                    cleaned[field] = normalize(cleaned[field], field)
                except ApiError as exc:
                    self.add_error(field, exc.message)
        return cleaned


class EnvironmentForm(_ShapedForm):
    shaped_fields = {"config": shapes.environment_config, "metadata": shapes.metadata}

    class Meta:
        model = Environment
        fields = "__all__"


class VaultForm(_ShapedForm):
    shaped_fields = {"metadata": shapes.metadata}

    class Meta:
        model = Vault
        fields = "__all__"


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    form = EnvironmentForm
    list_display = ("name", "id", "organization", "workspace", "archived_at", "created_at")
    list_filter = ("organization", ("archived_at", admin.EmptyFieldListFilter))
    search_fields = ("id", "name")
    readonly_fields = ("id", "archived_at", "created_at", "updated_at")
    actions = ["archive"]

    @admin.action(description="Archive selected environments")
    def archive(self, request, queryset):
        for environment in queryset:
            services.environment_archive(environment=environment)
        self.message_user(request, f"Archived {queryset.count()} environment(s).", level=messages.SUCCESS)


@admin.register(Vault)
class VaultAdmin(admin.ModelAdmin):
    form = VaultForm
    list_display = ("display_name", "id", "organization", "workspace", "archived_at", "created_at")
    list_filter = ("organization", ("archived_at", admin.EmptyFieldListFilter))
    search_fields = ("id", "display_name")
    readonly_fields = ("id", "archived_at", "created_at", "updated_at")
    actions = ["archive"]

    @admin.action(description="Archive selected vaults")
    def archive(self, request, queryset):
        for vault in queryset:
            services.vault_archive(vault=vault)
        self.message_user(request, f"Archived {queryset.count()} vault(s).", level=messages.SUCCESS)


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    """Read-only but for the status actions: sessions are records of what was asked for (resources
    hold no secrets)."""

    list_display = ("id", "agent", "agent_version", "environment", "status", "deployment_run_id", "organization", "created_at")
    list_filter = ("status", "organization")
    search_fields = ("id", "agent__id", "environment__id", "deployment_run_id", "idempotency_key")
    date_hierarchy = "created_at"

    actions = ["mark_running", "mark_idle", "mark_terminated"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("organization")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        return request.user.is_active and request.user.has_perm("platform_app.change_session")

    # Nothing executes an agent on the built-in platform: these set what a deployment's overlap
    # policy sees when it asks whether the previous run's session is still running.
    def _mark(self, request, queryset, status: str) -> None:
        for session in queryset:
            services.session_status_set(session=session, status=status)
        self.message_user(request, f"Marked {queryset.count()} session(s) {status}.", level=messages.SUCCESS)

    @admin.action(description="Mark selected sessions running", permissions=["operate"])
    def mark_running(self, request, queryset):
        self._mark(request, queryset, Session.Status.RUNNING)

    @admin.action(description="Mark selected sessions idle", permissions=["operate"])
    def mark_idle(self, request, queryset):
        self._mark(request, queryset, Session.Status.IDLE)

    @admin.action(description="Mark selected sessions terminated", permissions=["operate"])
    def mark_terminated(self, request, queryset):
        self._mark(request, queryset, Session.Status.TERMINATED)

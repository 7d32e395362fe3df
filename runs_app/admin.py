"""Runs and fires in the admin: read-only records, filterable, linked to their deployment, session
and run. Runs are append-only and fires belong to the scheduler, so neither is edited here."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from runs_app.models import DeploymentRun, Fire


def admin_link(viewname: str, pk, text=None):
    if not pk:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse(viewname, args=[pk]), text or pk)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DeploymentFilter(admin.SimpleListFilter):
    """Filter by one deployment (`?deployment=depl_…`, linked from the deployment's page). Only the
    selected deployment is offered: listing every deployment in the sidebar would not scale."""

    title = "deployment"
    parameter_name = "deployment"

    def lookups(self, request, model_admin):
        value = self.value()
        if not value:
            return []
        from deployments_app.models import Deployment

        name = Deployment.objects.filter(pk=value).values_list("name", flat=True).first()
        return [(value, f"{name} ({value})" if name else value)]

    def queryset(self, request, queryset):
        return queryset.filter(deployment_id=self.value()) if self.value() else queryset


class ErrorTypeFilter(admin.SimpleListFilter):
    title = "error type"
    parameter_name = "error_type"
    NONE = "__none__"

    def lookups(self, request, model_admin):
        types = (
            DeploymentRun.objects.exclude(error_type=None).order_by("error_type")
            .values_list("error_type", flat=True).distinct()
        )
        return [(self.NONE, "none (session created)"), *((t, t) for t in types)]

    def queryset(self, request, queryset):
        if self.value() == self.NONE:
            return queryset.filter(error_type=None)
        if self.value():
            return queryset.filter(error_type=self.value())
        return queryset


@admin.register(DeploymentRun)
class DeploymentRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "deployment_link", "organization", "trigger_type", "scheduled_at", "outcome",
                    "started_at", "created_at")
    list_filter = ("trigger_type", ErrorTypeFilter, "organization", DeploymentFilter, "created_at")
    search_fields = ("=id", "=deployment__id", "deployment__name", "=session_id")
    date_hierarchy = "created_at"
    list_select_related = ("deployment", "organization")
    list_per_page = 50
    fields = ("id", "deployment_link", "organization", "workspace", "agent_id", "agent_version", "trigger_type",
              "scheduled_at", "session_link", "error_type", "error_message", "fire_link", "started_at", "created_at")
    readonly_fields = fields

    @admin.display(description="deployment", ordering="deployment__name")
    def deployment_link(self, obj: DeploymentRun):
        return admin_link("admin:deployments_app_deployment_change", obj.deployment_id, obj.deployment.name)

    @admin.display(description="session")
    def session_link(self, obj: DeploymentRun):
        return admin_link("admin:platform_app_session_change", obj.session_id)

    @admin.display(description="fire")
    def fire_link(self, obj: DeploymentRun):
        return admin_link("admin:runs_app_fire_change", obj.fire_id)

    @admin.display(description="outcome", ordering="error_type")
    def outcome(self, obj: DeploymentRun):
        if obj.session_id:
            return format_html('<span style="color:#1a7f37">✔</span> {}', self.session_link(obj))
        return format_html('<span style="color:#cf222e" title="{}">✘ {}</span>', obj.error_message or "",
                           obj.error_type)


@admin.register(Fire)
class FireAdmin(ReadOnlyAdmin):
    """The scheduler's to-do list: one row per nominal fire. Useful to see what is pending, stuck
    (claimed with an expired lease) or skipped, and why."""

    list_display = ("id", "deployment_link", "scheduled_at", "due_at", "status", "attempts", "skip_reason",
                    "started_at", "run_link")
    list_filter = ("status", "skip_reason", DeploymentFilter, "scheduled_at")
    search_fields = ("=id", "=deployment__id", "=run_id")
    date_hierarchy = "scheduled_at"
    list_select_related = ("deployment",)
    list_per_page = 50
    fields = ("id", "deployment_link", "scheduled_at", "due_at", "status", "attempts", "skip_reason",
              "lease_expires_at", "published_at", "started_at", "run_link", "created_at", "updated_at")
    readonly_fields = fields

    @admin.display(description="deployment", ordering="deployment__name")
    def deployment_link(self, obj: Fire):
        return admin_link("admin:deployments_app_deployment_change", obj.deployment_id, obj.deployment.name)

    @admin.display(description="run")
    def run_link(self, obj: Fire):
        # run_id is reserved at the first claim; the run exists only once the fire is done.
        if obj.status != Fire.Status.DONE:
            return obj.run_id or "—"
        return admin_link("admin:runs_app_deploymentrun_change", obj.run_id)

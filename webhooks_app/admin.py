"""Webhooks admin: endpoints (create, edit, send a test event, enable, disable, rotate the secret)
and deliveries with every attempt (redeliver).

Every change goes through webhooks_app.services, as the API's do. Signing secrets are shown once,
as a message, when created or rotated; the stored (encrypted) ones are never displayed.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from core.errors import ApiError
from webhooks_app import services
from webhooks_app.events import EVENT_TYPES
from webhooks_app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks_app.selectors import webhook_endpoint_count
from webhooks_app.transport import parse_target

GREEN, AMBER, RED, GRAY = "#1a7f37", "#9a6700", "#cf222e", "#6e7781"
STATUS_COLORS = {"succeeded": GREEN, "pending": AMBER, "delivering": AMBER, "failed": RED}


def _colored(text: str, color: str, title: str = ""):
    return format_html('<span style="color:{};white-space:nowrap" title="{}">{}</span>', color, title, text)


class WebhookEndpointForm(forms.ModelForm):
    enabled_events = forms.MultipleChoiceField(
        choices=[(name, name) for name in EVENT_TYPES], widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("organization", "workspace", "url", "name", "description", "enabled_events")

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            services.webhook_url_check(url)
        except ApiError as exc:
            raise ValidationError(exc.message.removeprefix("url: "))
        return url

    def clean(self):
        cleaned = super().clean()
        organization, workspace = cleaned.get("organization"), cleaned.get("workspace")
        if workspace is not None and organization is not None and workspace.organization_id != organization.pk:
            self.add_error("workspace", "this workspace belongs to another organization")
        if (self.instance._state.adding and organization is not None
                and webhook_endpoint_count(organization_id=organization.pk) >= services.MAX_ENDPOINTS_PER_ORGANIZATION):
            self.add_error(None, f"an organization can have at most {services.MAX_ENDPOINTS_PER_ORGANIZATION} "
                                 "webhook endpoints; delete one first")
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("display_name", "target", "organization", "workspace", "state_badge", "failing_since",
                    "deliveries_link", "created_at")
    list_filter = ("state", "organization")
    search_fields = ("id", "name", "url")
    readonly_fields = ("id", "state", "disabled_reason", "failing_since", "created_at", "updated_at",
                       "deliveries_link")
    actions = ["send_test_event", "enable", "disable", "regenerate_secret"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return ("organization", "workspace", *self.readonly_fields)
        return self.readonly_fields

    def get_fields(self, request, obj=None):
        fields = ["organization", "workspace", "url", "name", "description", "enabled_events"]
        if obj is not None:
            fields = ["id", *fields, "state", "disabled_reason", "failing_since", "deliveries_link", "created_at",
                      "updated_at"]
        return fields

    @admin.display(description="name", ordering="name")
    def display_name(self, obj):
        return obj.name or obj.id

    @admin.display(description="target")
    def target(self, obj):
        try:
            parsed = parse_target(obj.url)
            return f"{parsed.scheme}://{parsed.host_header}"
        except Exception:  # noqa: BLE001 — an old row with a URL the rules refuse now
            return "(invalid URL)"

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        if obj.is_enabled:
            return _colored("enabled", GREEN)
        return _colored("disabled", RED if obj.disabled_reason else GRAY, obj.disabled_reason or "disabled by a person")

    @admin.display(description="deliveries")
    def deliveries_link(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        url = reverse("admin:webhooks_app_webhookdelivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, "deliveries and attempts")

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in ("url", "name", "description", "enabled_events")}
        if change:
            services.webhook_endpoint_update(endpoint=WebhookEndpoint.objects.get(pk=obj.pk), data=data)
            obj.refresh_from_db()
            return
        try:
            created, secret = services.webhook_endpoint_create(
                organization=form.cleaned_data["organization"], workspace=form.cleaned_data.get("workspace"), **data
            )
        except ApiError as exc:  # lost a race for the last of the organization's endpoints
            messages.error(request, exc.message)
            return
        obj.pk, obj.signing_secret, obj.created_at, obj.updated_at = (
            created.pk, created.signing_secret, created.created_at, created.updated_at,
        )
        obj._state.adding, obj._state.db = False, created._state.db
        messages.warning(request, f"Signing secret (copy it now; it is not shown again): {secret}")

    @admin.action(description="Send a test event")
    def send_test_event(self, request, queryset):
        for endpoint in queryset:
            delivery = services.webhook_endpoint_send_test_event(endpoint=endpoint)
            self.message_user(request, f"Test event {delivery.event_id} queued for {endpoint.name or endpoint.pk}.")

    @admin.action(description="Enable (resume deliveries)")
    def enable(self, request, queryset):
        for endpoint in queryset:
            services.webhook_endpoint_enable(endpoint=endpoint)
        self.message_user(request, f"Enabled {queryset.count()} endpoint(s).")

    @admin.action(description="Disable (stop deliveries)")
    def disable(self, request, queryset):
        for endpoint in queryset:
            services.webhook_endpoint_disable(endpoint=endpoint)
        self.message_user(request, f"Disabled {queryset.count()} endpoint(s).")

    @admin.action(description="Regenerate the signing secret")
    def regenerate_secret(self, request, queryset):
        for endpoint in queryset:
            secret = services.webhook_endpoint_regenerate_secret(endpoint=endpoint)
            messages.warning(request, f"New signing secret of {endpoint.name or endpoint.pk} (copy it now; it is not "
                                      f"shown again; the previous one keeps working for a while): {secret}")


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "status_code", "error", "response_excerpt")
    readonly_fields = fields
    ordering = ("number",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "event_type", "event_id", "object_id", "endpoint", "status_badge", "attempts",
                    "last_status_code", "last_error_short", "next_attempt_at", "created_at")
    list_filter = ("status", "event__type", "endpoint__organization", "endpoint")
    search_fields = ("event__id", "event__object_id", "endpoint__id", "endpoint__name")
    list_select_related = ("event", "endpoint")
    fields = ("event", "event_type", "object_id", "endpoint", "status", "attempts", "next_attempt_at", "give_up_at",
              "last_attempt_at", "last_status_code", "last_error", "delivered_at", "lease_expires_at", "created_at")
    readonly_fields = fields
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="type", ordering="event__type")
    def event_type(self, obj):
        return obj.event.type

    @admin.display(description="data.id")
    def object_id(self, obj):
        return obj.event.object_id

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return _colored(obj.status, STATUS_COLORS.get(obj.status, GRAY), obj.last_error)

    @admin.display(description="last error")
    def last_error_short(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    @admin.action(description="Redeliver (same event, same webhook-id)")
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset:
            if services.webhook_delivery_redeliver(delivery=delivery).status == WebhookDelivery.Status.PENDING:
                count += 1
        self.message_user(request, f"{count} delivery(ies) queued again.")


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "object_id", "organization", "workspace_id", "created_at", "fanned_out_at")
    list_filter = ("type", "organization")
    search_fields = ("id", "object_id")
    readonly_fields = ("id", "type", "object_id", "organization", "workspace_id", "created_at", "fanned_out_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

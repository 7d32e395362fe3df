"""The deployments admin: what an operator needs to run the service.

Pages are read-only; every state change goes through the same services as the API
(`deployment_pause`, `deployment_unpause`, `deployment_archive`, `run_manually`,
`deployment_update` for the scheduling policies, `deployment_backfill`), as changelist actions or
as buttons on a deployment's page, so the same rules hold (an archived deployment cannot be
unpaused, the firing state stays right) and refusals are shown as messages.

`resource_secrets` (encrypted write-only credentials) is never displayed or searched.
"""

import json
import zoneinfo
from datetime import datetime, timezone as dt_timezone

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.paginator import Paginator
from django.db.models import OuterRef, Subquery
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from rest_framework.exceptions import ValidationError

from core.errors import ApiError
from deployments_app import schedule as cron
from deployments_app import services
from deployments_app.errors import DeploymentArchived
from deployments_app.models import Deployment
from gateways import get_gateway
from runs_app.models import DeploymentRun

UPCOMING = 5
RUNS_PER_PAGE = 20


def _zone(name: str | None):
    try:
        return zoneinfo.ZoneInfo(name) if name else None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def local_and_utc(instant: datetime | None, zone_name: str | None) -> str:
    """"Tue 24 Nov 02:30 EST (07:30 UTC)"."""
    if instant is None:
        return "—"
    zone = _zone(zone_name)
    utc = instant.astimezone(dt_timezone.utc)
    if zone is None or zone_name == "UTC":
        return f"{utc:%a %d %b %Y %H:%M} UTC"
    local = instant.astimezone(zone)
    return f"{local:%a %d %b %Y %H:%M %Z} ({utc:%H:%M} UTC)"


GREEN, AMBER, RED, GRAY = "#1a7f37", "#9a6700", "#cf222e", "#6e7781"


def colored(text: str, color: str, title: str = ""):
    return format_html('<span style="color:{};white-space:nowrap" title="{}">{}</span>', color, title, text)


def local_then_utc(instant: datetime, zone_name: str | None):
    """Two short lines for the list: the local time, then UTC."""
    zone = _zone(zone_name)
    utc = instant.astimezone(dt_timezone.utc)
    if zone is None or zone_name == "UTC":
        return format_html('<span style="white-space:nowrap">{}</span>', f"{utc:%a %d %b %H:%M} UTC")
    local = instant.astimezone(zone)
    return format_html('<span style="white-space:nowrap">{}</span><br><span style="white-space:nowrap;color:{}">{}</span>',
                       f"{local:%a %d %b %H:%M %Z}", GRAY, f"{utc:%d %b %H:%M} UTC")


def run_outcome(session_id: str | None, error_type: str | None, error_message: str | None = None):
    if session_id:
        return format_html(
            '<span style="color:#1a7f37">✔ session</span> <a href="{}">{}</a>',
            reverse("admin:platform_app_session_change", args=[session_id]), session_id,
        )
    if error_type:
        return format_html('<span style="color:#cf222e" title="{}">✘ {}</span>', error_message or "", error_type)
    return "—"


def describe_initial_events(events: list) -> list[str]:
    """Each initial event as one readable line: its type and its text."""
    lines = []
    for event in events or []:
        kind = event.get("type", "?") if isinstance(event, dict) else "?"
        if kind in ("user.message", "system.message"):
            parts = []
            for block in event.get("content") or []:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "text":
                    parts.append(block.get("text", ""))
                else:
                    source = block.get("source") or {}
                    where = source.get("url") or source.get("file_id") or source.get("type") or ""
                    parts.append(f"[{block.get('type', 'block')}{': ' + where if where else ''}]")
            lines.append(f"{kind}: " + "\n".join(parts))
        elif kind == "user.define_outcome":
            rubric = event.get("rubric") or {}
            rubric_text = rubric.get("content") or rubric.get("file_id") or ""
            limit = event.get("max_iterations")
            lines.append(
                f"{kind}: {event.get('description', '')}"
                + (f"\nrubric: {rubric_text}" if rubric_text else "")
                + (f"\nmax iterations: {limit}" if limit else "")
            )
        else:
            lines.append(f"{kind}: {json.dumps(event, ensure_ascii=False)}")
    return lines


def pretty_json(value):
    if value in (None, [], {}):
        return "—"
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>',
                       json.dumps(value, indent=2, ensure_ascii=False))


DST_FOLD_WORDS = {
    "both": "both: a local time that happens twice fires twice (the hosted API's rule)",
    "first": "first: a local time that happens twice fires once, at its first instant",
    "last": "last: a local time that happens twice fires once, at its last instant",
}
OVERLAP_WORDS = {
    "allow": "allow: every fire starts a session, whatever the previous one is doing",
    "skip": "skip: while the previous run's session still runs, a fire records previous_run_active_error and "
            "starts nothing",
    "cancel_previous": "cancel previous: a fire first stops the previous run's session if it still runs",
}


def policy_summary(obj: Deployment) -> str:
    """The policies in use, in a few words, for the list."""
    parts = []
    if obj.schedule_start_at or obj.schedule_end_at:
        parts.append("window")
    if obj.schedule_max_runs is not None:
        parts.append(f"{obj.runs_remaining} of {obj.schedule_max_runs} runs left")
    if obj.schedule_dst_fold != Deployment.DstFold.BOTH:
        parts.append(f"DST: {obj.schedule_dst_fold}")
    if obj.policy_overlap != Deployment.Overlap.ALLOW:
        parts.append(f"overlap: {obj.policy_overlap.replace('_', ' ')}")
    if obj.policy_pause_after_failures is not None:
        parts.append(f"pause after {obj.policy_pause_after_failures} failures")
    return " · ".join(parts)


def repeated_note(note, dst_fold: str) -> str:
    """What a repeated local time does under the deployment's fold policy, and under the others."""
    first, second = (f"{at.astimezone(dt_timezone.utc):%H:%M} UTC" for at in note.instants)
    fires = note.fires if note.fires is not None else note.instants
    shown = " and ".join(f"{at.astimezone(dt_timezone.utc):%H:%M} UTC" for at in fires)
    doing = {2: f"fires twice, at {shown}", 1: f"fires once, at {shown}", 0: "does not fire (outside the active window)"}
    head = f"{note.date:%a %d %b %Y} {note.local_time}: happens twice (clocks fall back) — {doing[len(fires)]}"
    return (f"{head} [dst_fold {dst_fold}; with both: {first} and {second}, with first: {first} only, "
            f"with last: {second} only]")


# --- forms: the scheduling policies and backfill ---------------------------------------------------

_TIMESTAMP_HELP = "RFC 3339 with a time zone, e.g. 2027-01-01T00:00:00Z"


class PolicyForm(forms.Form):
    """The scheduling policies, turned into the API's `schedule` (the current cron expression and
    time zone, with the extensions; only for a scheduled deployment) and `policy`, and checked by
    the API's own input serializer, so the admin accepts exactly what the API accepts."""

    start_at = forms.CharField(required=False, help_text=f"No fire before this instant; empty: always. {_TIMESTAMP_HELP}")
    end_at = forms.CharField(required=False, help_text=f"No fire after this instant; empty: no end. {_TIMESTAMP_HELP}")
    max_runs = forms.IntegerField(required=False, min_value=1, help_text="Archive after this many scheduled runs "
                                  "(counting starts again when it changes); empty: no limit")
    dst_fold = forms.ChoiceField(choices=list(DST_FOLD_WORDS.items()), label="DST fold policy")
    overlap = forms.ChoiceField(choices=list(OVERLAP_WORDS.items()))
    pause_after_failures = forms.IntegerField(required=False, min_value=1, max_value=1000,
                                              help_text="Pause after this many failed scheduled runs in a row; "
                                              "empty: never")
    SCHEDULE_FIELDS = ("start_at", "end_at", "max_runs", "dst_fold")

    def __init__(self, data=None, *, deployment: Deployment):
        def shown(at):
            return at.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if at else ""

        initial = {"start_at": shown(deployment.schedule_start_at), "end_at": shown(deployment.schedule_end_at),
                   "max_runs": deployment.schedule_max_runs, "dst_fold": deployment.schedule_dst_fold,
                   "overlap": deployment.policy_overlap, "pause_after_failures": deployment.policy_pause_after_failures}
        super().__init__(data, initial=initial)
        self.schedule = None
        if deployment.has_schedule:
            self.schedule = {"type": "cron", "expression": deployment.schedule_expression,
                             "timezone": deployment.schedule_timezone}
        else:  # a manual-only deployment has a policy but no schedule to refine
            for name in self.SCHEDULE_FIELDS:
                del self.fields[name]
        self.update = {}

    def clean(self):
        from core.errors import format_validation_detail
        from deployments_app.serializers import DeploymentUpdateInput

        data = super().clean()
        if self.errors:
            return data
        body = {"policy": {"overlap": data["overlap"], "pause_after_failures": data.get("pause_after_failures")}}
        if self.schedule is not None:
            body["schedule"] = {**self.schedule, "start_at": data.get("start_at") or None,
                                "end_at": data.get("end_at") or None, "max_runs": data.get("max_runs"),
                                "dst_fold": data["dst_fold"]}
        serializer = DeploymentUpdateInput(data=body)
        if serializer.is_valid():
            self.update = dict(serializer.validated_data)
        else:
            for message in format_validation_detail(serializer.errors):
                self.add_error(None, message)
        return data


class BackfillForm(forms.Form):
    start = forms.CharField(help_text=f"The first instant of the range (included). {_TIMESTAMP_HELP}")
    end = forms.CharField(help_text=f"The end of the range (excluded; not in the future). {_TIMESTAMP_HELP}")

    def clean(self):
        from core.errors import format_validation_detail
        from deployments_app.serializers import Rfc3339Field

        data = super().clean()
        for name in ("start", "end"):
            if data.get(name):
                try:
                    data[name] = Rfc3339Field().to_internal_value(data[name])
                except ValidationError as exc:
                    for message in format_validation_detail({name: exc.detail}):
                        self.add_error(None, message)
        return data


# --- filters ----------------------------------------------------------------------------------------


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("paused", "paused"), ("archived", "archived")]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "archived":
            return queryset.filter(archived_at__isnull=False)
        if value in ("active", "paused"):
            return queryset.filter(archived_at__isnull=True, status=value)
        return queryset


class HasScheduleFilter(admin.SimpleListFilter):
    title = "schedule"
    parameter_name = "has_schedule"

    def lookups(self, request, model_admin):
        return [("yes", "has a schedule"), ("no", "manual only")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(schedule_expression__isnull=self.value() == "no")
        return queryset


class AgentFilter(admin.SimpleListFilter):
    """The agents that have deployments, by name where the built-in platform knows them."""

    title = "agent"
    parameter_name = "agent_id"
    LIMIT = 200

    def lookups(self, request, model_admin):
        agent_ids = list(
            Deployment.objects.order_by("agent_id").values_list("agent_id", flat=True).distinct()[: self.LIMIT]
        )
        names = get_gateway().agent_names(agent_ids)
        return [(agent_id, f"{names[agent_id]} ({agent_id})" if agent_id in names else agent_id) for agent_id in agent_ids]

    def queryset(self, request, queryset):
        return queryset.filter(agent_id=self.value()) if self.value() else queryset


# --- run history inline ---------------------------------------------------------------------------------


class RunInline(admin.TabularInline):
    """The deployment's runs, newest first, RUNS_PER_PAGE at a time (`?runs_page=N`)."""

    model = DeploymentRun
    fk_name = "deployment"
    template = "admin/deployments_app/deployment/run_inline.html"
    verbose_name = "run"
    verbose_name_plural = "run history"
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    fields = ("run_link", "trigger_type", "scheduled_at", "outcome", "started_at", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _page(self, request, deployment_id: str):
        runs = DeploymentRun.objects.filter(deployment_id=deployment_id).order_by("-created_at", "-id")
        paginator = Paginator(runs.values_list("pk", flat=True), RUNS_PER_PAGE)
        return paginator.get_page(request.GET.get("runs_page"))

    def get_queryset(self, request):
        # The formset filters by deployment itself, so the page is applied as a list of ids (a
        # sliced queryset cannot be filtered further).
        deployment_id = request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
        queryset = super().get_queryset(request).order_by("-created_at", "-id")
        if not deployment_id:
            return queryset.none()
        return queryset.filter(pk__in=list(self._page(request, deployment_id).object_list))

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.runs_page = self._page(request, obj.pk) if obj is not None else None
        formset.all_runs_url = (
            reverse("admin:runs_app_deploymentrun_changelist") + f"?deployment={obj.pk}" if obj is not None else ""
        )
        return formset

    @admin.display(description="run")
    def run_link(self, run: DeploymentRun):
        return format_html('<a href="{}">{}</a>', reverse("admin:runs_app_deploymentrun_change", args=[run.pk]), run.pk)

    @admin.display(description="outcome")
    def outcome(self, run: DeploymentRun):
        return run_outcome(run.session_id, run.error_type, run.error_message)


# --- the deployment admin -----------------------------------------------------------------------------

DETAIL_FIELDSETS = (
    (None, {"fields": ("id", "name", "description", "organization", "workspace", "status_label")}),
    ("Schedule", {"fields": ("schedule_words", "next_fires", "dst_effects", "last_run_at", "missed_fires",
                             "jitter_seconds")}),
    ("Scheduling policies", {"fields": ("active_window", "run_limit", "dst_fold_display", "overlap_display",
                                        "failure_threshold")}),
    ("What it runs", {"fields": ("agent_id", "agent_version", "environment_id", "initial_events_readable",
                                 "resources_display", "vault_ids", "metadata_display", "budget_display")}),
    ("Record", {"fields": ("archived_at", "created_at", "updated_at")}),
)
DETAIL_READONLY = tuple(field for _, options in DETAIL_FIELDSETS for field in options["fields"])


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ("name", "organization", "status_label", "schedule_words", "time_zone", "next_fire",
                    "last_run", "missed")
    list_display_links = ("name",)
    list_filter = (StatusFilter, "organization", AgentFilter, HasScheduleFilter)
    search_fields = ("=id", "name", "=agent_id")
    list_select_related = ("organization",)
    list_per_page = 50
    ordering = ("-created_at",)
    fieldsets = DETAIL_FIELDSETS
    readonly_fields = DETAIL_READONLY
    exclude = ("resource_secrets",)
    inlines = [RunInline]
    actions = ["pause", "unpause", "archive", "run_now", "backfill"]
    change_form_template = "admin/deployments_app/deployment/change_form.html"

    # --- permissions: pages are read-only; actions need the change permission -------------------------

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # No editable form: a saved form would write every column back and could overwrite what
        # the scheduler or a worker changed meanwhile. Changes are actions (services) only.
        return False

    def has_operate_permission(self, request):
        return request.user.is_active and request.user.has_perm("deployments_app.change_deployment")

    # --- list -----------------------------------------------------------------------------------------

    def get_queryset(self, request):
        latest = DeploymentRun.objects.filter(deployment=OuterRef("pk")).order_by("-created_at", "-id")
        return super().get_queryset(request).annotate(
            last_run_id=Subquery(latest.values("id")[:1]),
            last_run_created_at=Subquery(latest.values("created_at")[:1]),
            last_run_session_id=Subquery(latest.values("session_id")[:1]),
            last_run_error_type=Subquery(latest.values("error_type")[:1]),
        )

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Deployment):
        if obj.is_archived:
            return colored("archived", GRAY)
        if obj.status == Deployment.Status.PAUSED:
            reason = obj.paused_reason or {}
            if reason.get("type") == "error":
                error = reason.get("error") or {}
                return format_html('{}<br><small style="color:{}">{}</small>', colored("paused by an error", AMBER),
                                   GRAY, error.get("type", "error"))
            return colored(f"paused ({reason.get('type', 'manual')})", AMBER)
        return colored("active", GREEN)

    @admin.display(description="schedule")
    def schedule_words(self, obj: Deployment):
        if not obj.has_schedule:
            return "manual only"
        try:
            words = cron.describe(obj.schedule_expression)
        except cron.ScheduleError:
            words = "invalid schedule"
        shown = format_html('{}<br><code style="color:#6e7781">{} ({})</code>', words, obj.schedule_expression,
                            obj.schedule_timezone)
        policies = policy_summary(obj)
        if policies:
            shown = format_html('{}<br><small style="color:{}">{}</small>', shown, GRAY, policies)
        return shown

    @admin.display(description="next fire", ordering="next_fire_at")
    def next_fire(self, obj: Deployment):
        if obj.is_archived or not obj.has_schedule:
            return "—"
        if obj.status == Deployment.Status.PAUSED:
            return colored("paused", GRAY)
        return local_then_utc(obj.next_fire_at, obj.schedule_timezone) if obj.next_fire_at else "—"

    @admin.display(description="time zone", ordering="schedule_timezone")
    def time_zone(self, obj: Deployment):
        return obj.schedule_timezone or "—"

    @admin.display(description="last run", ordering="last_run_created_at")
    def last_run(self, obj: Deployment):
        run_id = getattr(obj, "last_run_id", None)
        if not run_id:
            return "—"
        when = obj.last_run_created_at.astimezone(dt_timezone.utc)
        if obj.last_run_session_id:
            outcome = colored("✔ session", GREEN)
        else:
            outcome = colored(f"✘ {obj.last_run_error_type}", RED)
        return format_html(
            '<a href="{}" style="white-space:nowrap">{} UTC</a><br>{}',
            reverse("admin:runs_app_deploymentrun_change", args=[run_id]), f"{when:%d %b %H:%M}", outcome,
        )

    @admin.display(description="missed", ordering="missed_fires")
    def missed(self, obj: Deployment):
        if not obj.missed_fires:
            return "0"
        return colored(str(obj.missed_fires), AMBER, "fires older than the catch-up window, skipped")

    # --- detail -----------------------------------------------------------------------------------------

    @admin.display(description="next fires")
    def next_fires(self, obj: Deployment):
        if not obj.has_schedule:
            return "manual only: runs only when asked"
        if obj.is_archived:
            return "none: archived"
        remaining = obj.runs_remaining
        count = UPCOMING if remaining is None else min(UPCOMING, remaining)
        instants = cron.next_fires(obj.schedule_expression, obj.schedule_timezone, timezone.now(), count,
                                   **obj.schedule_options) if count else []
        if not instants:
            return "none: " + ("no runs left under the run limit" if remaining == 0 else "the active window has ended"
                               if obj.schedule_end_at is not None else "the schedule never fires again")
        note = " (paused: what it would do if unpaused)" if obj.status == Deployment.Status.PAUSED else ""
        if remaining is not None and len(instants) == remaining:
            note += " — then the run limit is reached and the deployment archives itself"
        rows = format_html_join("", "<li>{}</li>", ((local_and_utc(at, obj.schedule_timezone),) for at in instants))
        return format_html('<ol style="margin:0;padding-left:1.2em">{}</ol>{}', rows, note)

    @admin.display(description="daylight saving (next 12 months)")
    def dst_effects(self, obj: Deployment):
        if not obj.has_schedule:
            return "—"
        notes = cron.dst_notes(obj.schedule_expression, obj.schedule_timezone, timezone.now(), **obj.schedule_options)
        if not notes:
            return "no effect: every matching local time happens exactly once"
        lines = []
        for note in notes:
            if note.kind == "skipped":
                lines.append((f"{note.date:%a %d %b %Y} {note.local_time}: does not exist (clocks spring forward) — "
                              "no fire that day",))
            else:
                lines.append((repeated_note(note, obj.schedule_dst_fold),))
        return format_html('<ul style="margin:0;padding-left:1.2em">{}</ul>', format_html_join("", "<li>{}</li>", lines))

    # --- scheduling policies (README "Scheduling policies") ---------------------------------------------

    @admin.display(description="active window")
    def active_window(self, obj: Deployment):
        if obj.schedule_start_at is None and obj.schedule_end_at is None:
            return "unbounded"
        start = local_and_utc(obj.schedule_start_at, obj.schedule_timezone) if obj.schedule_start_at else "always"
        end = local_and_utc(obj.schedule_end_at, obj.schedule_timezone) if obj.schedule_end_at else "no end"
        return f"from {start} until {end}"

    @admin.display(description="run limit")
    def run_limit(self, obj: Deployment):
        if obj.schedule_max_runs is None:
            return "none"
        return (f"{obj.schedule_max_runs} scheduled runs, {obj.runs_counted} counted, {obj.runs_remaining} left "
                "(then the deployment archives itself; fires skipped for overlap do not count)")

    @admin.display(description="DST fold policy")
    def dst_fold_display(self, obj: Deployment):
        return DST_FOLD_WORDS[obj.schedule_dst_fold]

    @admin.display(description="overlap")
    def overlap_display(self, obj: Deployment):
        return OVERLAP_WORDS[obj.policy_overlap]

    @admin.display(description="failure threshold")
    def failure_threshold(self, obj: Deployment):
        if obj.policy_pause_after_failures is None:
            return "none"
        return (f"pause after {obj.policy_pause_after_failures} failed scheduled runs in a row "
                f"({obj.consecutive_failures} so far)")

    @admin.display(description="jitter")
    def jitter_seconds(self, obj: Deployment):
        from runs_app.scheduler import jitter_for

        return f"{jitter_for(obj).total_seconds():.1f} s after each nominal time"

    @admin.display(description="initial events")
    def initial_events_readable(self, obj: Deployment):
        lines = describe_initial_events(obj.initial_events)
        return format_html_join(
            "", '<div style="white-space:pre-wrap;margin-bottom:.5em">{}</div>', ((line,) for line in lines)
        ) or "—"

    @admin.display(description="resources")
    def resources_display(self, obj: Deployment):
        if not obj.resources:
            return "—"
        note = "Write-only credentials (GitHub tokens) are stored encrypted and never shown."
        return format_html('{}<div style="color:{}">{}</div>', pretty_json(obj.resources), GRAY, note)

    @admin.display(description="metadata")
    def metadata_display(self, obj: Deployment):
        return pretty_json(obj.metadata)

    @admin.display(description="budget")
    def budget_display(self, obj: Deployment):
        return pretty_json(obj.budget)

    # --- actions: the same services as the API --------------------------------------------------------

    def _apply(self, request, deployments, service, verb: str) -> None:
        done, refused = 0, 0
        for deployment in deployments:
            try:
                service(deployment=deployment)
            except ApiError as exc:
                refused += 1
                self.message_user(request, f"{deployment.name} ({deployment.pk}): {exc.message}", messages.ERROR)
                continue
            done += 1
            self.log_change(request, deployment, f"{verb} through the admin")
        if done or not refused:
            self.message_user(request, f"{verb} {done} deployment(s).", messages.SUCCESS)

    @admin.action(description="Pause selected deployments", permissions=["operate"])
    def pause(self, request, queryset):
        self._apply(request, queryset, services.deployment_pause, "Paused")

    @admin.action(description="Unpause selected deployments", permissions=["operate"])
    def unpause(self, request, queryset):
        self._apply(request, queryset, services.deployment_unpause, "Unpaused")

    @admin.action(description="Archive selected deployments (asks for confirmation)", permissions=["operate"])
    def archive(self, request, queryset):
        if request.POST.get("post") == "yes":
            self._apply(request, queryset, services.deployment_archive, "Archived")
            return None
        return self._archive_confirmation(request, list(queryset))

    @admin.action(description="Run selected deployments now", permissions=["operate"])
    def run_now(self, request, queryset):
        from runs_app.firing import run_manually

        for deployment in queryset:
            if deployment.is_archived:
                self.message_user(request, f"{deployment.name} ({deployment.pk}): {DeploymentArchived(deployment.pk).message}",
                                  messages.ERROR)
                continue
            result = run_manually(deployment=deployment)
            if result.run is None:
                self.message_user(request, f"{deployment.name} ({deployment.pk}): {result.archived_message}; the "
                                  "deployment has been archived", messages.ERROR)
                continue
            run = result.run
            self.log_change(request, deployment, f"Run now through the admin: {run.pk}")
            link = reverse("admin:runs_app_deploymentrun_change", args=[run.pk])
            if run.session_id:
                self.message_user(request, format_html('{}: run <a href="{}">{}</a> created session {}',
                                                       deployment.name, link, run.pk, run.session_id), messages.SUCCESS)
            else:
                self.message_user(request, format_html('{}: run <a href="{}">{}</a> failed: {}: {}', deployment.name,
                                                       link, run.pk, run.error_type, run.error_message or ""),
                                  messages.WARNING)

    @admin.action(description="Backfill selected deployments (asks for the time range)", permissions=["operate"])
    def backfill(self, request, queryset):
        deployments = list(queryset)
        form = BackfillForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            for deployment in deployments:
                self._backfill(request, deployment, form.cleaned_data)
            return None
        return self._backfill_page(request, deployments, form)

    def _backfill(self, request, deployment: Deployment, data: dict) -> None:
        from runs_app.scheduler import deployment_backfill

        try:
            fires = deployment_backfill(deployment=deployment, start=data["start"], end=data["end"])
        except ApiError as exc:
            self.message_user(request, f"{deployment.name} ({deployment.pk}): {exc.message}", messages.ERROR)
            return
        self.log_change(request, deployment, f"Backfill through the admin: {len(fires)} occurrence(s)")
        if fires:
            self.message_user(request, f"{deployment.name}: backfill of {len(fires)} occurrence(s) scheduled, from "
                              f"{fires[0].scheduled_at:%Y-%m-%d %H:%M} to {fires[-1].scheduled_at:%Y-%m-%d %H:%M} UTC; "
                              "their runs appear in the run history as they happen.", messages.SUCCESS)
        else:
            self.message_user(request, f"{deployment.name}: nothing to backfill — every occurrence of the range "
                              "already has a run or a fire.", messages.INFO)

    def _backfill_page(self, request, deployments, form, *, single: bool = False):
        context = {
            **self.admin_site.each_context(request),
            "title": "Backfill deployments",
            "opts": self.model._meta,
            "deployments": deployments,
            "single": single,
            "form": form,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/deployments_app/deployment/backfill_form.html", context)

    def _archive_confirmation(self, request, deployments, *, single: bool = False):
        context = {
            **self.admin_site.each_context(request),
            "title": "Archive deployments?",
            "opts": self.model._meta,
            "deployments": deployments,
            "single": single,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/deployments_app/deployment/archive_confirmation.html", context)

    # --- the same actions as buttons on a deployment's page ------------------------------------------

    OBJECT_ACTIONS = {
        "pause": (services.deployment_pause, "Paused"),
        "unpause": (services.deployment_unpause, "Unpaused"),
        "archive": (services.deployment_archive, "Archived"),
    }

    def get_urls(self):
        return [
            path("<path:object_id>/do/<str:action>/", self.admin_site.admin_view(self.object_action_view),
                 name="deployments_app_deployment_do"),
            path("<path:object_id>/policies/", self.admin_site.admin_view(self.policies_view),
                 name="deployments_app_deployment_policies"),
            path("<path:object_id>/backfill/", self.admin_site.admin_view(self.backfill_view),
                 name="deployments_app_deployment_backfill"),
            *super().get_urls(),
        ]

    def _operable(self, request, object_id: str) -> Deployment:
        from django.core.exceptions import PermissionDenied

        if not self.has_operate_permission(request):
            raise PermissionDenied
        return get_object_or_404(Deployment, pk=unquote(object_id))  # the admin's links quote "_" in ids

    def backfill_view(self, request, object_id: str):
        deployment = self._operable(request, object_id)
        form = BackfillForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            self._backfill(request, deployment, form.cleaned_data)
            return HttpResponseRedirect(reverse("admin:deployments_app_deployment_change", args=[deployment.pk]))
        return self._backfill_page(request, [deployment], form, single=True)

    def policies_view(self, request, object_id: str):
        """Edit the scheduling policies: one `deployment_update`, validated as the API validates them."""
        deployment = self._operable(request, object_id)
        back = reverse("admin:deployments_app_deployment_change", args=[deployment.pk])
        if deployment.is_archived:
            self.message_user(request, DeploymentArchived(deployment.pk).message, messages.ERROR)
            return HttpResponseRedirect(back)
        form = PolicyForm(request.POST if request.method == "POST" else None, deployment=deployment)
        if form.is_bound and form.is_valid():
            try:
                services.deployment_update(deployment=deployment, data=form.update)
            except ApiError as exc:
                form.add_error(None, exc.message)
            else:
                self.log_change(request, deployment, "Scheduling policies changed through the admin")
                self.message_user(request, "Scheduling policies saved.", messages.SUCCESS)
                return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Scheduling policies of {deployment.name}",
            "opts": self.model._meta,
            "original": deployment,
            "form": form,
        }
        return TemplateResponse(request, "admin/deployments_app/deployment/policies_form.html", context)

    def object_action_view(self, request, object_id: str, action: str):
        from django.core.exceptions import PermissionDenied

        if not self.has_operate_permission(request) or action not in (*self.OBJECT_ACTIONS, "run_now"):
            raise PermissionDenied
        deployment = get_object_or_404(Deployment, pk=object_id)
        back = reverse("admin:deployments_app_deployment_change", args=[deployment.pk])
        if request.method != "POST":
            return HttpResponseRedirect(back)
        if action == "archive" and request.POST.get("post") != "yes":
            return self._archive_confirmation(request, [deployment], single=True)
        if action == "run_now":
            self.run_now(request, Deployment.objects.filter(pk=deployment.pk))
        else:
            service, verb = self.OBJECT_ACTIONS[action]
            self._apply(request, [deployment], service, verb)
        return HttpResponseRedirect(back)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_operate"] = obj is not None and self.has_operate_permission(request)
        context["is_archived"] = obj is not None and obj.is_archived
        context["is_paused"] = obj is not None and obj.status == Deployment.Status.PAUSED
        return super().render_change_form(request, context, add, change, form_url, obj)

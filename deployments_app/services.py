"""Every change to a deployment goes through here: create, update, pause, unpause, archive.

All services are safe inside an outer transaction (they open a savepoint) and lock the rows they
change, always in the same order — agent, then deployment, then organization (as the agent archive
and the firing path do) — so concurrent API calls, fires and agent archives serialize instead of
deadlocking. Each one keeps the firing
state right in the same transaction: `next_fire_at` is the next nominal fire instant strictly after
now while the deployment should fire (has a schedule, active, not archived), else null.
"""

import random
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts_app.models import Organization, Workspace
from core.crypto import encrypt
from core.errors import InvalidRequest
from deployments_app import schedule as cron
from deployments_app.errors import DeploymentArchived, LimitExceeded, ScheduleInvalid
from deployments_app.models import Deployment
from deployments_app.selectors import scheduled_deployment_count
from deployments_app.serializers import MAX_METADATA_PAIRS, schedule_problem
from gateways import get_gateway
from webhooks_app import events as webhook_events
from webhooks_app.services import events_record

MANUAL_PAUSE = {"type": "manual"}
# Write-only fields of each resource type: stored encrypted in `resource_secrets`, never returned.
WRITE_ONLY_RESOURCE_FIELDS = {"github_repository": ("authorization_token",)}


# --- firing state ----------------------------------------------------------------------------------


def deployment_next_fire_at(*, deployment: Deployment, after: datetime) -> datetime | None:
    """The next nominal fire instant strictly after `after`, or None when the deployment should
    not fire (manual-only, paused, archived, past its window or out of runs). The scheduler
    advances with the same rule (the engine's window and DST fold options)."""
    if not deployment.should_fire or deployment.runs_remaining == 0:
        return None
    fires = cron.next_fires(deployment.schedule_expression, deployment.schedule_timezone, after, 1,
                            **deployment.schedule_options)
    return fires[0] if fires else None


def scheduled_deployment_limit(organization: Organization) -> int:
    if organization.scheduled_deployment_limit is not None:
        return organization.scheduled_deployment_limit
    return settings.ORG_SCHEDULED_DEPLOYMENT_LIMIT


def _lock_organization(organization_id: str) -> Organization:
    return Organization.objects.select_for_update(no_key=True).get(pk=organization_id)


def _check_limit(organization: Organization) -> None:
    """The caller holds the organization's row lock, so concurrent creates count one at a time."""
    limit = scheduled_deployment_limit(organization)
    count = scheduled_deployment_count(organization_id=organization.pk)
    if count >= limit:
        raise LimitExceeded(limit=limit, count=count)


# --- input checks that need the database or span fields ----------------------------------------------


def _check_schedule(schedule: dict) -> tuple[str, str]:
    problem = schedule_problem(schedule["expression"], schedule["timezone"])
    if problem:
        field, message = problem
        raise ScheduleInvalid(f"schedule.{field}: {message}")
    return schedule["expression"], schedule["timezone"]


def _schedule_columns(schedule: dict | None) -> dict:
    """The Deployment columns of a `schedule` (None: manual-only), checked: the cron fields, then
    the extensions (absent = the hosted API's behaviour)."""
    if schedule is None:
        return {"schedule_expression": None, "schedule_timezone": None, "schedule_start_at": None,
                "schedule_end_at": None, "schedule_max_runs": None, "schedule_dst_fold": Deployment.DstFold.BOTH}
    expression, tz = _check_schedule(schedule)
    start_at, end_at = schedule.get("start_at"), schedule.get("end_at")
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise InvalidRequest("schedule.end_at: must be after schedule.start_at")
    max_runs = schedule.get("max_runs")
    if max_runs is not None and (isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1):
        raise InvalidRequest("schedule.max_runs: must be an integer of at least 1, or null")
    dst_fold = schedule.get("dst_fold") or Deployment.DstFold.BOTH
    if dst_fold not in Deployment.DstFold.values:
        raise InvalidRequest(f"schedule.dst_fold: must be one of: {', '.join(Deployment.DstFold.values)}")
    return {"schedule_expression": expression, "schedule_timezone": tz, "schedule_start_at": start_at,
            "schedule_end_at": end_at, "schedule_max_runs": max_runs, "schedule_dst_fold": dst_fold}


def _policy_columns(policy: dict | None) -> dict:
    """The Deployment columns of a `policy` (None or omitted keys: the defaults)."""
    policy = policy or {}
    overlap = policy.get("overlap") or Deployment.Overlap.ALLOW
    if overlap not in Deployment.Overlap.values:
        raise InvalidRequest(f"policy.overlap: must be one of: {', '.join(Deployment.Overlap.values)}")
    threshold = policy.get("pause_after_failures")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1):
        raise InvalidRequest("policy.pause_after_failures: must be an integer of at least 1, or null")
    return {"policy_overlap": overlap, "policy_pause_after_failures": threshold}


def _check_metadata_size(metadata: dict) -> None:
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata: at most {MAX_METADATA_PAIRS} pairs are allowed (the result would have {len(metadata)})"
        )


def _split_secrets(resources: Iterable[dict]) -> tuple[list[dict], dict]:
    """(resources as returned, {"<index>": {field: Fernet token}}) — write-only fields leave the
    resource here and are only ever stored encrypted."""
    stored, secrets = [], {}
    for index, resource in enumerate(resources):
        resource = dict(resource)
        encrypted = {}
        for field in WRITE_ONLY_RESOURCE_FIELDS.get(resource.get("type"), ()):
            value = resource.pop(field, None)
            if value:
                encrypted[field] = encrypt(value)
        if encrypted:
            secrets[str(index)] = encrypted
        stored.append(resource)
    return stored, secrets


def _lock(deployment: Deployment) -> None:
    """Lock the deployment's row and reload it in place, so the caller's instance is current."""
    deployment.refresh_from_db(from_queryset=Deployment.objects.select_for_update())


def _announce(deployment: Deployment, event_type: str) -> None:
    """The webhook event of this change, written in the change's own transaction (the outbox)."""
    events_record(events=[(event_type, deployment.organization_id, deployment.workspace_id, deployment.pk)])


# --- create / update -----------------------------------------------------------------------------------


def deployment_create(
    *,
    organization: Organization,
    workspace: Workspace,
    name: str,
    agent: str | dict,
    environment_id: str,
    initial_events: list[dict],
    description: str | None = None,
    resources: list[dict] | None = None,
    vault_ids: list[str] | None = None,
    metadata: dict | None = None,
    budget: dict | None = None,
    schedule: dict | None = None,
    policy: dict | None = None,
) -> Deployment:
    """Create a deployment. `agent` is an id (pins its latest version now) or
    {"id", "version"}; `schedule` is {"expression", "timezone"} (with the optional `start_at`,
    `end_at`, `max_runs`, `dst_fold`) or None for manual-only; `policy` is {"overlap",
    "pause_after_failures"}, either optional."""
    metadata = dict(metadata or {})
    _check_metadata_size(metadata)
    schedule_columns = _schedule_columns(schedule)
    policy_columns = _policy_columns(policy)
    expression = schedule_columns["schedule_expression"]
    stored_resources, secrets = _split_secrets(resources or [])
    with transaction.atomic():
        pinned = get_gateway().resolve_references(
            organization_id=organization.pk, workspace_id=workspace.pk, agent=agent,
            environment_id=environment_id, vault_ids=vault_ids or [],
        )
        if expression is not None:
            _check_limit(_lock_organization(organization.pk))
        deployment = Deployment(
            organization=organization,
            workspace=workspace,
            name=name,
            description=description or None,
            agent_id=pinned.agent_id,
            agent_version=pinned.agent_version,
            environment_id=environment_id,
            initial_events=list(initial_events),
            resources=stored_resources,
            resource_secrets=secrets,
            vault_ids=list(vault_ids or []),
            metadata=metadata,
            budget=budget,
            **schedule_columns,
            **policy_columns,
            status=Deployment.Status.ACTIVE,
            jitter_fraction=random.random(),
        )
        deployment.next_fire_at = deployment_next_fire_at(deployment=deployment, after=timezone.now())
        deployment.save(force_insert=True)
        _announce(deployment, webhook_events.DEPLOYMENT_CREATED)
    return deployment


def deployment_update(*, deployment: Deployment, data: dict) -> Deployment:
    """Apply an update, field by field (SPEC §4): a key absent from `data` keeps the field.

    `agent` re-pins (an id string = the latest version now); `initial_events`, `resources`,
    `vault_ids` and `schedule` are full replacements (null resources/vault_ids clear them, null
    schedule makes the deployment manual-only); `metadata` is a patch where null deletes a key;
    `description` "" or null clears; `budget` null clears. A schedule change takes effect from the
    next occurrence after now. `policy` is a full replacement too (null: the defaults). Changing
    `schedule.max_runs` or `policy.pause_after_failures` starts its count again. Archived
    deployments cannot be updated.
    """
    if deployment.is_archived:
        raise DeploymentArchived(deployment.pk)
    schedule_columns = _schedule_columns(data["schedule"]) if "schedule" in data else None
    new_schedule = schedule_columns if schedule_columns and schedule_columns["schedule_expression"] else None
    policy_columns = _policy_columns(data["policy"]) if "policy" in data else None
    stored_resources = secrets = None
    if "resources" in data:
        stored_resources, secrets = _split_secrets(data["resources"] or [])

    with transaction.atomic():
        pinned = get_gateway().resolve_references(
            organization_id=deployment.organization_id, workspace_id=deployment.workspace_id,
            agent=data.get("agent"), environment_id=data.get("environment_id"), vault_ids=data.get("vault_ids") or [],
        )
        _lock(deployment)
        if deployment.is_archived:
            raise DeploymentArchived(deployment.pk)
        if new_schedule is not None and not deployment.has_schedule:
            _check_limit(_lock_organization(deployment.organization_id))

        if "name" in data:
            deployment.name = data["name"]
        if "description" in data:
            deployment.description = data["description"] or None
        if pinned.agent_id is not None:
            deployment.agent_id, deployment.agent_version = pinned.agent_id, pinned.agent_version
        if "environment_id" in data:
            deployment.environment_id = data["environment_id"]
        if "initial_events" in data:
            deployment.initial_events = list(data["initial_events"])
        if stored_resources is not None:
            deployment.resources, deployment.resource_secrets = stored_resources, secrets
        if "vault_ids" in data:
            deployment.vault_ids = list(data["vault_ids"] or [])
        if data.get("metadata"):
            metadata = dict(deployment.metadata or {})
            for key, value in data["metadata"].items():
                if value is None:
                    metadata.pop(key, None)
                else:
                    metadata[key] = value
            _check_metadata_size(metadata)
            deployment.metadata = metadata
        if "budget" in data:
            deployment.budget = data["budget"]
        if schedule_columns is not None:
            fires_by = ("schedule_expression", "schedule_timezone", "schedule_start_at", "schedule_end_at",
                        "schedule_dst_fold")
            old_schedule = tuple(getattr(deployment, name) for name in fires_by)
            if schedule_columns["schedule_max_runs"] != deployment.schedule_max_runs:
                deployment.runs_counted = 0
            for name, value in schedule_columns.items():
                setattr(deployment, name, value)
            if tuple(getattr(deployment, name) for name in fires_by) != old_schedule:
                # Never backfilled: the new schedule starts with its first occurrence after now.
                deployment.next_fire_at = deployment_next_fire_at(deployment=deployment, after=timezone.now())
        if policy_columns is not None:
            if policy_columns["policy_pause_after_failures"] != deployment.policy_pause_after_failures:
                deployment.consecutive_failures = 0
            for name, value in policy_columns.items():
                setattr(deployment, name, value)
        deployment.save()
        _announce(deployment, webhook_events.DEPLOYMENT_UPDATED)
    return deployment


# --- lifecycle -----------------------------------------------------------------------------------------


def deployment_pause(*, deployment: Deployment, reason: dict | None = None) -> Deployment:
    """Stop scheduled fires from now on. `reason` defaults to {"type": "manual"}; the firing engine
    passes {"type": "error", "error": {...}} when it auto-pauses. Pausing a paused deployment
    returns it unchanged (its reason is kept)."""
    with transaction.atomic():
        _lock(deployment)
        if deployment.is_archived:
            raise DeploymentArchived(deployment.pk)
        if deployment.status == Deployment.Status.PAUSED:
            return deployment
        deployment.status = Deployment.Status.PAUSED
        deployment.paused_reason = dict(reason) if reason is not None else dict(MANUAL_PAUSE)
        deployment.next_fire_at = None
        deployment.save(update_fields=["status", "paused_reason", "next_fire_at", "updated_at"])
        _announce(deployment, webhook_events.DEPLOYMENT_PAUSED)
    return deployment


def deployment_unpause(*, deployment: Deployment) -> Deployment:
    """Resume at the next occurrence after now; missed occurrences are not backfilled.
    Unpausing an active deployment returns it unchanged."""
    with transaction.atomic():
        _lock(deployment)
        if deployment.is_archived:
            raise DeploymentArchived(deployment.pk)
        if deployment.status == Deployment.Status.ACTIVE:
            return deployment
        deployment.status = Deployment.Status.ACTIVE
        deployment.paused_reason = None
        deployment.next_fire_at = deployment_next_fire_at(deployment=deployment, after=timezone.now())
        fields = ["status", "paused_reason", "next_fire_at", "updated_at"]
        if deployment.consecutive_failures:
            # A person resumed it: failures before the pause no longer count toward the next one.
            deployment.consecutive_failures = 0
            fields.append("consecutive_failures")
        deployment.save(update_fields=fields)
        _announce(deployment, webhook_events.DEPLOYMENT_UNPAUSED)
    return deployment


def deployment_archive(*, deployment: Deployment) -> Deployment:
    """Terminal: no more fires, no more changes. The deployment reports `active` with
    `archived_at` set; `last_run_at` is kept. Archiving twice returns it unchanged."""
    with transaction.atomic():
        _lock(deployment)
        if deployment.is_archived:
            return deployment
        deployment.archived_at = timezone.now()
        deployment.status = Deployment.Status.ACTIVE
        deployment.paused_reason = None
        deployment.next_fire_at = None
        deployment.save(update_fields=["archived_at", "status", "paused_reason", "next_fire_at", "updated_at"])
        _announce(deployment, webhook_events.DEPLOYMENT_ARCHIVED)
    return deployment


def deployments_archive_for_agent(*, agent_id: str, organization_id: str | None = None) -> int:
    """Archive every non-archived deployment of this agent (the agent is being archived, in the
    caller's transaction) — of its organization only, when given: another organization's
    deployment naming the same id runs an agent of a remote platform, not this one. Returns how
    many were archived."""
    scope = {"organization_id": organization_id} if organization_id is not None else {}
    with transaction.atomic():
        rows = list(
            Deployment.objects.select_for_update()
            .filter(agent_id=agent_id, archived_at__isnull=True, **scope)
            .order_by("pk")
            .values_list("pk", "organization_id", "workspace_id")
        )
        if not rows:
            return 0
        now = timezone.now()
        archived = Deployment.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            archived_at=now,
            status=Deployment.Status.ACTIVE,
            paused_reason=None,
            next_fire_at=None,
            updated_at=now,
        )
        events_record(events=[(webhook_events.DEPLOYMENT_ARCHIVED, organization_id, workspace_id, pk)
                              for pk, organization_id, workspace_id in rows])
        return archived

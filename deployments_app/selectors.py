"""Reads of deployments: tenant-scoped lookups and lists, the scheduled count behind the limit,
the session resources with their secrets (for the session gateway only) and schedule previews."""

from datetime import datetime
from functools import cache

from django.db import connection
from django.db.models import QuerySet

from accounts_app.selectors import RowLoader
from core.crypto import decrypt
from core.ids import looks_like
from core.serializers import iso
from deployments_app import schedule as cron
from deployments_app.errors import DeploymentNotFound
from deployments_app.models import Deployment


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


@cache
def _get_statement():
    """(SQL, loader) reading one deployment of a tenant by id. Written out rather than built by the
    ORM per call: compiling the query cost three times as much CPU as running it."""
    loader = RowLoader(Deployment, "d")
    table = connection.ops.quote_name(Deployment._meta.db_table)
    sql = (
        f"SELECT {', '.join(loader.columns)} FROM {table} d "
        'WHERE d."id" = %s AND d."organization_id" = %s AND d."workspace_id" = %s'
    )
    return sql, loader


def deployment_get(*, organization, workspace, deployment_id: str) -> Deployment:
    """The caller's deployment; another tenant's (or no) deployment is the same 404."""
    deployment = None
    # An id that cannot exist (wrong prefix, too long, a NUL the database cannot even compare) is
    # simply not found.
    if looks_like("deployment", deployment_id) and "\x00" not in deployment_id:
        sql, loader = _get_statement()
        with connection.cursor() as cursor:
            cursor.execute(sql, [deployment_id, organization.pk, workspace.pk])
            row = cursor.fetchone()
        deployment = loader.load(row) if row is not None else None
    if deployment is None:
        raise DeploymentNotFound(f"deployment {_short(deployment_id)} not found")
    return deployment


def deployment_list(
    *,
    organization,
    workspace,
    agent_id: str | None = None,
    status: str | None = None,
    include_archived: bool = False,
    created_at_gte: datetime | None = None,
    created_at_lte: datetime | None = None,
) -> QuerySet:
    """Unordered; `core.pagination.paginate` orders newest first. One query per page. The
    encrypted resource secrets are never listed, so they are not even read."""
    queryset = Deployment.objects.filter(organization=organization, workspace=workspace).defer("resource_secrets")
    if not include_archived:
        queryset = queryset.filter(archived_at__isnull=True)
    if agent_id is not None:
        queryset = queryset.filter(agent_id=agent_id)
    if status is not None:
        queryset = queryset.filter(status=status)
    if created_at_gte is not None:
        queryset = queryset.filter(created_at__gte=created_at_gte)
    if created_at_lte is not None:
        queryset = queryset.filter(created_at__lte=created_at_lte)
    return queryset


def scheduled_deployment_count(*, organization_id: str) -> int:
    """Non-archived deployments with a schedule, across all the organization's workspaces."""
    return Deployment.objects.filter(
        organization_id=organization_id, archived_at__isnull=True, schedule_expression__isnull=False
    ).count()


def deployment_session_resources(*, deployment: Deployment) -> list[dict]:
    """The deployment's resources with their write-only secrets decrypted, for session creation.
    Never return this to a client or log it."""
    secrets = deployment.resource_secrets or {}
    resources = []
    for index, resource in enumerate(deployment.resources or []):
        resource = dict(resource)
        for field, token in (secrets.get(str(index)) or {}).items():
            resource[field] = decrypt(token)
        resources.append(resource)
    return resources


def schedule_preview(
    *, expression: str, timezone: str, now: datetime, count: int = 5, dst_fold: str = "both",
    start_at: datetime | None = None, end_at: datetime | None = None, max_runs: int | None = None,
) -> dict:
    """What a schedule would do from `now`: its description, next fires and DST effects — under
    the DST fold policy, inside the window and within the run limit when they are given (each DST
    note then also says which of its instants fire)."""
    given = {"dst_fold": dst_fold if dst_fold != "both" else None, "start_at": start_at, "end_at": end_at}
    options = {name: value for name, value in given.items() if value is not None}
    upcoming = cron.next_fires(expression, timezone, now, count if max_runs is None else min(count, max_runs), **options)
    return {
        "valid": True,
        "expression": expression,
        "timezone": timezone,
        "description": cron.describe(expression),
        "upcoming_runs_at": [iso(at) for at in upcoming],
        "dst_notes": [note.as_dict() for note in cron.dst_notes(expression, timezone, now, **options)],
    }

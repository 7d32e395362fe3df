"""Deployments API: parse with an input serializer, call one service or selector, render."""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from core.pagination import page_response, paginate
from deployments_app import selectors, services
from deployments_app.serializers import (
    DeploymentCreateInput,
    DeploymentUpdateInput,
    SchedulePreviewInput,
    deployment_to_dict,
    parse_list_query,
)

TAGS = ["Deployments"]


def _deployment(request, deployment_id: str):
    return selectors.deployment_get(
        organization=request.user.organization, workspace=request.user.workspace, deployment_id=deployment_id
    )


class DeploymentListCreateView(APIView):
    @extend_schema(
        tags=TAGS,
        operation_id="deployments_list",
        summary="List deployments",
        parameters=[
            OpenApiParameter("agent_id", str, description="Only deployments of this agent."),
            OpenApiParameter("status", str, enum=["active", "paused"], description="Only this status."),
            OpenApiParameter(
                "include_archived", bool, description="Include archived deployments (cannot be combined with status)."
            ),
            OpenApiParameter("created_at[gte]", OpenApiTypes.DATETIME, description="Created at or after (RFC 3339)."),
            OpenApiParameter("created_at[lte]", OpenApiTypes.DATETIME, description="Created at or before (RFC 3339)."),
            OpenApiParameter("limit", int, description="Page size, 1 to 100 (default 20)."),
            OpenApiParameter("page", str, description="Opaque cursor from a previous page's next_page."),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        """Deployments of the caller's workspace, newest first. Archived ones only with include_archived=true."""
        params = parse_list_query(request.query_params)
        limit, page = params.pop("limit"), params.pop("page")
        queryset = selectors.deployment_list(
            organization=request.user.organization, workspace=request.user.workspace, **params
        )
        rows, next_page = paginate(queryset, kind="deployment", page=page, limit=limit)
        now = timezone.now()
        return Response(page_response([deployment_to_dict(row, now=now) for row in rows], next_page))

    @extend_schema(
        tags=TAGS, operation_id="deployments_create", summary="Create a deployment",
        request=DeploymentCreateInput, responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        """Create a deployment: an agent (pinned to a version) bound to an environment, vaults,
        resources, initial events and an optional cron schedule."""
        serializer = DeploymentCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        deployment = services.deployment_create(
            organization=request.user.organization, workspace=request.user.workspace, **serializer.validated_data
        )
        return Response(deployment_to_dict(deployment))


class DeploymentDetailView(APIView):
    @extend_schema(tags=TAGS, operation_id="deployments_retrieve", summary="Get a deployment",
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request, deployment_id):
        return Response(deployment_to_dict(_deployment(request, deployment_id)))

    @extend_schema(
        tags=TAGS, operation_id="deployments_update", summary="Update a deployment",
        request=DeploymentUpdateInput, responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request, deployment_id):
        """Update field by field: omitted fields are kept; see each field for how null clears it."""
        deployment = _deployment(request, deployment_id)
        serializer = DeploymentUpdateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        deployment = services.deployment_update(deployment=deployment, data=serializer.validated_data)
        return Response(deployment_to_dict(deployment))


class DeploymentPauseView(APIView):
    @extend_schema(tags=TAGS, operation_id="deployments_pause", summary="Pause a deployment", request=None,
                   responses={200: OpenApiTypes.OBJECT})
    def post(self, request, deployment_id):
        """Stop scheduled fires from now on (manual runs still work). Pausing twice is a no-op."""
        deployment = services.deployment_pause(deployment=_deployment(request, deployment_id))
        return Response(deployment_to_dict(deployment))


class DeploymentUnpauseView(APIView):
    @extend_schema(tags=TAGS, operation_id="deployments_unpause", summary="Unpause a deployment", request=None,
                   responses={200: OpenApiTypes.OBJECT})
    def post(self, request, deployment_id):
        """Resume at the next occurrence after now; missed occurrences are not backfilled."""
        deployment = services.deployment_unpause(deployment=_deployment(request, deployment_id))
        return Response(deployment_to_dict(deployment))


class DeploymentArchiveView(APIView):
    @extend_schema(tags=TAGS, operation_id="deployments_archive", summary="Archive a deployment", request=None,
                   responses={200: OpenApiTypes.OBJECT})
    def post(self, request, deployment_id):
        """Archive for good: no more fires, no more changes. Archiving twice returns it unchanged."""
        deployment = services.deployment_archive(deployment=_deployment(request, deployment_id))
        return Response(deployment_to_dict(deployment))


class SchedulePreviewView(APIView):
    @extend_schema(
        tags=TAGS, operation_id="deployments_schedule_preview", summary="Preview a cron schedule",
        request=SchedulePreviewInput, responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        """Check a schedule before using it, with the same rules as a deployment's `schedule`.

        Body: `{"expression": "0 20 * * 5", "timezone": "America/New_York", "count": 5}`
        (`count`, 1 to 20, defaults to 5).

        Response: `{"valid": true, "expression", "timezone", "description": "At 08:00 PM, only on
        Friday", "upcoming_runs_at": [RFC 3339 UTC instants], "dst_notes": [...]}`. Each DST note is
        `{"date", "local_time", "kind": "skipped" | "repeated", "instants": [...]}`: within the next
        year, a matching local time that a daylight-saving change skips (no fire that day) or
        repeats (two fires, one per UTC instant).

        The schedule extensions of a deployment may be previewed too: `dst_fold` (`both`, `first`,
        `last`), `start_at` / `end_at` (RFC 3339, the active window) and `max_runs`; with a
        `dst_fold` or a window, each DST note also carries `fires`, the instants that fire.

        An invalid schedule is a 400 `invalid_request_error` whose message names the field:
        `expression: <why>` or `timezone: <why>`.
        """
        serializer = SchedulePreviewInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        preview = selectors.schedule_preview(now=timezone.now(), **serializer.validated_data)
        return Response(preview)

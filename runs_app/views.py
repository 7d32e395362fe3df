from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidRequest, NotFound
from core.pagination import page_response, paginate, parse_limit
from core.params import parse_bool, parse_choice, parse_created_filters, parse_id
from deployments_app.selectors import deployment_get
from runs_app import selectors
from runs_app.firing import run_manually
from runs_app.scheduler import deployment_backfill
from runs_app.serializers import BackfillInput, backfill_to_dict, run_to_dict

TRIGGER_TYPES = ("schedule", "manual")


class DeploymentRunListView(APIView):
    @extend_schema(
        operation_id="deployment_runs_list",
        summary="List deployment runs, newest first",
        parameters=[
            OpenApiParameter("deployment_id", str),
            OpenApiParameter("has_error", bool),
            OpenApiParameter("trigger_type", str, enum=list(TRIGGER_TYPES)),
            *[OpenApiParameter(f"created_at[{op}]", str) for op in ("gt", "gte", "lt", "lte")],
            OpenApiParameter("limit", int),
            OpenApiParameter("page", str),
        ],
    )
    def get(self, request):
        query = request.query_params
        principal = request.user
        queryset = selectors.run_list(
            organization=principal.organization,
            workspace=principal.workspace,
            deployment_id=parse_id("deployment_id", query.get("deployment_id")),
            has_error=parse_bool("has_error", query.get("has_error")),
            trigger_type=parse_choice("trigger_type", query.get("trigger_type"), TRIGGER_TYPES),
            created=parse_created_filters(query),
        )
        rows, next_page = paginate(
            queryset, kind="deployment_run", page=query.get("page"), limit=parse_limit(query.get("limit"))
        )
        return Response(page_response([run_to_dict(run) for run in rows], next_page))


class DeploymentRunDetailView(APIView):
    @extend_schema(operation_id="deployment_runs_retrieve", summary="Retrieve a deployment run")
    def get(self, request, run_id):
        run = selectors.run_get(organization=request.user.organization, workspace=request.user.workspace, run_id=run_id)
        if run is None:
            raise NotFound(f"deployment run {run_id[:64]} not found")
        return Response(run_to_dict(run))


class DeploymentRunNowView(APIView):
    @extend_schema(
        operation_id="deployments_run",
        summary="Run a deployment now",
        description="Creates a session now and returns the deployment run (trigger_context manual), also while "
        "paused. A failed session creation still returns the recorded run with its error.",
    )
    def post(self, request, deployment_id):
        deployment = deployment_get(
            organization=request.user.organization, workspace=request.user.workspace, deployment_id=deployment_id
        )
        result = run_manually(deployment=deployment)
        if result.run is None:
            raise InvalidRequest(f"{result.archived_message}; deployment {deployment.id} has been archived")
        return Response(run_to_dict(result.run))




class DeploymentBackfillView(APIView):
    @extend_schema(
        operation_id="deployments_backfill",
        summary="Backfill a deployment's past occurrences",
        description="Runs the deployment's occurrences with start <= t < end now, each once (an occurrence that "
        "already has a run is not run again), spread by its jitter; also while paused. Answers the runs it "
        "scheduled, earliest first: a run still to happen has neither session_id nor error yet.",
    )
    def post(self, request, deployment_id):
        deployment = deployment_get(
            organization=request.user.organization, workspace=request.user.workspace, deployment_id=deployment_id
        )
        serializer = BackfillInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        fires = deployment_backfill(deployment=deployment, **serializer.validated_data)
        runs = selectors.runs_by_id(run_ids=[fire.run_id for fire in fires])
        return Response(backfill_to_dict(fires, runs, deployment))

from datetime import datetime

from runs_app.models import DeploymentRun


def run_list(
    *, organization, workspace, deployment_id: str | None = None, has_error: bool | None = None,
    trigger_type: str | None = None, created: dict[str, datetime] | None = None,
):
    queryset = DeploymentRun.objects.filter(organization=organization, workspace=workspace)
    if deployment_id is not None:
        queryset = queryset.filter(deployment_id=deployment_id)
    if has_error is not None:
        queryset = queryset.filter(session_id__isnull=has_error)
    if trigger_type is not None:
        queryset = queryset.filter(trigger_type=trigger_type)
    for op, value in (created or {}).items():
        queryset = queryset.filter(**{f"created_at__{op}": value})
    return queryset


def run_get(*, organization, workspace, run_id: str) -> DeploymentRun | None:
    return DeploymentRun.objects.filter(organization=organization, workspace=workspace, pk=run_id).first()


def runs_by_id(*, run_ids: list[str]) -> dict[str, DeploymentRun]:
    """The runs among `run_ids` that are recorded (a fire's run appears once it has its outcome)."""
    return DeploymentRun.objects.in_bulk([run_id for run_id in run_ids if run_id])

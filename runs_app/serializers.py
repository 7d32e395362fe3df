from core.serializers import iso
from runs_app.models import DeploymentRun


def run_to_dict(run: DeploymentRun) -> dict:
    if run.trigger_type == DeploymentRun.TriggerType.SCHEDULE:
        trigger_context = {"type": "schedule", "scheduled_at": iso(run.scheduled_at)}
    else:
        trigger_context = {"type": "manual"}
    return {
        "type": "deployment_run",
        "id": run.id,
        "deployment_id": run.deployment_id,
        "agent": {"type": "agent", "id": run.agent_id, "version": run.agent_version},
        "trigger_context": trigger_context,
        "session_id": run.session_id,
        "error": None if run.session_id else {"type": run.error_type, "message": run.error_message or ""},
        "created_at": iso(run.created_at),
    }

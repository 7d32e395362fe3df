from core.serializers import iso
from deployments_app.serializers import Rfc3339Field, StrictSerializer
from runs_app.models import DeploymentRun, Fire


class BackfillInput(StrictSerializer):
    """Body of `POST /v1/deployments/{id}/backfill`: the occurrences with start <= t < end."""

    start = Rfc3339Field()
    end = Rfc3339Field()


def run_to_dict(run: DeploymentRun) -> dict:
    if run.trigger_type == DeploymentRun.TriggerType.SCHEDULE:
        trigger_context = {"type": "schedule", "scheduled_at": iso(run.scheduled_at)}
        if run.backfill:
            trigger_context["backfill"] = True  # an extra key the SDK's model keeps as an attribute
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


def backfill_to_dict(fires: list[Fire], runs: dict[str, DeploymentRun], deployment) -> dict:
    """The answer of `POST /v1/deployments/{id}/backfill`: one deployment run per occurrence it
    scheduled, earliest first — the recorded run once its fire has run, before that the run to
    come (its id, the deployment's agent, no `session_id` and no `error` yet; it can be retrieved
    by id once it has its outcome)."""
    data = []
    for fire in fires:
        run = runs.get(fire.run_id)
        if run is not None:
            data.append(run_to_dict(run))
            continue
        data.append({
            "type": "deployment_run",
            "id": fire.run_id,
            "deployment_id": fire.deployment_id,
            "agent": {"type": "agent", "id": deployment.agent_id, "version": deployment.agent_version},
            "trigger_context": {"type": "schedule", "scheduled_at": iso(fire.scheduled_at), "backfill": True},
            "session_id": None,
            "error": None,
            "created_at": iso(fire.updated_at),
        })
    return {"data": data, "next_page": None}

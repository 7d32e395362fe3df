"""Execute one fire, or one manual run, and apply the outcome policy (SPEC §7) — the only place
that policy lives.

| outcome at fire time                         | run recorded                      | deployment afterwards        |
|----------------------------------------------|-----------------------------------|------------------------------|
| session created                              | session_id                        | last_run_at (scheduled)      |
| rate-limited (429)                           | session_rate_limited_error        | unchanged, no retry          |
| own agent archived or deleted                | none                              | archived                     |
| resource errors (PAUSING_ERRORS)             | that error                        | paused (scheduled fires only)|
| other refusal (4xx)                          | session_creation_rejected_error   | unchanged                    |
| platform unavailable after quick retries     | service_unavailable_error         | unchanged                    |
| anything unexpected                          | unknown_error                     | unchanged                    |
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import CharField, DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import ids, metrics
from core.logging import log_context
from deployments_app.models import Deployment
from runs_app.gateways import GatewayUnavailable, SessionGateway, SessionOutcome, SessionRequest, get_gateway
from runs_app.models import DeploymentRun, Fire

logger = logging.getLogger("runs.firing")

# Errors that will recur on every fire until a person fixes something: they pause the deployment.
PAUSING_ERRORS = frozenset(
    {
        "agent_archived_error",
        "environment_archived_error",
        "environment_not_found_error",
        "vault_not_found_error",
        "vault_archived_error",
        "file_not_found_error",
        "memory_store_archived_error",
        "skill_not_found_error",
        "session_resource_not_found_error",
        "workspace_archived_error",
        "organization_disabled_error",
        "self_hosted_resources_unsupported_error",
        "mcp_egress_blocked_error",
    }
)


@dataclass(frozen=True)
class FireResult:
    status: str  # "done", "skipped", "not_claimed", "archived"
    run_id: str | None = None


# --- the gateway call --------------------------------------------------------------------------


def _session_request(deployment: Deployment, *, idempotency_key: str, run_id: str, title: str) -> SessionRequest:
    from deployments_app.selectors import deployment_session_resources

    return SessionRequest(
        organization_id=deployment.organization_id,
        workspace_id=deployment.workspace_id,
        agent_id=deployment.agent_id,
        agent_version=deployment.agent_version,
        environment_id=deployment.environment_id,
        initial_events=deployment.initial_events,
        resources=deployment_session_resources(deployment=deployment),
        vault_ids=list(deployment.vault_ids or []),
        metadata=dict(deployment.metadata or {}),
        budget=deployment.budget,
        title=title,
        idempotency_key=idempotency_key,
        deployment_run_id=run_id,
    )


def call_gateway(gateway: SessionGateway, request: SessionRequest) -> SessionOutcome:
    """Ask for a session. 5xx/connection failures are retried a few times within seconds with the
    same idempotency key; a 429 is never retried; anything unexpected becomes `unknown_error`."""
    gateway_name = type(gateway).__name__
    attempts = max(1, settings.GATEWAY_RETRY_ATTEMPTS)
    last_error = ""
    for attempt in range(attempts):
        try:
            outcome = gateway.create_session(request)
        except GatewayUnavailable as exc:
            last_error = str(exc)
            metrics.GATEWAY_CALLS.labels(gateway_name, "unavailable").inc()
            logger.warning("session platform unavailable (attempt %d of %d): %s", attempt + 1, attempts, last_error)
            if attempt + 1 < attempts:
                time.sleep(settings.GATEWAY_RETRY_BACKOFF_SECONDS * (2**attempt))
            continue
        except Exception:
            metrics.GATEWAY_CALLS.labels(gateway_name, "exception").inc()
            logger.exception("unexpected error while creating a session")
            return SessionOutcome.failure("unknown_error", "an unexpected error occurred while creating the session")
        metrics.GATEWAY_CALLS.labels(gateway_name, "session" if outcome.session_id else "refused").inc()
        return outcome
    return SessionOutcome.failure(
        "service_unavailable_error", f"the session platform was unavailable after {attempts} attempts: {last_error}"
    )


# --- recording ---------------------------------------------------------------------------------


def _record_run(
    *, deployment: Deployment, outcome: SessionOutcome, run_id: str, trigger_type: str,
    scheduled_at: datetime | None, fire: Fire | None, started_at: datetime,
) -> DeploymentRun | None:
    """Insert the run; None if this fire already has one (another worker won the race)."""
    run = DeploymentRun(
        id=run_id,
        organization_id=deployment.organization_id,
        workspace_id=deployment.workspace_id,
        deployment=deployment,
        fire=fire,
        agent_id=deployment.agent_id,
        agent_version=deployment.agent_version,
        trigger_type=trigger_type,
        scheduled_at=scheduled_at,
        session_id=outcome.session_id,
        error_type=None if outcome.session_id else outcome.error_type,
        error_message=None if outcome.session_id else outcome.error_message,
        started_at=started_at,
    )
    try:
        with transaction.atomic():
            run.save(force_insert=True)
    except IntegrityError:
        if fire is not None and DeploymentRun.objects.filter(fire=fire).exists():
            return None
        raise
    outcome_label = "success" if outcome.session_id else "error"
    metrics.RUNS.labels(trigger_type, outcome_label, outcome.error_type or "").inc()
    return run


def _apply_policy(*, deployment: Deployment, outcome: SessionOutcome, scheduled: bool) -> None:
    """Auto-pause on errors that recur until someone fixes them — scheduled fires only."""
    from deployments_app.services import deployment_pause

    if not scheduled or outcome.session_id or outcome.error_type not in PAUSING_ERRORS:
        return
    if deployment.archived_at is not None or deployment.status == Deployment.Status.PAUSED:
        return
    deployment_pause(
        deployment=deployment,
        reason={"type": "error", "error": {"type": outcome.error_type, "message": outcome.error_message}},
    )
    metrics.DEPLOYMENTS_AUTO_PAUSED.labels(outcome.error_type).inc()
    logger.warning("deployment paused: %s", outcome.error_message, extra={"error_type": outcome.error_type})


def _archive_for_lost_agent(*, deployment: Deployment, outcome: SessionOutcome) -> None:
    from deployments_app.services import deployment_archive

    if deployment.archived_at is None:
        deployment_archive(deployment=deployment)
        metrics.DEPLOYMENTS_AUTO_ARCHIVED.inc()
    logger.warning("deployment archived: %s", outcome.error_message)


# --- scheduled fires ---------------------------------------------------------------------------


def _claim(fire_id: str, now: datetime) -> bool:
    lease = now + timedelta(seconds=settings.FIRE_LEASE_SECONDS)
    claimable = Q(status=Fire.Status.PENDING) | Q(status=Fire.Status.CLAIMED, lease_expires_at__lt=now)
    # One statement: the first claim also fixes the start time and the run id (COALESCE keeps
    # them on a re-claim), so every retry agrees on them.
    updated = Fire.objects.filter(claimable, pk=fire_id).update(
        status=Fire.Status.CLAIMED, lease_expires_at=lease, attempts=F("attempts") + 1, updated_at=now,
        started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
        run_id=Coalesce(F("run_id"), Value(ids.new_id("deployment_run"), output_field=CharField())),
    )
    return bool(updated)


def _skip_reason(deployment: Deployment) -> str | None:
    if deployment.archived_at is not None:
        return "archived"
    if deployment.status == Deployment.Status.PAUSED:
        return "paused"
    if not deployment.has_schedule:
        return "schedule_removed"
    return None


def _finish_skipped(fire: Fire, reason: str) -> FireResult:
    Fire.objects.filter(pk=fire.pk, status=Fire.Status.CLAIMED).update(
        status=Fire.Status.SKIPPED, skip_reason=reason, lease_expires_at=None, updated_at=timezone.now()
    )
    metrics.FIRES_SKIPPED.labels(reason).inc()
    logger.info("fire skipped: deployment is %s", reason.replace("_", " "))
    return FireResult("skipped")


def execute_fire(fire_id: str, *, gateway: SessionGateway | None = None) -> FireResult:
    """Run one scheduled fire, exactly once.

    1. Claim it with a conditional update (pending, or claimed with an expired lease); if zero rows
       changed, another worker has it or it is finished: return.
    2. Re-read the deployment: paused, archived or made manual-only since → skip, no session, no run.
    3. Ask the gateway for a session, with the fire's id as idempotency key — so a retry after a
       crash gets the same session, never a second one.
    4. In one transaction: the run row (unique per fire), the fire marked done, `last_run_at`, and
       the outcome policy. With the local gateway, step 3 happens inside that transaction too.
    """
    gateway = gateway or get_gateway()
    now = timezone.now()
    with log_context(fire_id=fire_id):
        if not _claim(fire_id, now):
            logger.info("fire not claimed (finished, or held by another worker)")
            return FireResult("not_claimed")
        # A transactional gateway re-reads the deployment under its lock: no need to join it here.
        fires = Fire.objects if gateway.transactional else Fire.objects.select_related("deployment")
        fire = fires.get(pk=fire_id)
        with log_context(deployment_id=fire.deployment_id, run_id=fire.run_id):
            logger.info("fire claimed (attempt %d)", fire.attempts, extra={"scheduled_at": fire.scheduled_at.isoformat()})
            if gateway.transactional:
                with transaction.atomic():
                    deployment = Deployment.objects.select_for_update().get(pk=fire.deployment_id)
                    reason = _skip_reason(deployment)
                    if reason:
                        return _finish_skipped(fire, reason)
                    outcome = call_gateway(gateway, _fire_request(deployment, fire))
                    return _finish_fire(fire=fire, deployment=deployment, outcome=outcome)
            reason = _skip_reason(fire.deployment)
            if reason:
                return _finish_skipped(fire, reason)
            outcome = call_gateway(gateway, _fire_request(fire.deployment, fire))
            with transaction.atomic():
                deployment = Deployment.objects.select_for_update().get(pk=fire.deployment_id)
                return _finish_fire(fire=fire, deployment=deployment, outcome=outcome)


def _fire_request(deployment: Deployment, fire: Fire) -> SessionRequest:
    title = f"{deployment.name} — {fire.scheduled_at:%Y-%m-%d %H:%M} UTC"
    return _session_request(deployment, idempotency_key=fire.id, run_id=fire.run_id, title=title)


def _finish_fire(*, fire: Fire, deployment: Deployment, outcome: SessionOutcome) -> FireResult:
    locked = Fire.objects.select_for_update().get(pk=fire.pk)
    if locked.status in (Fire.Status.DONE, Fire.Status.SKIPPED):
        logger.info("fire already finished by another worker")
        return FireResult("not_claimed")
    now = timezone.now()
    if outcome.archive_deployment:
        _archive_for_lost_agent(deployment=deployment, outcome=outcome)
        Fire.objects.filter(pk=fire.pk).update(
            status=Fire.Status.SKIPPED, skip_reason="agent_gone", lease_expires_at=None, updated_at=now
        )
        return FireResult("archived")
    run = _record_run(
        deployment=deployment, outcome=outcome, run_id=locked.run_id, trigger_type=DeploymentRun.TriggerType.SCHEDULE,
        scheduled_at=fire.scheduled_at, fire=locked, started_at=locked.started_at,
    )
    Fire.objects.filter(pk=fire.pk).update(status=Fire.Status.DONE, lease_expires_at=None, updated_at=now)
    if run is None:
        return FireResult("not_claimed")
    if deployment.last_run_at is None or deployment.last_run_at < run.started_at:
        Deployment.objects.filter(pk=deployment.pk).update(last_run_at=run.started_at)
        deployment.last_run_at = run.started_at
    _apply_policy(deployment=deployment, outcome=outcome, scheduled=True)
    metrics.FIRE_LATENESS.observe(max(0.0, (locked.started_at - locked.due_at).total_seconds()))
    logger.info(
        "run recorded: %s", run.session_id or run.error_type,
        extra={"run_id": run.id, "session_id": run.session_id, "error_type": run.error_type},
    )
    return FireResult("done", run.id)


# --- manual runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManualRunResult:
    run: DeploymentRun | None
    archived_message: str | None = None


def run_manually(*, deployment: Deployment, gateway: SessionGateway | None = None) -> ManualRunResult:
    """`POST /v1/deployments/{id}/run`: a session now, also while paused. Never changes
    `last_run_at`, never pauses. If the deployment's own agent is gone, the deployment is archived
    and no run is recorded."""
    gateway = gateway or get_gateway()
    run_id = ids.new_id("deployment_run")
    started_at = timezone.now()
    with log_context(deployment_id=deployment.id, run_id=run_id):
        request = _session_request(
            deployment, idempotency_key=run_id, run_id=run_id, title=f"{deployment.name} — manual run"
        )
        if gateway.transactional:
            with transaction.atomic():
                locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
                outcome = call_gateway(gateway, request)
                return _finish_manual(deployment=locked, outcome=outcome, run_id=run_id, started_at=started_at)
        outcome = call_gateway(gateway, request)
        with transaction.atomic():
            locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
            return _finish_manual(deployment=locked, outcome=outcome, run_id=run_id, started_at=started_at)


def _finish_manual(*, deployment, outcome, run_id, started_at) -> ManualRunResult:
    if outcome.archive_deployment:
        _archive_for_lost_agent(deployment=deployment, outcome=outcome)
        return ManualRunResult(None, archived_message=outcome.error_message)
    run = _record_run(
        deployment=deployment, outcome=outcome, run_id=run_id, trigger_type=DeploymentRun.TriggerType.MANUAL,
        scheduled_at=None, fire=None, started_at=started_at,
    )
    logger.info("manual run recorded: %s", run.session_id or run.error_type)
    return ManualRunResult(run)

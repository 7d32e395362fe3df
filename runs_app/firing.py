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
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import CharField, DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import ids, metrics
from core.logging import log_context
from deployments_app import schedule
from deployments_app.models import Deployment
from gateways import GatewayUnavailable, SessionGateway, SessionOutcome, SessionRequest, get_gateway
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


def _skip_reason(deployment: Deployment, scheduled_at: datetime, memo: dict | None = None) -> str | None:
    if deployment.archived_at is not None:
        return "archived"
    if deployment.status == Deployment.Status.PAUSED:
        return "paused"
    if not deployment.has_schedule:
        return "schedule_removed"
    if not _still_scheduled(deployment, scheduled_at, {} if memo is None else memo):
        return "schedule_changed"
    return None


def _still_scheduled(deployment: Deployment, scheduled_at: datetime, memo: dict) -> bool:
    """Is `scheduled_at` still an occurrence of the deployment's schedule? A fire is written ahead of
    its time (the scheduler's lookahead, a backlog): a schedule changed since must not fire the old
    occurrence. Memoized per batch: a burst shares a few (expression, zone, instant) triples."""
    key = (deployment.schedule_expression, deployment.schedule_timezone, scheduled_at)
    if key not in memo:
        following = schedule.next_fires(key[0], key[1], scheduled_at - timedelta(seconds=1), n=1)
        memo[key] = bool(following) and following[0] == scheduled_at
    return memo[key]


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
    with log_context(fire_id=fire_id):
        if not _claim(fire_id, timezone.now()):
            logger.info("fire not claimed (finished, or held by another worker)")
            return FireResult("not_claimed")
        return _execute_claimed(fire_id, gateway)


def _execute_claimed(fire_id: str, gateway: SessionGateway, *, announce: bool = True) -> FireResult:
    """Steps 2–4 for a fire this worker holds."""
    with log_context(fire_id=fire_id):
        # A transactional gateway re-reads the deployment under its lock: no need to join it here.
        fires = Fire.objects if gateway.transactional else Fire.objects.select_related("deployment")
        fire = fires.get(pk=fire_id)
        with log_context(deployment_id=fire.deployment_id, run_id=fire.run_id):
            if announce:
                logger.info("fire claimed (attempt %d)", fire.attempts, extra={"scheduled_at": fire.scheduled_at.isoformat()})
            if gateway.transactional:
                with transaction.atomic():
                    deployment = Deployment.objects.select_for_update().get(pk=fire.deployment_id)
                    reason = _skip_reason(deployment, fire.scheduled_at)
                    if reason:
                        return _finish_skipped(fire, reason)
                    outcome = call_gateway(gateway, _fire_request(deployment, fire))
                    return _finish_fire(fire=fire, deployment=deployment, outcome=outcome)
            reason = _skip_reason(fire.deployment, fire.scheduled_at)
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


# --- batches of scheduled fires ----------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedFire:
    id: str
    deployment_id: str
    scheduled_at: datetime
    due_at: datetime
    run_id: str
    started_at: datetime
    attempts: int

    def log_ids(self) -> dict:
        return {"fire_id": self.id, "deployment_id": self.deployment_id, "run_id": self.run_id}


_CLAIMED_COLUMNS = ("id", "deployment_id", "scheduled_at", "due_at", "run_id", "started_at", "attempts")


def claim_fires(fire_ids: list[str], now: datetime) -> list[ClaimedFire]:
    """Step 1 for many fires: the conditional claim of `_claim`, in one statement on PostgreSQL
    (one per fire elsewhere). Returns the fires this worker now holds, earliest due first."""
    if not fire_ids:
        return []
    if connection.vendor != "postgresql":
        held = [fire_id for fire_id in fire_ids if _claim(fire_id, now)]
        rows = Fire.objects.filter(pk__in=held).values_list(*_CLAIMED_COLUMNS)
    else:
        table = Fire._meta.db_table
        returning = ", ".join(f'f."{column}"' for column in _CLAIMED_COLUMNS)
        with connection.cursor() as cursor:
            cursor.execute(
                f'UPDATE "{table}" AS f SET "status" = %s, "lease_expires_at" = %s, "attempts" = f."attempts" + 1, '
                f'"updated_at" = %s, "started_at" = COALESCE(f."started_at", %s), "run_id" = COALESCE(f."run_id", v.run_id) '
                f"FROM unnest(%s::varchar[], %s::varchar[]) AS v(id, run_id) "
                f'WHERE f."id" = v.id AND (f."status" = %s OR (f."status" = %s AND f."lease_expires_at" < %s)) '
                f"RETURNING {returning}",
                [
                    Fire.Status.CLAIMED.value, now + timedelta(seconds=settings.FIRE_LEASE_SECONDS), now, now,
                    list(fire_ids), [ids.new_id("deployment_run") for _ in fire_ids],
                    Fire.Status.PENDING.value, Fire.Status.CLAIMED.value, now,
                ],
            )
            rows = cursor.fetchall()
    return sorted((ClaimedFire(*row) for row in rows), key=lambda fire: (fire.due_at, fire.id))


def execute_fires(fire_ids: list[str], *, gateway: SessionGateway | None = None) -> dict[str, FireResult]:
    """Run a batch of scheduled fires, each exactly once: what execute_fire does for one, with the
    work shared when the gateway is transactional (the built-in platform): one statement claims
    them all, one transaction locks their deployments and fires, creates every session, run and
    fire state that needs no decision, and sets `last_run_at`. Whatever needs a decision (a
    platform error and its policy, a race with another worker) is finished one fire at a time by
    execute_fire's own code. Other gateways get the fires one at a time."""
    gateway = gateway or get_gateway()
    fire_ids = list(dict.fromkeys(fire_ids))
    if not gateway.transactional:
        # Sessions over the network, one call each: claim each fire only when its turn comes, so a
        # slow platform never lets the leases of the batch's later fires run out while they wait.
        return {fire_id: execute_fire(fire_id, gateway=gateway) for fire_id in fire_ids}
    results = {fire_id: FireResult("not_claimed") for fire_id in fire_ids}
    claimed = claim_fires(fire_ids, timezone.now())
    if len(claimed) < len(fire_ids):
        logger.info("%d of %d fires not claimed (finished, or held by another worker)",
                    len(fire_ids) - len(claimed), len(fire_ids))
    for fire in claimed:
        logger.info("fire claimed (attempt %d)", fire.attempts,
                    extra={**fire.log_ids(), "scheduled_at": fire.scheduled_at.isoformat()})
    one_by_one = _execute_batch(claimed, gateway, results) if claimed else []
    for fire in one_by_one:
        results[fire.id] = _execute_claimed(fire.id, gateway, announce=False)
    return results


@dataclass
class _BatchOutcome:
    done: list = field(default_factory=list)  # [(ClaimedFire, session_id)]
    skipped: list = field(default_factory=list)  # [(ClaimedFire, reason)]
    one_by_one: list = field(default_factory=list)  # [ClaimedFire]


def _execute_batch(claimed: list[ClaimedFire], gateway: SessionGateway, results: dict) -> list[ClaimedFire]:
    """The batch's common case in one transaction; returns the fires left to finish one by one."""
    try:
        with transaction.atomic():
            outcome = _execute_batch_locked(claimed, gateway)
    except (DatabaseError, GatewayUnavailable) as exc:
        # Nothing of the batch was written (a constraint, a deadlock victim, the platform's tables
        # unavailable): each fire still held goes the one-fire way.
        logger.warning("fire batch rolled back (%s); finishing its fires one at a time", type(exc).__name__)
        return claimed
    for fire, reason in outcome.skipped:
        results[fire.id] = FireResult("skipped")
        metrics.FIRES_SKIPPED.labels(reason).inc()
        logger.info("fire skipped: deployment is %s", reason.replace("_", " "), extra=fire.log_ids())
    if outcome.done:
        metrics.RUNS.labels(DeploymentRun.TriggerType.SCHEDULE, "success", "").inc(len(outcome.done))
    for fire, session_id in outcome.done:
        results[fire.id] = FireResult("done", fire.run_id)
        metrics.FIRE_LATENESS.observe(max(0.0, (fire.started_at - fire.due_at).total_seconds()))
        logger.info("run recorded: %s", session_id, extra={**fire.log_ids(), "session_id": session_id})
    logger.info("fire batch of %d: %d runs recorded, %d skipped, %d left to finish one by one",
                len(claimed), len(outcome.done), len(outcome.skipped), len(outcome.one_by_one))
    return outcome.one_by_one


def _execute_batch_locked(claimed: list[ClaimedFire], gateway: SessionGateway) -> _BatchOutcome:
    outcome = _BatchOutcome()
    # Locks in the one-fire order (deployment, then fire), each set in key order: batches and
    # single fires never wait on each other in a cycle.
    deployments = Deployment.objects.select_for_update().filter(pk__in={f.deployment_id for f in claimed})
    deployments = {d.pk: d for d in deployments.order_by("pk")}
    still_held = set(
        Fire.objects.select_for_update().filter(pk__in=[f.id for f in claimed], status=Fire.Status.CLAIMED)
        .order_by("pk").values_list("pk", flat=True)
    )
    memo: dict = {}
    asking = []  # [(fire, deployment, request)]
    for fire in claimed:
        deployment = deployments.get(fire.deployment_id)
        if fire.id not in still_held or deployment is None:
            continue  # finished by a worker whose lease had expired: not_claimed
        reason = _skip_reason(deployment, fire.scheduled_at, memo)
        if reason:
            outcome.skipped.append((fire, reason))
        else:
            asking.append((fire, deployment, _fire_request(deployment, fire)))
    answers = gateway.create_sessions([request for _, _, request in asking]) if asking else []
    runs, last_run = [], {}
    for (fire, deployment, _request), answer in zip(asking, answers, strict=True):
        if answer is None or answer.session_id is None:
            outcome.one_by_one.append(fire)
            continue
        outcome.done.append((fire, answer.session_id))
        runs.append(DeploymentRun(
            id=fire.run_id, organization_id=deployment.organization_id, workspace_id=deployment.workspace_id,
            deployment_id=deployment.pk, fire_id=fire.id, agent_id=deployment.agent_id,
            agent_version=deployment.agent_version, trigger_type=DeploymentRun.TriggerType.SCHEDULE,
            scheduled_at=fire.scheduled_at, session_id=answer.session_id, started_at=fire.started_at,
        ))
        if deployment.pk not in last_run or last_run[deployment.pk] < fire.started_at:
            last_run[deployment.pk] = fire.started_at
    now = timezone.now()
    for reason in {reason for _, reason in outcome.skipped}:
        Fire.objects.filter(pk__in=[f.id for f, r in outcome.skipped if r == reason]).update(
            status=Fire.Status.SKIPPED, skip_reason=reason, lease_expires_at=None, updated_at=now
        )
    if runs:
        DeploymentRun.objects.bulk_create(runs)
        Fire.objects.filter(pk__in=[fire.id for fire, _ in outcome.done]).update(
            status=Fire.Status.DONE, lease_expires_at=None, updated_at=now
        )
        _advance_last_run_at(last_run)
    return outcome


def _advance_last_run_at(started: dict[str, datetime]) -> None:
    """`last_run_at` = the run's start, where later than what is recorded: one statement on PostgreSQL."""
    if connection.vendor != "postgresql":
        for pk, at in started.items():
            Deployment.objects.filter(Q(last_run_at__isnull=True) | Q(last_run_at__lt=at), pk=pk).update(last_run_at=at)
        return
    table = Deployment._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" AS d SET "last_run_at" = v.at FROM unnest(%s::varchar[], %s::timestamptz[]) AS v(id, at) '
            f'WHERE d."id" = v.id AND (d."last_run_at" IS NULL OR d."last_run_at" < v.at)',
            [list(started), list(started.values())],
        )


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

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

A deployment's scheduling policies (README "Scheduling policies") add to it, scheduled fires only:

| policy                                       | at fire time                      | deployment afterwards        |
|----------------------------------------------|-----------------------------------|------------------------------|
| overlap skip, previous session still running | previous_run_active_error, no session | unchanged                |
| overlap cancel_previous, same                | the previous session stopped, then a new one | unchanged         |
| schedule.max_runs                            | counted (not an overlap skip)     | archived after the last      |
| policy.pause_after_failures: N               | failures in a row counted         | paused after the N-th        |
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import CharField, DateTimeField, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import ids, metrics
from core.logging import log_context
from deployments_app import schedule
from deployments_app.errors import DeploymentArchived
from core.errors import ApiError
from deployments_app.models import Deployment
from deployments_app.selectors import deployment_session_resources
from deployments_app.services import deployment_archive, deployment_pause
from gateways import (
    RUNNING_SESSION_STATUSES,
    GatewayUnavailable,
    SessionGateway,
    SessionOutcome,
    SessionRequest,
    get_gateway,
)
from runs_app.models import DeploymentRun, Fire
from webhooks_app import events as webhook_events
from webhooks_app.events import Event
from webhooks_app.services import events_record

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


# The run of a fire skipped because the previous run's session still runs (policy.overlap: skip).
OVERLAP_ERROR = "previous_run_active_error"
# A later fire of a deployment with an overlap policy, claimed in the same batch as an earlier one:
# it goes back to pending and runs once the earlier one is recorded, so that it can ask about it.
DEFERRED = "deferred"


@dataclass(frozen=True)
class FireResult:
    status: str  # "done", "skipped", "not_claimed", "archived"
    run_id: str | None = None


# --- what one session is asked for ------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedFire:
    id: str
    deployment_id: str
    scheduled_at: datetime
    due_at: datetime
    run_id: str
    started_at: datetime
    attempts: int
    backfill: bool = False

    def log_ids(self) -> dict:
        return {"fire_id": self.id, "deployment_id": self.deployment_id, "run_id": self.run_id}


@dataclass
class _Job:
    """One session to ask for: a claimed scheduled fire, or a manual run (no fire)."""

    deployment: Deployment
    request: SessionRequest
    started_at: datetime
    fire: ClaimedFire | None = None
    outcome: SessionOutcome | None = None

    @property
    def run_id(self) -> str:
        return self.request.deployment_run_id

    @property
    def trigger_type(self) -> str:
        return DeploymentRun.TriggerType.SCHEDULE if self.fire else DeploymentRun.TriggerType.MANUAL

    def log_ids(self) -> dict:
        return {"deployment_id": self.deployment.pk, "run_id": self.run_id, **({"fire_id": self.fire.id} if self.fire else {})}


def session_request(deployment: Deployment, *, idempotency_key: str, run_id: str, title: str) -> SessionRequest:
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


def _fire_job(deployment: Deployment, fire: ClaimedFire) -> _Job:
    title = f"{deployment.name} — {fire.scheduled_at:%Y-%m-%d %H:%M} UTC"
    request = session_request(deployment, idempotency_key=fire.id, run_id=fire.run_id, title=title)
    return _Job(deployment=deployment, request=request, started_at=fire.started_at, fire=fire)


# --- the gateway call ----------------------------------------------------------------------------


def create_sessions(gateway: SessionGateway, jobs: list[_Job]) -> None:
    """Ask the gateway for every job's session at once and set each job's outcome. Requests the
    platform could not answer (5xx, connection failures, timeouts) are asked again, a few times
    within seconds, with the same idempotency keys; a 429 is never retried; anything unexpected
    becomes `unknown_error`."""
    attempts = max(1, settings.GATEWAY_RETRY_ATTEMPTS)
    pending, last_error = list(jobs), {}
    for attempt in range(attempts):
        if not pending:
            return
        if attempt:
            logger.warning("session platform unavailable for %d requests (attempt %d of %d): %s",
                           len(pending), attempt, attempts, next(iter(last_error.values())))
            time.sleep(settings.GATEWAY_RETRY_BACKOFF_SECONDS * (2 ** (attempt - 1)))
        try:
            outcomes = gateway.create_sessions([job.request for job in pending])
        except GatewayUnavailable as exc:
            outcomes = [SessionOutcome.unavailable(str(exc))] * len(pending)
        except Exception:
            logger.exception("unexpected error while creating sessions")
            outcomes = [SessionOutcome.failure("unknown_error", "an unexpected error occurred while creating the session")] * len(pending)
        retry = []
        for job, outcome in zip(pending, outcomes, strict=True):
            if outcome.retryable:
                retry.append(job)
                last_error[job.run_id] = outcome.error_message
            else:
                job.outcome = outcome
        _count_calls(gateway, outcomes)
        pending = retry
    for job in pending:
        job.outcome = SessionOutcome.failure(
            "service_unavailable_error",
            f"the session platform was unavailable after {attempts} attempts: {last_error[job.run_id]}",
        )


def _count_calls(gateway: SessionGateway, outcomes: list[SessionOutcome]) -> None:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        result = "session" if outcome.session_id else "unavailable" if outcome.retryable else "refused"
        counts[result] = counts.get(result, 0) + 1
    for result, count in counts.items():
        metrics.GATEWAY_CALLS.labels(gateway.name, result).inc(count)


# --- the overlap policy: is the previous run's session still running? -----------------------------


def apply_overlap(gateway: SessionGateway, jobs: list[_Job]) -> None:
    """Before any session is asked for: for each scheduled fire of a deployment whose
    `policy.overlap` is `skip` or `cancel_previous`, ask the platform — once per batch and
    organization, through the gateway — whether the session of the deployment's previous run (the
    latest with a session, manual runs included) still runs. `skip`: the job's outcome becomes
    `previous_run_active_error` naming that session (a run, no session). `cancel_previous`: the
    gateway stops that session first; one it cannot stop keeps running, and the job records
    `previous_run_active_error` saying why instead of starting a second session. A platform that
    cannot say (unreachable after the quick retries, credentials refused) gives the job the error
    a session request would have had."""
    watched = [job for job in jobs if job.fire is not None and job.outcome is None
               and job.deployment.policy_overlap != Deployment.Overlap.ALLOW]
    if not watched:
        return
    previous = _previous_sessions({job.deployment.pk for job in watched})
    by_organization: dict[str, list[_Job]] = {}
    for job in watched:
        if job.deployment.pk in previous:
            by_organization.setdefault(job.deployment.organization_id, []).append(job)
    for organization_id, org_jobs in by_organization.items():
        session_ids = sorted({previous[job.deployment.pk][1] for job in org_jobs})
        states = _ask(gateway, "session_states", organization_id, session_ids, org_jobs)
        if states is None:
            continue
        to_stop: list[_Job] = []
        for job in org_jobs:
            run_id, session_id = previous[job.deployment.pk]
            status = states.get(session_id)
            if status not in RUNNING_SESSION_STATUSES:
                continue
            if job.deployment.policy_overlap == Deployment.Overlap.SKIP:
                job.outcome = SessionOutcome.failure(
                    OVERLAP_ERROR, f"session {session_id} of the previous run {run_id} is still {status} "
                    "(policy.overlap: skip)")
                metrics.FIRES_LIMITED.labels("overlap_skipped").inc()
            else:
                to_stop.append(job)
        if not to_stop:
            continue
        stopping = sorted({previous[job.deployment.pk][1] for job in to_stop})
        answers = _ask(gateway, "sessions_stop", organization_id, stopping, to_stop)
        if answers is None:
            continue
        for job in to_stop:
            run_id, session_id = previous[job.deployment.pk]
            refusal = answers.get(session_id)
            if refusal:
                job.outcome = SessionOutcome.failure(
                    OVERLAP_ERROR, f"session {session_id} of the previous run {run_id} is still running and could "
                    f"not be stopped (policy.overlap: cancel_previous): {refusal}")
                continue
            metrics.FIRES_LIMITED.labels("previous_cancelled").inc()
            logger.info("previous session %s stopped (policy.overlap: cancel_previous)", session_id,
                        extra={**job.log_ids(), "session_id": session_id})


def _previous_sessions(deployment_ids: set[str]) -> dict[str, tuple[str, str]]:
    """{deployment id: (run id, session id)} of each deployment's latest run that has a session."""
    latest = DeploymentRun.objects.filter(deployment=OuterRef("pk"), session_id__isnull=False).order_by("-created_at", "-id")
    rows = (
        Deployment.objects.filter(pk__in=deployment_ids)
        .annotate(run=Subquery(latest.values("id")[:1]), session=Subquery(latest.values("session_id")[:1]))
        .values_list("pk", "run", "session")
    )
    return {pk: (run, session) for pk, run, session in rows if session}


def _ask(gateway: SessionGateway, method: str, organization_id: str, session_ids: list[str], jobs: list[_Job]):
    """One gateway call about sessions, retried like a session request (quickly, a few times) when
    the platform cannot be reached. On failure every job gets the error and None is returned."""
    attempts = max(1, settings.GATEWAY_RETRY_ATTEMPTS)
    problem = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(settings.GATEWAY_RETRY_BACKOFF_SECONDS * (2 ** (attempt - 1)))
        try:
            return getattr(gateway, method)(organization_id=organization_id, session_ids=session_ids)
        except GatewayUnavailable as exc:
            problem = SessionOutcome.failure(
                "service_unavailable_error",
                f"the session platform could not say whether the previous session still runs after {attempts} "
                f"attempts: {exc}")
            logger.warning("session platform unavailable for %s (attempt %d of %d): %s", method, attempt + 1,
                           attempts, exc)
        except ApiError as exc:
            problem = SessionOutcome.failure("session_creation_rejected_error", exc.message)
            break
        except Exception:
            logger.exception("unexpected error while asking the session platform (%s)", method)
            problem = SessionOutcome.failure(
                "unknown_error", "an unexpected error occurred while checking the previous run's session")
            break
    for job in jobs:
        job.outcome = problem
    return None


# --- one path for every session: build, ask, record ---------------------------------------------


def _execute(gateway: SessionGateway, deployment_ids: set[str], build) -> list["_Recorded"]:
    """`build(deployments)` → (jobs, skipped fires). With a transactional gateway (the built-in
    platform) the sessions and their records commit together; otherwise the sessions are asked
    for outside any transaction (many calls in flight, no row locked meanwhile) and recorded
    after, under the locks."""
    if gateway.transactional:
        with transaction.atomic():
            jobs, skipped = build(_lock_deployments(deployment_ids))
            apply_overlap(gateway, jobs)
            create_sessions(gateway, [job for job in jobs if job.outcome is None])
            return _record(jobs, skipped)
    jobs, skipped = build(Deployment.objects.in_bulk(deployment_ids))
    apply_overlap(gateway, jobs)
    create_sessions(gateway, [job for job in jobs if job.outcome is None])
    with transaction.atomic():
        locked = _lock_deployments(deployment_ids)
        for job in jobs:
            job.deployment = locked[job.deployment.pk]
        return _record(jobs, skipped)


def _lock_deployments(deployment_ids) -> dict[str, Deployment]:
    # Locks in one order everywhere (deployment, then fire; each set in key order): batches,
    # single fires, manual runs and the deployment services never wait on each other in a cycle.
    rows = Deployment.objects.select_for_update().filter(pk__in=deployment_ids).order_by("pk")
    return {row.pk: row for row in rows}


@dataclass(frozen=True)
class _Recorded:
    job: _Job
    status: str  # "done" (a run), "archived" (own agent gone, no run), "not_claimed"
    run: DeploymentRun | None = None


def _record(jobs: list[_Job], skipped: list[tuple[ClaimedFire, str]]) -> list[_Recorded]:
    """In the caller's transaction: the runs (unique per fire), the fires finished, `last_run_at`
    of scheduled runs and the outcome policy. A fire no longer held (finished by a worker that
    re-claimed it after this one's lease ran out) records nothing."""
    fire_ids = [job.fire.id for job in jobs if job.fire] + [fire.id for fire, _ in skipped]
    held = set(
        Fire.objects.select_for_update().filter(pk__in=fire_ids, status=Fire.Status.CLAIMED)
        .order_by("pk").values_list("pk", flat=True)
    ) if fire_ids else set()
    now = timezone.now()
    for reason in {reason for _, reason in skipped} - {DEFERRED}:
        Fire.objects.filter(pk__in=[f.id for f, r in skipped if r == reason and f.id in held]).update(
            status=Fire.Status.SKIPPED, skip_reason=reason, lease_expires_at=None, updated_at=now
        )
    if any(reason == DEFERRED for _, reason in skipped):
        Fire.objects.filter(pk__in=[f.id for f, r in skipped if r == DEFERRED and f.id in held]).update(
            status=Fire.Status.PENDING, lease_expires_at=None, published_at=now, updated_at=now
        )
    recorded, runs, gone = [], [], []
    for job in jobs:
        if job.fire is not None and job.fire.id not in held:
            recorded.append(_Recorded(job, "not_claimed"))
        elif job.outcome.archive_deployment:
            _archive_for_lost_agent(deployment=job.deployment, outcome=job.outcome)
            gone.append(job)
            recorded.append(_Recorded(job, "archived"))
        else:
            run = _run_row(job)
            runs.append(run)
            recorded.append(_Recorded(job, "done", run))
    if gone:
        Fire.objects.filter(pk__in=[job.fire.id for job in gone if job.fire]).update(
            status=Fire.Status.SKIPPED, skip_reason="agent_gone", lease_expires_at=None, updated_at=now
        )
    if runs:
        DeploymentRun.objects.bulk_create(runs)
        events_record(events=[event for run in runs for event in _run_events(run)])
        Fire.objects.filter(pk__in=[run.fire_id for run in runs if run.fire_id]).update(
            status=Fire.Status.DONE, lease_expires_at=None, updated_at=now
        )
        last_run: dict[str, datetime] = {}
        for run in runs:
            if run.fire_id and (run.deployment_id not in last_run or last_run[run.deployment_id] < run.started_at):
                last_run[run.deployment_id] = run.started_at
        _advance_last_run_at(last_run)
    for item in recorded:
        if item.run is not None and item.job.fire is not None:
            _apply_policy(deployment=item.job.deployment, outcome=item.job.outcome)
    _apply_counting_policies([item for item in recorded if item.run is not None and item.job.fire is not None])
    return recorded


def _run_row(job: _Job) -> DeploymentRun:
    deployment, outcome = job.deployment, job.outcome
    return DeploymentRun(
        id=job.run_id,
        organization_id=deployment.organization_id,
        workspace_id=deployment.workspace_id,
        deployment_id=deployment.pk,
        fire_id=job.fire.id if job.fire else None,
        agent_id=job.request.agent_id,
        agent_version=job.request.agent_version,
        trigger_type=job.trigger_type,
        scheduled_at=job.fire.scheduled_at if job.fire else None,
        backfill=job.fire.backfill if job.fire else False,
        session_id=outcome.session_id,
        error_type=None if outcome.session_id else outcome.error_type,
        error_message=None if outcome.session_id else outcome.error_message,
        started_at=job.started_at,
    )


def _run_events(run: DeploymentRun) -> tuple[Event, Event]:
    """A run is recorded with its outcome: it started, and its session was created or not."""
    ending = webhook_events.DEPLOYMENT_RUN_SUCCEEDED if run.session_id else webhook_events.DEPLOYMENT_RUN_FAILED
    return (
        Event(webhook_events.DEPLOYMENT_RUN_STARTED, run.organization_id, run.workspace_id, run.id),
        Event(ending, run.organization_id, run.workspace_id, run.id),
    )


def _announce(recorded: list[_Recorded]) -> None:
    """After commit: metrics and the log lines that make a fire's life one grep."""
    for item in recorded:
        job = item.job
        if item.run is None:
            if item.status == "not_claimed":
                logger.info("fire already finished by another worker", extra=job.log_ids())
            continue
        run = item.run
        metrics.RUNS.labels(run.trigger_type, "success" if run.session_id else "error", run.error_type or "").inc()
        if job.fire is not None:
            metrics.FIRE_LATENESS.observe(max(0.0, (job.fire.started_at - job.fire.due_at).total_seconds()))
        logger.info(
            "%s recorded: %s", "run" if job.fire else "manual run", run.session_id or run.error_type,
            extra={**job.log_ids(), "session_id": run.session_id, "error_type": run.error_type},
        )


def _advance_last_run_at(started: dict[str, datetime]) -> None:
    """`last_run_at` = the run's start, where later than what is recorded: one statement on PostgreSQL."""
    if not started:
        return
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


# --- the outcome policy --------------------------------------------------------------------------


def _apply_policy(*, deployment: Deployment, outcome: SessionOutcome) -> None:
    """Auto-pause on errors that recur until someone fixes them — scheduled fires only."""
    if outcome.session_id or outcome.error_type not in PAUSING_ERRORS:
        return
    if deployment.archived_at is not None or deployment.status == Deployment.Status.PAUSED:
        return
    deployment_pause(
        deployment=deployment,
        reason={"type": "error", "error": {"type": outcome.error_type, "message": outcome.error_message}},
    )
    metrics.DEPLOYMENTS_AUTO_PAUSED.labels(outcome.error_type).inc()
    logger.warning("deployment paused: %s", outcome.error_message,
                   extra={"error_type": outcome.error_type, "deployment_id": deployment.pk})


def _apply_counting_policies(items: list[_Recorded]) -> None:
    """`schedule.max_runs` and `policy.pause_after_failures`, under the deployments' row locks (so
    the counts are exact with any number of workers): every scheduled run counts toward the limit
    except a fire skipped for overlap, and the deployment archives itself after the last one; a
    failed run adds to the failures in a row, a successful one resets them (an overlap skip does
    neither), and the N-th failure in a row pauses the deployment with that error as the reason."""
    by_deployment: dict[str, list[_Recorded]] = {}
    for item in items:
        by_deployment.setdefault(item.job.deployment.pk, []).append(item)
    for recorded in by_deployment.values():
        deployment = recorded[0].job.deployment
        limit, threshold = deployment.schedule_max_runs, deployment.policy_pause_after_failures
        if limit is None and threshold is None:
            continue
        counted, failures, last_error = deployment.runs_counted, deployment.consecutive_failures, None
        for item in sorted(recorded, key=lambda item: item.run.scheduled_at):
            run = item.run
            if run.error_type == OVERLAP_ERROR:
                continue
            counted += 1
            if run.session_id:
                failures, last_error = 0, None
            else:
                failures += 1
                last_error = {"type": run.error_type, "message": run.error_message or ""}
        changes = {}
        if limit is not None:
            changes["runs_counted"] = counted
        if threshold is not None:
            changes["consecutive_failures"] = failures
        Deployment.objects.filter(pk=deployment.pk).update(**changes)
        for name, value in changes.items():
            setattr(deployment, name, value)
        if deployment.archived_at is not None:
            continue
        if limit is not None and counted >= limit:
            deployment_archive(deployment=deployment)
            metrics.DEPLOYMENTS_AUTO_ARCHIVED.inc()
            logger.info("deployment archived: its %d scheduled run(s) are done (schedule.max_runs)", limit,
                        extra={"deployment_id": deployment.pk})
            continue
        if (threshold is not None and failures >= threshold and last_error is not None
                and deployment.status == Deployment.Status.ACTIVE):
            deployment_pause(deployment=deployment,
                             reason={"type": "error", "error": last_error, "consecutive_failures": failures})
            metrics.DEPLOYMENTS_AUTO_PAUSED.labels(last_error["type"]).inc()
            logger.warning("deployment paused after %d failed scheduled runs in a row (policy.pause_after_failures)",
                           failures, extra={"deployment_id": deployment.pk, "error_type": last_error["type"]})


def _archive_for_lost_agent(*, deployment: Deployment, outcome: SessionOutcome) -> None:
    if deployment.archived_at is None:
        deployment_archive(deployment=deployment)
        metrics.DEPLOYMENTS_AUTO_ARCHIVED.inc()
    logger.warning("deployment archived: %s", outcome.error_message, extra={"deployment_id": deployment.pk})


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


_CLAIMED_COLUMNS = ("id", "deployment_id", "scheduled_at", "due_at", "run_id", "started_at", "attempts", "backfill")


def claim_fires(fire_ids: list[str], now: datetime) -> list[ClaimedFire]:
    """The conditional claim (pending, or claimed with an expired lease) of many fires, in one
    statement on PostgreSQL (one per fire elsewhere). Returns the fires this worker now holds,
    earliest due first; a fire missing from it is finished or held by another worker."""
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


def _skip_reason(deployment: Deployment, fire: ClaimedFire, memo: dict) -> str | None:
    scheduled_at = fire.scheduled_at
    if deployment.archived_at is not None:
        return "archived"
    if deployment.status == Deployment.Status.PAUSED and not fire.backfill:  # a backfill runs while paused
        return "paused"
    if not deployment.has_schedule:
        return "schedule_removed"
    options = deployment.schedule_options
    if not _still_scheduled(deployment, scheduled_at, memo, options):
        if options.keys() & {"start_at", "end_at"}:
            window = {name: value for name, value in options.items() if name == "dst_fold"}
            if _still_scheduled(deployment, scheduled_at, memo, window):
                return "outside_window"  # the window was changed since the fire was written
        return "schedule_changed"
    return None


def _still_scheduled(deployment: Deployment, scheduled_at: datetime, memo: dict, options: dict) -> bool:
    """Is `scheduled_at` still an occurrence of the deployment's schedule (with its window and DST
    fold policy)? A fire is written ahead of its time (the scheduler's lookahead, a backlog): a
    schedule changed since must not fire the old occurrence. Memoized per batch: a burst shares a
    few (expression, zone, options, instant) keys."""
    key = (deployment.schedule_expression, deployment.schedule_timezone, scheduled_at, *sorted(options.items()))
    if key not in memo:
        following = schedule.next_fires(key[0], key[1], scheduled_at - timedelta(seconds=1), n=1, **options)
        memo[key] = bool(following) and following[0] == scheduled_at
    return memo[key]


def _admitted(claimed: list[ClaimedFire], deployments: dict[str, Deployment], reasons: dict) -> dict[str, str]:
    """{fire id: reason} for fires that would run but for a policy, decided in occurrence order per
    deployment: beyond the runs left under `schedule.max_runs` ("max_runs" — the scheduler never
    writes that many; this catches a limit lowered since), or a later fire of a deployment with an
    overlap policy whose earlier fire runs in this batch (DEFERRED: it runs right after, and then
    asks about that one). Deployments without these policies are not looked at."""
    out: dict[str, str] = {}
    taken: dict[str, int] = {}
    for fire in sorted(claimed, key=lambda fire: (fire.scheduled_at, fire.id)):
        if reasons.get(fire.id, "absent") is not None:
            continue
        deployment = deployments[fire.deployment_id]
        overlap = deployment.policy_overlap != Deployment.Overlap.ALLOW
        remaining = deployment.runs_remaining
        if not overlap and remaining is None:
            continue
        count = taken.get(deployment.pk, 0)
        if remaining is not None and count >= remaining:
            out[fire.id] = "max_runs"
        elif overlap and count:
            out[fire.id] = DEFERRED
        else:
            taken[deployment.pk] = count + 1
    return out


def execute_fire(fire_id: str, *, gateway: SessionGateway | None = None) -> FireResult:
    """One scheduled fire: a batch of one."""
    return execute_fires([fire_id], gateway=gateway)[fire_id]


def execute_fires(fire_ids: list[str], *, gateway: SessionGateway | None = None) -> dict[str, FireResult]:
    """Run scheduled fires, each exactly once.

    1. Claim them with one conditional update (pending, or claimed with an expired lease); a fire
       not claimed is finished or held by another worker: `not_claimed`.
    2. Re-read their deployments: paused, archived, made manual-only or rescheduled since the fire
       was written → the fire is skipped, no session, no run. Scheduling policies: fires beyond
       `schedule.max_runs` are skipped; a later fire of a deployment with an overlap policy waits
       (back to pending, published again) for its earlier one in the same batch.
    3. For deployments with an overlap policy, ask the platform once whether their previous
       sessions still run (skip: the outcome is `previous_run_active_error`; cancel_previous: stop
       them first). Then ask the gateway for every other session at once, each with its fire's id
       as idempotency key — so a retry after a crash gets the same session, never a second one.
    4. In one transaction, under the deployments' and fires' locks: the runs (unique per fire),
       their webhook events, the fires finished, `last_run_at`, and the outcome policy (with the
       run limit and the failure threshold). With the built-in platform, step 3 happens inside that
       transaction too.

    A batch whose transaction fails (a deadlock victim, a constraint) is finished as batches of
    one, so one bad fire never holds back the others.
    """
    gateway = gateway or get_gateway()
    fire_ids = list(dict.fromkeys(fire_ids))
    results = {fire_id: FireResult("not_claimed") for fire_id in fire_ids}
    claimed = claim_fires(fire_ids, timezone.now())
    if len(claimed) < len(fire_ids):
        logger.info("%d of %d fires not claimed (finished, or held by another worker)",
                    len(fire_ids) - len(claimed), len(fire_ids))
    for fire in claimed:
        logger.info("fire claimed (attempt %d)", fire.attempts,
                    extra={**fire.log_ids(), "scheduled_at": fire.scheduled_at.isoformat()})
    if claimed:
        _execute_claimed(claimed, gateway, results)
    return results


_SKIP_WORDS = {
    "max_runs": "the deployment has no runs left under schedule.max_runs",
    "outside_window": "the occurrence is outside the schedule's active window",
}


def _publish(fires) -> None:
    """Publish fires again now (deferred ones). A broker that cannot be reached only delays them:
    they are pending in the database, and the recovery sweep publishes them again."""
    from runs_app.scheduler import publish

    try:
        publish(fires)
    except Exception:  # noqa: BLE001 — the doorbell failed; the fires are safe in PostgreSQL
        logger.warning("deferred fires not published (the recovery sweep will)", exc_info=True)


def _execute_claimed(claimed: list[ClaimedFire], gateway: SessionGateway, results: dict[str, FireResult]) -> None:
    skipped_here: list[tuple[ClaimedFire, str]] = []

    def build(deployments: dict[str, Deployment]):
        held = set(Fire.objects.filter(pk__in=[f.id for f in claimed], status=Fire.Status.CLAIMED).values_list("pk", flat=True))
        jobs, skipped, memo = [], [], {}
        reasons = {}
        for fire in claimed:
            deployment = deployments.get(fire.deployment_id)
            if fire.id not in held or deployment is None:
                continue  # finished by a worker whose lease had expired: not_claimed
            reasons[fire.id] = _skip_reason(deployment, fire, memo)
        admitted = _admitted(claimed, deployments, reasons)
        for fire in claimed:
            if fire.id not in reasons:
                continue
            reason = reasons[fire.id] or admitted.get(fire.id)
            if reason:
                skipped.append((fire, reason))
            else:
                jobs.append(_fire_job(deployments[fire.deployment_id], fire))
        skipped_here[:] = skipped
        return jobs, skipped

    try:
        recorded = _execute(gateway, {fire.deployment_id for fire in claimed}, build)
    except DatabaseError as exc:
        if len(claimed) == 1:
            raise
        logger.warning("fire batch rolled back (%s); finishing its fires one at a time", type(exc).__name__)
        for fire in claimed:
            _execute_claimed([fire], gateway, results)
        return
    deferred = [fire for fire, reason in skipped_here if reason == DEFERRED]
    for fire, reason in skipped_here:
        if reason == DEFERRED:
            results[fire.id] = FireResult("deferred")
            logger.info("fire deferred: an earlier fire of its deployment ran in the same batch",
                        extra=fire.log_ids())
            continue
        results[fire.id] = FireResult("skipped")
        metrics.FIRES_SKIPPED.labels(reason).inc()
        if reason in ("max_runs", "outside_window"):
            metrics.FIRES_LIMITED.labels(reason).inc()
        logger.info("fire skipped: %s", _SKIP_WORDS.get(reason) or f"deployment is {reason.replace('_', ' ')}",
                    extra=fire.log_ids())
    if deferred:
        _publish([(fire.id, fire.due_at, fire.deployment_id) for fire in deferred])
    for item in recorded:
        results[item.job.fire.id] = FireResult(item.status, item.run.id if item.run else None)
    _announce(recorded)
    logger.info("fire batch of %d: %d runs recorded, %d skipped", len(claimed),
                sum(1 for item in recorded if item.run), len(skipped_here))


# --- manual runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManualRunResult:
    run: DeploymentRun | None
    archived_message: str | None = None


def run_manually(*, deployment: Deployment, gateway: SessionGateway | None = None) -> ManualRunResult:
    """`POST /v1/deployments/{id}/run`: a session now (a batch of one), also while paused. Never
    changes `last_run_at`, never pauses. If the deployment's own agent is gone, the deployment is
    archived and no run is recorded. Archived deployments are refused."""
    gateway = gateway or get_gateway()
    run_id = ids.new_id("deployment_run")
    started_at = timezone.now()

    def build(deployments: dict[str, Deployment]):
        current = deployments[deployment.pk]
        if current.archived_at is not None:
            raise DeploymentArchived(current.pk)
        request = session_request(current, idempotency_key=run_id, run_id=run_id, title=f"{current.name} — manual run")
        return [_Job(deployment=current, request=request, started_at=started_at)], []

    with log_context(deployment_id=deployment.pk, run_id=run_id):
        [item] = _execute(gateway, {deployment.pk}, build)
        _announce([item])
        if item.status == "archived":
            return ManualRunResult(None, archived_message=item.job.outcome.error_message)
        return ManualRunResult(item.run)

"""The scheduler: turns due deployments into Fire rows, then publishes them.

PostgreSQL is the source of truth; the broker is only a doorbell. One tick:

1. In one transaction, claim due deployments (`next_fire_at <= now`) with
   `SELECT … FOR UPDATE SKIP LOCKED LIMIT k` — several schedulers never claim the same row.
2. For each, write one Fire per nominal occurrence inside the catch-up window
   (`ON CONFLICT DO NOTHING` on (deployment, scheduled_at)), count older ones as missed, and
   advance `next_fire_at` to the first occurrence after now. Commit.
3. Only then publish the fires, grouped by due time into `runs.fire_batch` messages, with a
   countdown up to the deployment's jitter.
4. Recovery sweep: re-publish fires still pending well past their due time (a lost message, a
   broker restart) and fires whose worker lease expired (a killed worker).

Cost per tick is proportional to what is due, never to the number of deployments.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Value
from django.utils import timezone

from core import ids, metrics
from core.errors import InvalidRequest
from core.logging import log_context
from deployments_app import schedule
from deployments_app.models import Deployment
from runs_app.models import DeploymentRun, Fire

logger = logging.getLogger("runs.scheduler")
# Messages per pipelined round trip to the broker: small enough that the first fires of a burst
# leave at once, large enough to amortize the round trip.
PUBLISH_BATCH = 100

# The longest wait between two re-publications of a stuck fire, in recovery grace periods.
RECOVERY_BACKOFF_CAP = 4

@dataclass
class TickResult:
    deployments: int = 0
    fires: list = field(default_factory=list)  # [(fire_id, due_at)]
    missed: int = 0
    republished: int = 0


def jitter_for(deployment: Deployment) -> timedelta:
    return timedelta(seconds=deployment.jitter_fraction * settings.SCHEDULER_MAX_JITTER_SECONDS)


def _occurrences(deployment: Deployment, now: datetime, window_start: datetime) -> tuple[list[datetime], int, datetime | None]:
    """Nominal fires from next_fire_at up to now: (inside the window, missed count, next after now).
    The schedule's own active window and DST fold policy come with its engine options."""
    expression, tz, options = deployment.schedule_expression, deployment.schedule_timezone, deployment.schedule_options
    current = deployment.next_fire_at
    missed = 0
    while current is not None and current < window_start:
        # Long downtime: count what is older than the window, a batch of occurrences at a time.
        missed += 1
        batch = schedule.next_fires(expression, tz, current, n=500, **options)
        current = None
        for index, instant in enumerate(batch):
            if instant >= window_start:
                current = instant
                break
            if index == len(batch) - 1:
                current = instant  # counted at the top of the next round
                break
            missed += 1
    inside: list[datetime] = []
    while current is not None and current <= now:
        inside.append(current)
        following = schedule.next_fires(expression, tz, current, n=1, **options)
        current = following[0] if following else None
    return inside, missed, current


def _advance(deployments: list[Deployment]) -> None:
    """Write next_fire_at and missed_fires of a claimed batch in one statement. On PostgreSQL an
    UPDATE … FROM unnest(…): bulk_update's CASE WHEN per row costs O(batch²) and was most of a
    10,000-deployment tick."""
    if connection.vendor != "postgresql":
        Deployment.objects.bulk_update(deployments, ["next_fire_at", "missed_fires"])
        return
    meta = Deployment._meta
    table, pk = meta.db_table, meta.pk.column
    next_col, missed_col = meta.get_field("next_fire_at").column, meta.get_field("missed_fires").column
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" AS d SET "{next_col}" = v.next_fire_at, "{missed_col}" = v.missed '
            f"FROM unnest(%s::varchar[], %s::timestamptz[], %s::integer[]) AS v(id, next_fire_at, missed) "
            f'WHERE d."{pk}" = v.id',
            [
                [d.pk for d in deployments],
                [d.next_fire_at for d in deployments],
                [d.missed_fires for d in deployments],
            ],
        )


def claim_due(now: datetime | None = None, *, limit: int | None = None) -> TickResult:
    """Steps 1–2: one transaction that writes fires and advances next_fire_at."""
    now = now or timezone.now()
    limit = limit or settings.SCHEDULER_BATCH_SIZE
    window_start = now - timedelta(seconds=settings.SCHEDULER_CATCHUP_WINDOW_SECONDS)
    result = TickResult()
    with transaction.atomic():
        due = list(
            Deployment.objects.select_for_update(skip_locked=True)
            .filter(next_fire_at__lte=now)
            .only("id", "schedule_expression", "schedule_timezone", "next_fire_at", "jitter_fraction",
                  "missed_fires", "status", "archived_at", "schedule_start_at", "schedule_end_at",
                  "schedule_dst_fold", "schedule_max_runs", "runs_counted")
            # Same instant: smallest jitter first, so a burst is claimed (and published) in due order.
            .order_by("next_fire_at", "jitter_fraction")[:limit]
        )
        if not due:
            return result
        fires: list[Fire] = []
        budgets = run_budgets([d for d in due if d.schedule_max_runs is not None])
        for deployment in due:
            if not deployment.should_fire:  # state changed without clearing next_fire_at
                deployment.next_fire_at = None
                continue
            inside, missed, following = _occurrences(deployment, now, window_start)
            if deployment.pk in budgets and len(inside) > budgets[deployment.pk]:
                # More occurrences than runs left under schedule.max_runs: the rest never run.
                limited = len(inside) - budgets[deployment.pk]
                inside = inside[: budgets[deployment.pk]]
                metrics.FIRES_LIMITED.labels("max_runs").inc(limited)
                logger.info("%d occurrence(s) beyond the run limit not scheduled", limited,
                            extra={"deployment_id": deployment.id})
            jitter = jitter_for(deployment)
            for scheduled_at in inside:
                fires.append(Fire(deployment_id=deployment.id, scheduled_at=scheduled_at, due_at=scheduled_at + jitter,
                                  published_at=now))
            if missed:
                deployment.missed_fires += missed
                result.missed += missed
                logger.warning(
                    "%d fire(s) older than the catch-up window skipped", missed, extra={"deployment_id": deployment.id}
                )
            deployment.next_fire_at = following
        Fire.objects.bulk_create(fires, ignore_conflicts=True)
        _advance(due)
        # ignore_conflicts leaves ids on objects that were not inserted: publish only real rows.
        created = set(Fire.objects.filter(pk__in=[f.pk for f in fires]).values_list("pk", flat=True))
        result.deployments = len(due)
        result.fires = [(f.pk, f.due_at, f.deployment_id) for f in fires if f.pk in created]
    metrics.FIRES_SCHEDULED.inc(len(result.fires))
    if result.missed:
        metrics.FIRES_MISSED.inc(result.missed)
    return result


def run_budgets(deployments: list[Deployment]) -> dict[str, int]:
    """{deployment id: fires it may still be given} under `schedule.max_runs`: the runs left minus
    the fires already written and not finished. Call it holding the deployments' row locks: the
    fire path counts a run and finishes its fire under the same lock, so the budget is exact and a
    deployment never gets more fires than its limit allows."""
    if not deployments:
        return {}
    open_fires = dict(
        Fire.objects.filter(deployment_id__in=[d.pk for d in deployments],
                            status__in=[Fire.Status.PENDING, Fire.Status.CLAIMED])
        .values("deployment_id").annotate(total=Count("id")).values_list("deployment_id", "total")
    )
    return {d.pk: max(0, d.runs_remaining - open_fires.get(d.pk, 0)) for d in deployments}


def fire_batches(fires, *, size: int, window: float):
    """Group fires, earliest due first, into batches of at most `size` whose due times lie within
    `window` seconds of the batch's first: one message, one claiming statement and one
    transaction per batch instead of per fire, while each fire still starts within `window` of
    its own due time."""
    batch: list = []
    for fire in sorted(fires, key=lambda fire: fire[1]):
        if batch and (len(batch) >= size or (fire[1] - batch[0][1]).total_seconds() > window):
            yield batch
            batch = []
        batch.append(fire)
    if batch:
        yield batch


def publish(fires, now: datetime | None = None) -> None:
    """Step 3: after commit, `runs.fire_batch` messages whose countdown is the latest due time in
    the batch (seconds; never a long ETA), so no fire starts before its own due time. A batch is
    recorded in one go, its sessions asked for together (in flight at once on a remote platform).

    Earliest due first, through one producer whose messages go out in pipelined batches (one
    round trip per PUBLISH_BATCH messages on Redis; transports without batching publish each
    message at once)."""
    from runs_app.tasks import fire_batch as fire_batch_task

    if not fires:
        return
    now = now or timezone.now()
    batches = fire_batches(fires, size=settings.FIRE_BATCH_SIZE, window=settings.FIRE_BATCH_WINDOW_SECONDS)
    with fire_batch_task.app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        for batch in batches:
            countdown = max(0.0, (batch[-1][1] - now).total_seconds())
            fire_batch_task.apply_async(([fire_id for fire_id, _, _ in batch],), countdown=countdown, producer=producer)
            for fire_id, _, deployment_id in batch:
                logger.info("fire published", extra={"fire_id": fire_id, "deployment_id": deployment_id,
                                                     "countdown": round(countdown, 3)})


def publish_after_commit(fires) -> None:
    """`publish` once the caller's transaction commits. A broker that cannot be reached then only
    delays the fires: they are in the database, and the recovery sweep publishes them again."""

    def send():
        try:
            publish(fires)
        except Exception:  # noqa: BLE001 — the doorbell failed; the fires are safe in PostgreSQL
            logger.warning("fires not published (the recovery sweep will)", exc_info=True)

    transaction.on_commit(send)


# --- backfill ---------------------------------------------------------------------------------------

BACKFILL_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)


def deployment_backfill(*, deployment: Deployment, start: datetime, end: datetime,
                        now: datetime | None = None) -> list[Fire]:
    """Run the deployment's occurrences with start <= t < end now, each once (`POST
    /v1/deployments/{id}/backfill` and the admin). Returns their fires, earliest occurrence first.

    An occurrence is one of the schedule as it is now — its active window and DST fold policy
    included. Each gets a Fire marked `backfill`, due at now plus the deployment's jitter, with its
    run's id fixed at once; the fire path runs it like a scheduled fire (also while the deployment
    is paused) and its run's trigger_context says `"backfill": true`. The fire's uniqueness per
    occurrence means an occurrence that has a run, or a fire still to run, is never run again; one
    whose fire was skipped (the deployment was paused then) gets that fire back. Bounded by
    BACKFILL_MAX_RANGE_DAYS and BACKFILL_MAX_RUNS, and by the runs left under schedule.max_runs.
    Refused on archived and manual-only deployments.
    """
    from deployments_app.errors import DeploymentArchived

    now = now or timezone.now()
    if start < BACKFILL_EPOCH:
        raise InvalidRequest("start: must be after 1970-01-01T00:00:00Z")
    if end <= start:
        raise InvalidRequest("end: must be after start")
    if end > now:
        raise InvalidRequest("end: must not be in the future (a backfill runs past occurrences; the schedule runs the "
                             "coming ones)")
    max_days = settings.BACKFILL_MAX_RANGE_DAYS
    if end - start > timedelta(days=max_days):
        raise InvalidRequest(f"end: a backfill spans at most {max_days} days (BACKFILL_MAX_RANGE_DAYS); split the range")
    limit = settings.BACKFILL_MAX_RUNS
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if locked.is_archived:
            raise DeploymentArchived(locked.pk)
        if not locked.has_schedule:
            raise InvalidRequest(f"deployment {locked.pk} has no schedule: there are no occurrences to backfill")
        options = locked.schedule_options
        last = end - timedelta(microseconds=1)  # occurrences are whole seconds: t < end
        options["end_at"] = min(options.get("end_at") or last, last)
        occurrences = schedule.next_fires(locked.schedule_expression, locked.schedule_timezone,
                                          start - timedelta(microseconds=1), limit + 1, **options)
        if len(occurrences) > limit:
            raise InvalidRequest(f"end: the range holds more than {limit} occurrences; a backfill runs at most "
                                 f"{limit} (BACKFILL_MAX_RUNS): split the range")
        existing = {fire.scheduled_at: fire for fire in Fire.objects.filter(deployment=locked,
                                                                           scheduled_at__in=occurrences)}
        ran = set(DeploymentRun.objects.filter(fire_id__in=[f.pk for f in existing.values()]).values_list(
            "fire_id", flat=True))
        revived = [fire for fire in existing.values() if fire.status == Fire.Status.SKIPPED and fire.pk not in ran]
        new = [at for at in occurrences if at not in existing]
        budget = run_budgets([locked]).get(locked.pk) if locked.schedule_max_runs is not None else None
        if budget is not None and len(new) + len(revived) > budget:
            raise InvalidRequest(
                f"end: the range holds {len(new) + len(revived)} occurrences to run but the deployment has "
                f"{budget} run(s) left under schedule.max_runs (fires already scheduled included)")
        due = now + jitter_for(locked)
        fires = [Fire(deployment_id=locked.pk, scheduled_at=at, due_at=due, published_at=now, backfill=True,
                      run_id=ids.new_id("deployment_run")) for at in new]
        Fire.objects.bulk_create(fires, ignore_conflicts=True)
        for fire in revived:
            fire.status, fire.skip_reason, fire.backfill = Fire.Status.PENDING, "", True
            fire.due_at, fire.published_at, fire.lease_expires_at = due, now, None
            fire.run_id = fire.run_id or ids.new_id("deployment_run")
            fire.save(update_fields=["status", "skip_reason", "backfill", "due_at", "published_at",
                                     "lease_expires_at", "run_id", "updated_at"])
        written = list(Fire.objects.filter(pk__in=[f.pk for f in fires] + [f.pk for f in revived]).order_by("scheduled_at"))
        publish_after_commit([(fire.pk, fire.due_at, fire.deployment_id) for fire in written])
    logger.info("backfill of %d occurrence(s) scheduled (%d already had a run or a fire)", len(written),
                len(occurrences) - len(written), extra={"deployment_id": locked.pk})
    return written


def recover(now: datetime | None = None, *, limit: int = 500) -> int:
    """Step 4: re-publish fires whose message or worker was lost. Safe to run anywhere, any number
    of times: a worker only acts on a fire it can claim."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.FIRE_RECOVERY_GRACE_SECONDS)
    stale_pending = Q(status=Fire.Status.PENDING, due_at__lt=now - grace, published_at__lt=now - grace)
    expired_claim = Q(status=Fire.Status.CLAIMED, lease_expires_at__lt=now, published_at__lt=now - grace)
    # Back off: a fire is re-published again only after waiting, since its last publication, as long
    # as it was late at that publication (capped). A fire still pending because the workers are
    # behind has its message queued: re-publishing it every grace period flooded the broker and the
    # workers with duplicates (several per fire in a 30 s backlog) and stretched every tick.
    backed_off = Q(late_when_published__lt=F("since_published")) | Q(
        published_at__lt=now - grace * RECOVERY_BACKOFF_CAP
    )
    with transaction.atomic():
        stuck = list(
            Fire.objects.select_for_update(skip_locked=True)
            .alias(
                late_when_published=ExpressionWrapper(F("published_at") - F("due_at"), output_field=DurationField()),
                since_published=ExpressionWrapper(Value(now) - F("published_at"), output_field=DurationField()),
            )
            .filter(stale_pending | expired_claim, backed_off)
            .order_by("due_at")
            .values_list("pk", "status", "deployment_id")[:limit]
        )
        if stuck:
            Fire.objects.filter(pk__in=[pk for pk, _, _ in stuck]).update(published_at=now)
    for pk, status, deployment_id in stuck:
        metrics.FIRES_REPUBLISHED.labels(status).inc()
        with log_context(fire_id=pk, deployment_id=deployment_id):
            logger.warning("fire re-published by recovery (%s)", status)
    if stuck:
        publish([(pk, now, deployment_id) for pk, _, deployment_id in stuck], now)
    return len(stuck)


def _work_waiting(horizon: datetime, now: datetime) -> tuple[bool, bool]:
    """(a deployment is due by `horizon`, a fire may need the recovery sweep) in one indexed round
    trip, without the ORM: most ticks find neither, and then cost this one query. The second is a
    superset of what recover() selects (pending past its grace, or claimed with an expired lease)."""
    deployment, fire = Deployment._meta, Fire._meta
    grace = timedelta(seconds=settings.FIRE_RECOVERY_GRACE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT EXISTS (SELECT 1 FROM "{deployment.db_table}" WHERE "next_fire_at" <= %s), '
            f'EXISTS (SELECT 1 FROM "{fire.db_table}" WHERE ("status" = %s AND "due_at" < %s) '
            f'OR ("status" = %s AND "lease_expires_at" < %s))',
            [horizon, Fire.Status.PENDING.value, now - grace, Fire.Status.CLAIMED.value, now],
        )
        due, stale = cursor.fetchone()
    return bool(due), bool(stale)


def tick(now: datetime | None = None) -> TickResult:
    """One scheduler tick: claim due deployments in batches until none is left, publish, recover."""
    started = time.perf_counter()
    total = TickResult()
    lookahead = timedelta(seconds=settings.SCHEDULER_LOOKAHEAD_SECONDS)
    current = now or timezone.now()
    due, stale = _work_waiting(current + lookahead, current)
    while due:
        # Claim ahead by the lookahead; publish's countdown (from the real now) covers the wait.
        result = claim_due((now or timezone.now()) + lookahead)
        publish(result.fires)
        total.deployments += result.deployments
        total.fires.extend(result.fires)
        total.missed += result.missed
        if result.deployments < settings.SCHEDULER_BATCH_SIZE:
            break
    if stale:
        total.republished = recover(now)
    metrics.SCHEDULER_TICK.observe(time.perf_counter() - started)
    return total


def safe_tick() -> TickResult | None:
    """A tick that survives the database or broker being briefly down: log, drop the connection,
    and try again next tick (nothing is lost: the due rows are still due)."""
    close_old_connections()
    try:
        return tick()
    except Exception:
        logger.exception("scheduler tick failed; retrying next tick")
        try:
            connection.close()
        except Exception:  # noqa: BLE001 — the connection may already be gone
            pass
        return None


try:
    from django_celery_beat.schedulers import DatabaseScheduler
except Exception:  # pragma: no cover — beat is optional for the web process
    DatabaseScheduler = object


class FireScheduler(DatabaseScheduler):
    """`celery -A config beat` with this scheduler runs our tick every SCHEDULER_TICK_SECONDS and
    keeps django-celery-beat's periodic tasks (editable in the admin) for system jobs."""

    def tick(self, *args, **kwargs):
        now = time.monotonic()
        next_due = getattr(self, "_fire_next_tick", 0.0)
        if now >= next_due:
            self._fire_next_tick = now + settings.SCHEDULER_TICK_SECONDS
            safe_tick()
        try:
            remaining = super().tick(*args, **kwargs)
        except Exception:
            logger.exception("periodic task scheduler failed; retrying")
            close_old_connections()
            remaining = settings.SCHEDULER_TICK_SECONDS
        until_ours = max(0.0, self._fire_next_tick - time.monotonic())
        return min(remaining if remaining is not None else until_ours, until_ours)

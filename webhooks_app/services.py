"""Outgoing webhooks: the outbox, endpoints, and the delivery worker's steps.

The life of an event:

1. `events_record` — called by the deployments services and the fire path **inside their own
   transaction** — inserts one outbox row per event with one statement, and asks for a doorbell
   once that transaction commits. Nothing else: no endpoint is read (a per-process memo says which
   organizations listen at all), nothing crosses the network, so a fire never waits for webhooks.
   A change that rolls back takes its events with it; one that commits keeps them, whatever dies.
2. `events_fan_out` (the doorbell's `webhooks.dispatch` task, and the sweep) takes unsent events
   with `FOR UPDATE SKIP LOCKED`, writes one delivery per matching enabled endpoint, marks the
   events sent, commits, then publishes `webhooks.deliver(endpoint, [deliveries])`.
3. `deliveries_attempt` (the `webhooks.deliver` task, on the webhooks queue of its own) takes one
   of the endpoint's WEBHOOK_ENDPOINT_CONCURRENCY slots (so a slow endpoint never holds every
   worker thread), claims the deliveries with a conditional update and a lease, POSTs each signed
   payload in order of creation, and records every attempt; a failure is retried with exponential
   backoff and jitter until WEBHOOK_RETRY_FOR_SECONDS have passed; an endpoint failing for longer
   than WEBHOOK_DISABLE_AFTER_SECONDS is disabled with the reason.
4. `webhooks_sweep` (every WEBHOOK_SWEEP_SECONDS, from the scheduler) fans out events whose
   doorbell was lost, publishes retries that are due, and takes back deliveries whose worker died
   (lease expired). Redis is only a doorbell: every fact lives in the database, so a crash anywhere
   delays a delivery and never loses one. At least once: a receiver may see an event twice, always
   with the same `webhook-id`.
"""

import contextlib
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts_app.models import Organization, Workspace
from core import metrics
from core.crypto import decrypt, encrypt
from core.logging import log_context
from webhooks_app import transport
from webhooks_app.errors import EndpointLimitExceeded, UnsafeWebhookUrl
from webhooks_app.events import EVENT_TYPE_SET, TEST_EVENT, Event, payload
from webhooks_app.models import EXCERPT_BYTES, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks_app.selectors import subscriptions, webhook_endpoint_count
from webhooks_app.signing import Signer, new_secret

logger = logging.getLogger("webhooks")

MAX_ENDPOINTS_PER_ORGANIZATION = 32
FAN_OUT_LIMIT = 500
# Rounds one dispatch or sweep fans out before handing over (bounded work per task).
FAN_OUT_ROUNDS = 20
SAVE_TIME_DNS_SECONDS = 1.0

__all__ = ["Event", "events_record"]  # the part the rest of the service calls


# --- 1. the outbox -------------------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


_last_event_id = 0
_event_id_lock = threading.Lock()


def _event_ids(count: int) -> list[str]:
    """`evt_` + ULIDs, increasing within a process (the monotonic-ULID rule: within one millisecond
    the next one is the previous plus one), so ordering by id is the order events were recorded in
    a process — within one call and across calls — and by millisecond across processes."""
    global _last_event_id
    with _event_id_lock:
        base = max((time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big") >> 1,
                   _last_event_id + 1)
        _last_event_id = base + count - 1
    out = []
    for offset in range(count):
        value, chars = base + offset, []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        out.append("evt_" + "".join(reversed(chars)))
    return out


def events_record(*, events: Iterable[Event | tuple[str, str, str, str]]) -> int:
    """Write outbox rows for `events`, each `(type, organization_id, workspace_id, object_id)`, in
    the caller's transaction (call it inside the transaction that makes the change). Events of an
    organization with no enabled endpoint wanting that type are not written (the per-process memo
    of SubscriptionMemo: at most WEBHOOK_SUBSCRIPTION_CACHE_SECONDS behind another process's change).
    Returns how many rows were written."""
    wanted = subscriptions.get()
    rows = []
    for event_type, organization_id, workspace_id, object_id in events:
        if event_type not in EVENT_TYPE_SET:
            raise ValueError(f"unknown webhook event type {event_type!r}")
        types = wanted.get(organization_id)
        if types and event_type in types:
            rows.append((event_type, organization_id, workspace_id, object_id))
    if not rows:
        return 0
    now = timezone.now()
    WebhookEvent.objects.bulk_create(
        [
            WebhookEvent(id=event_id, type=event_type, organization_id=organization_id, workspace_id=workspace_id,
                         object_id=object_id, created_at=now)
            for event_id, (event_type, organization_id, workspace_id, object_id) in zip(_event_ids(len(rows)), rows)
        ]
    )
    transaction.on_commit(ring_doorbell, robust=True)
    return len(rows)


DOORBELL_MUTE_SECONDS = 5.0
_doorbell_muted_until = 0.0


def ring_doorbell() -> None:
    """Wake a delivery worker. Never retried nor waited for: a lost doorbell only delays the
    events until the next sweep. After a failure (the broker is down) this process stops ringing
    for DOORBELL_MUTE_SECONDS, so a Redis outage costs the fire path one connection attempt, not
    one per transaction."""
    global _doorbell_muted_until
    from webhooks_app.tasks import dispatch

    if time.monotonic() < _doorbell_muted_until:
        return
    try:
        dispatch.apply_async(queue=settings.WEBHOOK_QUEUE, retry=False)
    except Exception:  # noqa: BLE001 — the broker may be down; the sweep finds the events
        _doorbell_muted_until = time.monotonic() + DOORBELL_MUTE_SECONDS
        logger.warning("webhook doorbell not sent (broker unreachable); the sweep will deliver", exc_info=True)


# --- 2. fan-out ------------------------------------------------------------------------------------------


def _retry_window() -> timedelta:
    return timedelta(seconds=settings.WEBHOOK_RETRY_FOR_SECONDS)


def _endpoint_matches(endpoint_row, event_type: str, workspace_id: str) -> bool:
    _pk, endpoint_workspace_id, types = endpoint_row
    return event_type in (types or ()) and (endpoint_workspace_id is None or endpoint_workspace_id == workspace_id)


def events_fan_out(*, limit: int = FAN_OUT_LIMIT) -> tuple[int, list[tuple[str, list[int]]]]:
    """Turn up to `limit` unsent events (oldest first) into deliveries, in one transaction.
    Returns (events taken, [(endpoint id, delivery ids in event order)])."""
    now = timezone.now()
    with transaction.atomic():
        events = list(
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(fanned_out_at__isnull=True)
            .order_by("id")
            .values_list("id", "type", "organization_id", "workspace_id")[:limit]
        )
        if not events:
            return 0, []
        endpoints: dict[str, list] = {}
        for pk, organization_id, workspace_id, types in WebhookEndpoint.objects.filter(
            organization_id__in={organization_id for _, _, organization_id, _ in events},
            state=WebhookEndpoint.State.ENABLED,
        ).values_list("pk", "organization_id", "workspace_id", "enabled_events"):
            endpoints.setdefault(organization_id, []).append((pk, workspace_id, types))
        give_up_at = now + _retry_window()
        deliveries = [
            WebhookDelivery(event_id=event_id, endpoint_id=row[0], next_attempt_at=now, give_up_at=give_up_at,
                            published_at=now)
            for event_id, event_type, organization_id, workspace_id in events
            for row in endpoints.get(organization_id, ())
            if _endpoint_matches(row, event_type, workspace_id)
        ]
        if deliveries:
            WebhookDelivery.objects.bulk_create(deliveries, batch_size=1000)
        WebhookEvent.objects.filter(pk__in=[event_id for event_id, *_ in events]).update(fanned_out_at=now)
    groups: dict[str, list[int]] = {}
    for delivery in deliveries:
        groups.setdefault(delivery.endpoint_id, []).append(delivery.pk)
    return len(events), list(groups.items())


def deliveries_publish(groups: Iterable[tuple[str, list[int]]]) -> int:
    """Send `webhooks.deliver` messages, at most WEBHOOK_DELIVERY_BATCH_SIZE deliveries each and
    WEBHOOK_ENDPOINT_CONCURRENCY per endpoint (as many as can run at once: each goes on with the
    endpoint's next due deliveries). A message that cannot be sent is left to the sweep (the
    deliveries are in the database)."""
    from config.celery import app
    from webhooks_app.tasks import deliver

    size = max(1, settings.WEBHOOK_DELIVERY_BATCH_SIZE)
    per_endpoint = max(1, settings.WEBHOOK_ENDPOINT_CONCURRENCY)
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for endpoint_id, ids in groups:
                for start in range(0, min(len(ids), size * per_endpoint), size):
                    deliver.apply_async((endpoint_id, ids[start:start + size]), queue=settings.WEBHOOK_QUEUE,
                                        producer=producer, retry=False)
                    sent += 1
    except Exception:  # noqa: BLE001 — broker down: the sweep re-publishes after WEBHOOK_REPUBLISH_GRACE_SECONDS
        logger.warning("webhook deliveries not published (broker unreachable); the sweep will retry", exc_info=True)
    return sent


def events_dispatch(*, rounds: int = FAN_OUT_ROUNDS) -> int:
    """The doorbell's work: fan out until no unsent event is left (or `rounds` batches), publishing
    each batch's deliveries as soon as it commits. Returns how many events were fanned out."""
    total = 0
    for _ in range(rounds):
        taken, groups = events_fan_out()
        total += taken
        deliveries_publish(groups)
        if taken < FAN_OUT_LIMIT:
            break
    return total


# --- 3. delivery ----------------------------------------------------------------------------------------


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter: base · 2^(attempts−1), capped, then a random point in its
    upper half (so retries of many deliveries spread out instead of arriving together)."""
    base = settings.WEBHOOK_RETRY_BASE_SECONDS
    ceiling = settings.WEBHOOK_RETRY_MAX_INTERVAL_SECONDS
    delay = min(ceiling, base * (2 ** min(max(attempts - 1, 0), 40)))
    return delay / 2 + random.uniform(0, delay / 2)


def _signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    secrets = [decrypt(endpoint.signing_secret)]
    if (endpoint.previous_signing_secret and endpoint.previous_secret_expires_at is not None
            and endpoint.previous_secret_expires_at > now):
        secrets.append(decrypt(endpoint.previous_signing_secret))
    return secrets


def _claim(endpoint_id: str, delivery_ids: list[int] | None, now: datetime) -> list[WebhookDelivery]:
    """Take deliveries still pending and due — these ids, or (None) the endpoint's oldest —:
    pending → delivering with a lease. Rows another worker holds, or that were delivered, failed or
    rescheduled since the message was sent, are left."""
    lease = timedelta(seconds=settings.WEBHOOK_DELIVERY_LEASE_SECONDS)
    due = WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=WebhookDelivery.Status.PENDING,
                                         next_attempt_at__lte=now + timedelta(seconds=1))
    if delivery_ids is not None:
        due = due.filter(pk__in=delivery_ids)
    with transaction.atomic():
        rows = list(
            due.select_for_update(skip_locked=True, of=("self",)).select_related("event")
            .order_by("event_id")[: max(1, settings.WEBHOOK_DELIVERY_BATCH_SIZE)]
        )
        if rows:
            WebhookDelivery.objects.filter(pk__in=[row.pk for row in rows]).update(
                status=WebhookDelivery.Status.DELIVERING, lease_expires_at=now + lease
            )
    return rows


def _event_body(event: WebhookEvent) -> bytes:
    return payload(event_id=event.id, event_type=event.type, created_at=event.created_at,
                   organization_id=event.organization_id, workspace_id=event.workspace_id, object_id=event.object_id)


def _excerpt(raw: bytes) -> str:
    # PostgreSQL text cannot hold NUL; the excerpt is for a person to read.
    return raw[:EXCERPT_BYTES].decode("utf-8", "replace").replace("\x00", "\ufffd")


def _result_label(outcome: transport.Outcome) -> str:
    if outcome.succeeded:
        return "success"
    if outcome.error.startswith("target refused"):
        return "refused"
    if outcome.error.startswith("timed out"):
        return "timeout"
    return "failure"


class EndpointSlots:
    """At most WEBHOOK_ENDPOINT_CONCURRENCY batches in flight per endpoint, across every worker
    process: a slow or dead endpoint can hold that many threads, never all of them, so the other
    endpoints' deliveries go on. On PostgreSQL a slot is a session advisory lock (released by the
    server if the worker dies); elsewhere (SQLite under `make run`, one webhooks worker) a lock of
    this process."""

    NAMESPACE = 0x5E4D  # first key of our advisory locks

    def __init__(self):
        self._local: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(endpoint_id: str, slot: int) -> int:
        value = zlib.crc32(f"{endpoint_id}:{slot}".encode())
        return value - 2**32 if value >= 2**31 else value

    @contextlib.contextmanager
    def hold(self, endpoint_id: str):
        """Yields True with a slot held, False when every slot is busy."""
        slots = max(1, settings.WEBHOOK_ENDPOINT_CONCURRENCY)
        if connection.vendor != "postgresql":
            with self._lock:
                taken = self._local.get(endpoint_id, 0) < slots
                if taken:
                    self._local[endpoint_id] = self._local.get(endpoint_id, 0) + 1
            try:
                yield taken
            finally:
                if taken:
                    with self._lock:
                        self._local[endpoint_id] -= 1
            return
        held = None
        with connection.cursor() as cursor:
            for slot in range(slots):
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [self.NAMESPACE, self._key(endpoint_id, slot)])
                if cursor.fetchone()[0]:
                    held = slot
                    break
        try:
            yield held is not None
        finally:
            if held is not None:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [self.NAMESPACE, self._key(endpoint_id, held)])


endpoint_slots = EndpointSlots()


def deliveries_attempt(*, endpoint_id: str, delivery_ids: list[int]) -> dict[str, int]:
    """One `webhooks.deliver` message.

    1. Take one of the endpoint's slots. None free: return — the deliveries stay pending, and a
       holder takes the endpoint's due deliveries before it lets go (step 4).
    2. Claim these deliveries, POST each in order of creation, record (`_attempt_batch`).
    3. While the last batch went through and the lease budget allows, claim the endpoint's next due
       deliveries, oldest first, and go on.
    4. Let go of the slot, then hand over: if deliveries of the endpoint are due (left by messages
       that found every slot busy, or by the budget), publish one message for them.
    """
    started = time.monotonic()
    counts = {"claimed": 0, "succeeded": 0, "failed": 0, "released": 0, "busy": 0}
    with endpoint_slots.hold(endpoint_id) as held:
        if not held:
            counts["busy"] = 1
            return counts
        ids: list[int] | None = list(delivery_ids)
        while True:
            batch_counts, go_on = _attempt_batch(endpoint_id, ids)
            for name, value in batch_counts.items():
                counts[name] += value
            if not go_on or time.monotonic() - started > _budget():
                break
            ids = None
    _hand_over(endpoint_id)
    return counts


def _budget() -> float:
    """Seconds after its claim in which a batch may still start an attempt: the lease is never
    outlived (an attempt lasts at most WEBHOOK_TIMEOUT_SECONDS)."""
    return settings.WEBHOOK_DELIVERY_LEASE_SECONDS - settings.WEBHOOK_TIMEOUT_SECONDS - 1.0


def _hand_over(endpoint_id: str) -> None:
    due = list(
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=WebhookDelivery.Status.PENDING,
                                       next_attempt_at__lte=timezone.now())
        .order_by("event_id").values_list("pk", flat=True)[: max(1, settings.WEBHOOK_DELIVERY_BATCH_SIZE)]
    )
    if due:
        deliveries_publish([(endpoint_id, due)])


def _attempt_batch(endpoint_id: str, delivery_ids: list[int] | None) -> tuple[dict, bool]:
    """Claim, POST each in order of creation, record. Returns (counts, the endpoint can take more).

    A response that is not 2xx does not stop the batch (the endpoint answers, if wrongly); no
    response at all (refused target, connection failure, timeout) does: the rest go back to pending
    with the same retry time, so a dead or slow endpoint costs one timeout per retry, not one per
    event. An attempt starts only if it can end before the claim's lease does; what is left goes
    back to pending, due at once."""
    now = timezone.now()
    counts = {"claimed": 0, "succeeded": 0, "failed": 0, "released": 0}
    claimed = _claim(endpoint_id, delivery_ids, now)
    if not claimed:
        return counts, False
    counts["claimed"] = len(claimed)
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:  # deleted since: its deliveries went with it
        return counts, False
    if not endpoint.is_enabled:
        _fail_for_disabled_endpoint(claimed, now)
        counts["failed"] = len(claimed)
        return counts, False
    signer = Signer(_signing_secrets(endpoint, now))
    claimed_at = time.monotonic()
    batch = transport.Batch()  # one DNS answer (checked) and a kept-alive connection for the batch
    attempted: list[tuple[WebhookDelivery, datetime, transport.Outcome]] = []
    released: list[WebhookDelivery] = []
    stopped_by_failure = False
    with log_context(organization_id=endpoint.organization_id):
        try:
            for index, delivery in enumerate(claimed):
                if index and time.monotonic() - claimed_at > _budget():
                    released = claimed[index:]
                    break
                attempt = _attempt(endpoint, delivery, signer, batch)
                attempted.append(attempt)
                if not attempt[2].answered:
                    released = claimed[index + 1:]
                    stopped_by_failure = True
                    break
        finally:
            batch.close()
        counts.update(_record(endpoint, attempted, released, stopped_by_failure))
    return counts, not stopped_by_failure and not released


def _attempt(endpoint: WebhookEndpoint, delivery: WebhookDelivery, signer: Signer,
             batch: transport.Batch) -> tuple[WebhookDelivery, datetime, transport.Outcome]:
    """One signed POST of one delivery (signed now: `webhook-timestamp` is the attempt's)."""
    body = _event_body(delivery.event)
    headers = signer.headers(message_id=delivery.event_id, body=body, timestamp=int(time.time()))
    attempt_started = timezone.now()
    outcome = transport.post(
        endpoint.url, body=body, headers=headers,
        connect_timeout=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS, total_timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        excerpt_bytes=EXCERPT_BYTES, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS, batch=batch,
    )
    metrics.WEBHOOK_DELIVERIES.labels(_result_label(outcome)).inc()
    logger.log(
        logging.INFO if outcome.succeeded else logging.WARNING, "webhook attempt: %s",
        outcome.status if outcome.succeeded else outcome.error,
        extra={"event_id": delivery.event_id, "delivery_id": delivery.pk, "endpoint_id": endpoint.pk,
               "attempt": delivery.attempts + 1, "status_code": outcome.status, "duration_ms": outcome.duration_ms},
    )
    return delivery, attempt_started, outcome


def _record(endpoint: WebhookEndpoint, attempted, released: list[WebhookDelivery],
            stopped_by_failure: bool) -> dict[str, int]:
    """Every attempt, each delivery's new state and the endpoint's health, in one transaction."""
    now = timezone.now()
    attempts, changed = [], []
    succeeded = failed = 0
    next_retry = None
    for delivery, attempt_started, outcome in attempted:
        delivery.attempts += 1
        attempts.append(WebhookAttempt(
            delivery_id=delivery.pk, number=delivery.attempts, started_at=attempt_started,
            duration_ms=outcome.duration_ms, status_code=outcome.status, response_excerpt=_excerpt(outcome.excerpt),
            error=outcome.error[:1000],
        ))
        delivery.last_attempt_at = attempt_started
        delivery.last_status_code = outcome.status
        delivery.last_error = outcome.error[:1000]
        delivery.lease_expires_at = None
        if outcome.succeeded:
            delivery.status = WebhookDelivery.Status.SUCCEEDED
            delivery.delivered_at = now
            succeeded += 1
        else:
            retry_at = now + timedelta(seconds=retry_delay(delivery.attempts))
            if retry_at > delivery.give_up_at:
                delivery.status = WebhookDelivery.Status.FAILED
                metrics.WEBHOOK_DELIVERIES.labels("gave_up").inc()
                logger.warning("webhook delivery failed for good after %s attempts", delivery.attempts,
                               extra={"delivery_id": delivery.pk, "event_id": delivery.event_id,
                                      "endpoint_id": endpoint.pk, "error": delivery.last_error})
            else:
                delivery.status = WebhookDelivery.Status.PENDING
                delivery.next_attempt_at = retry_at
                delivery.published_at = None
                next_retry = retry_at
            failed += 1
        changed.append(delivery)
    for delivery in released:
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.lease_expires_at = None
        if stopped_by_failure:
            # Not attempted: tried again with the one that failed (the sweep publishes them when due).
            delivery.next_attempt_at = next_retry or now
            delivery.published_at = None
        else:  # out of lease budget: due at once, handed over when the slot is let go
            delivery.next_attempt_at = now
            delivery.published_at = now
        changed.append(delivery)
    try:
        with transaction.atomic():
            WebhookAttempt.objects.bulk_create(attempts)
            _save_deliveries(changed)
            _endpoint_health(endpoint, now, succeeded, failed, attempted)
    except IntegrityError:
        if WebhookEndpoint.objects.filter(pk=endpoint.pk).exists():
            raise
        return {"succeeded": 0, "failed": 0, "released": 0}  # deleted meanwhile, with its deliveries
    return {"succeeded": succeeded, "failed": failed, "released": len(released)}


def _endpoint_health(endpoint: WebhookEndpoint, now: datetime, succeeded: int, failed: int, attempted) -> None:
    """A success ends the endpoint's failure streak; a batch of failures only extends it."""
    if succeeded:
        _endpoint_recovered(endpoint)
    elif failed:
        _endpoint_failed(endpoint, now, attempted[-1][2].error)


_DELIVERY_STATE = (
    ("status", "varchar"), ("attempts", "integer"), ("last_attempt_at", "timestamptz"),
    ("last_status_code", "integer"), ("last_error", "text"), ("lease_expires_at", "timestamptz"),
    ("delivered_at", "timestamptz"), ("next_attempt_at", "timestamptz"), ("published_at", "timestamptz"),
)


def _save_deliveries(rows: list[WebhookDelivery]) -> None:
    """Each delivery's new state in one statement. On PostgreSQL an UPDATE … FROM unnest(…):
    bulk_update's CASE WHEN per row and field cost ~7 ms of CPU per delivery (most of a batch)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        WebhookDelivery.objects.bulk_update(rows, [name for name, _ in _DELIVERY_STATE], batch_size=100)
        return
    table = WebhookDelivery._meta.db_table
    assignments = ", ".join(f'"{name}" = v."{name}"' for name, _ in _DELIVERY_STATE)
    arrays = ", ".join(f"%s::{kind}[]" for _, kind in (("id", "bigint"), *_DELIVERY_STATE))
    columns = ", ".join(f'"{name}"' for name in ("id", *(name for name, _ in _DELIVERY_STATE)))
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" AS d SET {assignments} FROM unnest({arrays}) AS v({columns}) WHERE d."id" = v."id"',
            [[row.pk for row in rows], *([getattr(row, name) for row in rows] for name, _ in _DELIVERY_STATE)],
        )


def _endpoint_recovered(endpoint: WebhookEndpoint) -> None:
    if endpoint.failing_since is not None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=False).update(failing_since=None)


def _endpoint_failed(endpoint: WebhookEndpoint, now: datetime, error: str) -> None:
    """Remember when the failures began; past WEBHOOK_DISABLE_AFTER_SECONDS of nothing but failures,
    disable the endpoint with the reason."""
    since = endpoint.failing_since
    if since is None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
        since = now
    limit = settings.WEBHOOK_DISABLE_AFTER_SECONDS
    if (now - since).total_seconds() < limit:
        return
    reason = (f"every delivery failed for more than {_duration(limit)} (since {since:%Y-%m-%d %H:%M} UTC); "
              f"last error: {error[:300]}")
    disabled = WebhookEndpoint.objects.filter(pk=endpoint.pk, state=WebhookEndpoint.State.ENABLED).update(
        state=WebhookEndpoint.State.DISABLED, disabled_reason=reason, updated_at=now
    )
    if disabled:
        metrics.WEBHOOKS_DISABLED.inc()
        logger.warning("webhook endpoint disabled: %s", reason, extra={"endpoint_id": endpoint.pk})
        transaction.on_commit(subscriptions.forget)


def _duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 3600 == 0:
        return f"{seconds / 86400:g} days" if seconds != 86400 else "1 day"
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    return f"{seconds:g} seconds"


def _fail_for_disabled_endpoint(claimed: list[WebhookDelivery], now: datetime) -> None:
    """Events that come while an endpoint is disabled are not delivered (as the SDK documents);
    they stay in the admin, where a person can redeliver them."""
    WebhookDelivery.objects.filter(pk__in=[row.pk for row in claimed]).update(
        status=WebhookDelivery.Status.FAILED, lease_expires_at=None, last_error="endpoint disabled", last_attempt_at=now
    )


# --- 4. the sweep ---------------------------------------------------------------------------------------

_last_cleanup = 0.0
CLEANUP_EVERY_SECONDS = 60
CLEANUP_BATCH = 1000


def webhooks_sweep(*, limit: int = 500) -> dict[str, int]:
    """Everything the doorbells missed. Safe anywhere, any number of times at once."""
    result = {"fanned_out": events_dispatch(rounds=5), "due": 0, "expired": 0, "cleaned": 0}
    now = timezone.now()
    grace = timedelta(seconds=settings.WEBHOOK_REPUBLISH_GRACE_SECONDS)
    due_filter = Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now) & (
        Q(published_at__isnull=True) | Q(published_at__lt=now - grace)
    )
    with transaction.atomic():
        due = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(due_filter)
            .order_by("next_attempt_at")
            .values_list("pk", "endpoint_id")[:limit]
        )
        if due:
            WebhookDelivery.objects.filter(pk__in=[pk for pk, _ in due]).update(published_at=now)
        expired = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(status=WebhookDelivery.Status.DELIVERING, lease_expires_at__lt=now)
            .order_by("lease_expires_at")
            .values_list("pk", "endpoint_id", "event_id")[:limit]
        )
        if expired:
            # The worker that held them died mid-delivery: deliver again (same event, same webhook-id).
            WebhookDelivery.objects.filter(pk__in=[pk for pk, _, _ in expired]).update(
                status=WebhookDelivery.Status.PENDING, lease_expires_at=None, next_attempt_at=now, published_at=now
            )
    for pk, endpoint_id, event_id in expired:
        logger.warning("webhook delivery taken back from a lost worker",
                       extra={"delivery_id": pk, "endpoint_id": endpoint_id, "event_id": event_id})
    groups: dict[str, list[int]] = {}
    for pk, endpoint_id, *_ in [*due, *expired]:
        groups.setdefault(endpoint_id, []).append(pk)
    deliveries_publish(sorted(groups.items()))
    result["due"], result["expired"] = len(due), len(expired)
    result["cleaned"] = _clean_up_old_events(now)
    return result


def _clean_up_old_events(now: datetime) -> int:
    """Forget events (with their deliveries and attempts) older than WEBHOOK_RETENTION_DAYS, a batch
    at a time, at most once a minute per process."""
    global _last_cleanup
    if time.monotonic() - _last_cleanup < CLEANUP_EVERY_SECONDS:
        return 0
    _last_cleanup = time.monotonic()
    cutoff = now - timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    ids = list(WebhookEvent.objects.filter(created_at__lt=cutoff).order_by("created_at")
               .values_list("pk", flat=True)[:CLEANUP_BATCH])
    if not ids:
        return 0
    WebhookAttempt.objects.filter(delivery__event_id__in=ids).delete()
    WebhookDelivery.objects.filter(event_id__in=ids).delete()
    WebhookEvent.objects.filter(pk__in=ids).delete()
    return len(ids)


# --- endpoints -------------------------------------------------------------------------------------------


def webhook_url_check(url: str) -> str:
    """Refuse, when saved, what will certainly be refused at delivery (WEBHOOK_ALLOW_PRIVATE_TARGETS
    off): a bad scheme, credentials, a private or loopback IP literal, `localhost`, or a name that
    resolves to such an address now. A name that does not resolve yet is accepted: every delivery
    resolves and checks again."""
    try:
        target = transport.parse_target(url)
    except transport.TargetRefused as exc:
        raise UnsafeWebhookUrl(str(exc))
    if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS:
        return url
    host = target.host.rstrip(".").lower()
    literal = transport.literal_address(host)
    if literal is not None:
        addresses = [literal]
    elif host == "localhost" or host.endswith(".localhost"):
        raise UnsafeWebhookUrl(f"{host[:100]} is a loopback name; webhook targets must be public")
    else:
        try:
            addresses = transport.resolve_within(target.host, target.port, SAVE_TIME_DNS_SECONDS)
        except transport.AttemptFailed:
            return url
    try:
        transport.check_addresses(target.host, addresses)
    except transport.TargetRefused as exc:
        raise UnsafeWebhookUrl(f"{exc}; webhook targets must be public")
    return url


def _forget_subscriptions() -> None:
    subscriptions.forget()
    transaction.on_commit(subscriptions.forget)


def webhook_endpoint_create(
    *, organization: Organization, workspace: Workspace | None, url: str, enabled_events: list[str],
    name: str = "", description: str = "",
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (returned here only; stored encrypted). At most
    MAX_ENDPOINTS_PER_ORGANIZATION per organization, enabled or not, under concurrent creates too."""
    webhook_url_check(url)
    secret = new_secret()
    with transaction.atomic():
        Organization.objects.select_for_update(no_key=True).filter(pk=organization.pk).first()
        if webhook_endpoint_count(organization_id=organization.pk) >= MAX_ENDPOINTS_PER_ORGANIZATION:
            raise EndpointLimitExceeded(limit=MAX_ENDPOINTS_PER_ORGANIZATION)
        endpoint = WebhookEndpoint.objects.create(
            organization=organization, workspace=workspace, url=url, name=name or "",
            description=description or "", enabled_events=_unique(enabled_events), signing_secret=encrypt(secret),
        )
        _forget_subscriptions()
    return endpoint, secret


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, data: dict) -> WebhookEndpoint:
    """Field by field; a key absent from `data` keeps the field. `enabled_events` replaces the set
    (an empty list keeps it). `state`: "enabled" resumes deliveries and clears the reason and the
    failure streak; "disabled" stops them (no reason: a person did it)."""
    if "url" in data:
        webhook_url_check(data["url"])
    with transaction.atomic():
        endpoint.refresh_from_db(from_queryset=WebhookEndpoint.objects.select_for_update())
        fields = ["updated_at"]
        for name in ("url", "name", "description"):
            if name in data:
                setattr(endpoint, name, data[name] or "")
                fields.append(name)
        if data.get("enabled_events"):
            endpoint.enabled_events = _unique(data["enabled_events"])
            fields.append("enabled_events")
        state = data.get("state")
        if state == WebhookEndpoint.State.ENABLED and not endpoint.is_enabled:
            endpoint.state, endpoint.disabled_reason, endpoint.failing_since = state, "", None
            fields += ["state", "disabled_reason", "failing_since"]
        elif state == WebhookEndpoint.State.DISABLED and endpoint.is_enabled:
            endpoint.state, endpoint.disabled_reason = state, ""
            fields += ["state", "disabled_reason"]
        endpoint.save(update_fields=fields)
        _forget_subscriptions()
    return endpoint


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    return webhook_endpoint_update(endpoint=endpoint, data={"state": WebhookEndpoint.State.ENABLED})


def webhook_endpoint_disable(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    return webhook_endpoint_update(endpoint=endpoint, data={"state": WebhookEndpoint.State.DISABLED})


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> str:
    """Delete the endpoint with its deliveries and their attempts. Returns its id."""
    pk = endpoint.pk
    with transaction.atomic():
        WebhookAttempt.objects.filter(delivery__endpoint_id=pk).delete()
        WebhookDelivery.objects.filter(endpoint_id=pk).delete()
        WebhookEndpoint.objects.filter(pk=pk).delete()
        _forget_subscriptions()
    return pk


def webhook_endpoint_regenerate_secret(*, endpoint: WebhookEndpoint) -> str:
    """A new signing secret (returned here only). The previous one keeps signing too for
    WEBHOOK_SECRET_ROTATION_GRACE_SECONDS, so receivers can switch without losing a delivery."""
    secret = new_secret()
    now = timezone.now()
    with transaction.atomic():
        endpoint.refresh_from_db(from_queryset=WebhookEndpoint.objects.select_for_update())
        endpoint.previous_signing_secret = endpoint.signing_secret
        endpoint.previous_secret_expires_at = now + timedelta(seconds=settings.WEBHOOK_SECRET_ROTATION_GRACE_SECONDS)
        endpoint.signing_secret = encrypt(secret)
        endpoint.save(update_fields=["signing_secret", "previous_signing_secret", "previous_secret_expires_at",
                                     "updated_at"])
    return secret


# --- admin actions -----------------------------------------------------------------------------------------


def webhook_endpoint_send_test_event(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `webhook_endpoint.test` event (data.id = the endpoint) to this endpoint alone, delivered
    like any other: signed, retried, every attempt recorded."""
    now = timezone.now()
    workspace_id = endpoint.workspace_id or (
        Workspace.objects.filter(organization_id=endpoint.organization_id, is_default=True)
        .values_list("pk", flat=True).first() or ""
    )
    with transaction.atomic():
        event = WebhookEvent.objects.create(
            id=_event_ids(1)[0], type=TEST_EVENT, organization_id=endpoint.organization_id,
            workspace_id=workspace_id, object_id=endpoint.pk, created_at=now, fanned_out_at=now,
        )
        delivery = WebhookDelivery.objects.create(
            event=event, endpoint=endpoint, next_attempt_at=now, give_up_at=now + _retry_window(), published_at=now
        )
        transaction.on_commit(lambda: deliveries_publish([(endpoint.pk, [delivery.pk])]), robust=True)
    return delivery


def webhook_delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Try a delivery again now (same event, same `webhook-id`), with a fresh retry window; its
    earlier attempts stay recorded. A delivery being attempted right now is left alone."""
    now = timezone.now()
    with transaction.atomic():
        updated = WebhookDelivery.objects.filter(pk=delivery.pk).exclude(
            status=WebhookDelivery.Status.DELIVERING
        ).update(status=WebhookDelivery.Status.PENDING, next_attempt_at=now, give_up_at=now + _retry_window(),
                 published_at=now, lease_expires_at=None)
        if updated:
            endpoint_id = delivery.endpoint_id
            transaction.on_commit(lambda: deliveries_publish([(endpoint_id, [delivery.pk])]), robust=True)
    delivery.refresh_from_db()
    return delivery

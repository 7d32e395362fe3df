"""Real webhooks worker and scheduler processes against PostgreSQL and Redis, a real receiver in the
test process: a receiver that is down and comes back gets every event; a worker SIGKILLed in the
middle of a delivery leaves it to be delivered again, with the same `webhook-id`."""

import threading
import time

import anthropic
import pytest
from django.db import transaction

from tests.e2e.procs import Processes
from tests.webhooks.helpers import ALL_EVENTS, Reply
from webhooks_app import events, services
from webhooks_app.models import WebhookDelivery, WebhookEvent

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RECEIVER_DOWN_SECONDS = 60
SDK = anthropic.Anthropic(api_key="unused", base_url="http://127.0.0.1:9")
WORKER_ENV = {
    "WEBHOOK_ALLOW_PRIVATE_TARGETS": "1",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "WEBHOOK_RETRY_MAX_INTERVAL_SECONDS": "2",
    "WEBHOOK_SWEEP_SECONDS": "1",
    "WEBHOOK_TIMEOUT_SECONDS": "3",
    "WEBHOOK_DELIVERY_LEASE_SECONDS": "5",
    "WEBHOOK_SUBSCRIPTION_CACHE_SECONDS": "0",
}


@pytest.fixture
def procs(settings):
    processes = Processes(**WORKER_ENV)
    # Deliveries, doorbells and the scheduler's sweep all go to this test's own queue.
    processes.env["WEBHOOK_QUEUE"] = processes.queue
    settings.WEBHOOK_QUEUE = processes.queue
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 0
    yield processes
    processes.stop_all()


def start_webhooks_worker(procs, name="webhooks"):
    procs.start_worker(name=name, concurrency=4, pool="threads")
    procs.wait_for_log(name, "ready", timeout=60)


def record(tenant, object_id: str, event_type=events.DEPLOYMENT_RUN_FAILED) -> str:
    """One event, in a transaction of its own (its commit rings the doorbell)."""
    with transaction.atomic():
        services.events_record(events=[(event_type, tenant.organization.pk, tenant.workspace.pk, object_id)])
    return WebhookEvent.objects.get(object_id=object_id, type=event_type).pk


def test_a_receiver_down_for_a_while_gets_every_event_when_it_comes_back(tenant, receiver, procs):
    _, secret = services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=receiver.url,
                                                 enabled_events=ALL_EVENTS)
    start_webhooks_worker(procs)
    procs.start_scheduler()
    receiver.stop()
    down_at = time.monotonic()
    recorded = []
    for i in range(30):
        recorded.append(record(tenant, f"drun_{i:02d}"))
        time.sleep(0.15)
    time.sleep(max(0.0, RECEIVER_DOWN_SECONDS - (time.monotonic() - down_at)))  # retries failing meanwhile
    assert receiver.ids() == []
    failed_attempts = WebhookDelivery.objects.filter(attempts__gte=1, status="pending").count()
    assert failed_attempts >= 1
    receiver.start()

    requests = receiver.wait_for(30, timeout=60, distinct=True)
    assert set(receiver.ids()) == set(recorded)
    for request in requests:
        event = SDK.beta.webhooks.unwrap(request.body.decode(), headers=request.headers, key=secret)
        assert event.id == request.webhook_id and event.data.type == events.DEPLOYMENT_RUN_FAILED
    deadline = time.monotonic() + 10
    while WebhookDelivery.objects.exclude(status="succeeded").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert WebhookDelivery.objects.filter(status="succeeded").count() == 30
    assert max(WebhookDelivery.objects.values_list("attempts", flat=True)) >= 2


def test_a_delivery_interrupted_by_a_killed_worker_is_delivered_again_with_the_same_webhook_id(
        tenant, receiver, procs):
    _, secret = services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=receiver.url,
                                                 enabled_events=ALL_EVENTS)
    in_flight, release = threading.Event(), threading.Event()

    def reply(request):
        if not in_flight.is_set():
            in_flight.set()
            release.wait(timeout=20)  # hold the first request open until the worker is dead
        return Reply(200, b"ok")

    receiver.reply = reply
    start_webhooks_worker(procs, "webhooks")
    procs.start_scheduler()
    event_id = record(tenant, "depl_killed", events.DEPLOYMENT_PAUSED)
    assert in_flight.wait(timeout=30), "the delivery never reached the receiver"
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "delivering"

    procs.kill("webhooks")  # SIGKILL, mid-request
    release.set()
    start_webhooks_worker(procs, "webhooks-2")

    requests = receiver.wait_for(2, timeout=40)
    assert [r.webhook_id for r in requests[:2]] == [event_id, event_id]
    event = SDK.beta.webhooks.unwrap(requests[1].body.decode(), headers=requests[1].headers, key=secret)
    assert (event.id, event.data.type, event.data.id) == (event_id, events.DEPLOYMENT_PAUSED, "depl_killed")
    deadline = time.monotonic() + 10
    while WebhookDelivery.objects.get().status != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.2)
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"
    assert list(delivery.attempt_log.values_list("status_code", flat=True)) == [200]
    assert "taken back from a lost worker" in procs.log_text("webhooks-2") + procs.log_text("scheduler")


def test_a_slow_endpoint_holds_one_thread_and_never_delays_another_endpoint(tenant, receiver, procs):
    from tests.webhooks.helpers import Receiver

    procs.env.update(WEBHOOK_ENDPOINT_CONCURRENCY="1", WEBHOOK_DELIVERY_BATCH_SIZE="1", WEBHOOK_TIMEOUT_SECONDS="10",
                     WEBHOOK_DELIVERY_LEASE_SECONDS="60")
    slow = Receiver()
    try:
        slow.reply = lambda request: Reply(200, b"eventually", delay=3)
        services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=slow.url,
                                         enabled_events=[events.DEPLOYMENT_RUN_STARTED])
        _, secret = services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                                     url=receiver.url, enabled_events=[events.DEPLOYMENT_PAUSED])
        procs.start_worker(name="webhooks", concurrency=3, pool="threads")
        procs.wait_for_log("webhooks", "ready", timeout=60)
        for i in range(8):
            record(tenant, f"drun_slow_{i}", events.DEPLOYMENT_RUN_STARTED)
        slow.wait_for(1, timeout=20)
        fast_id = record(tenant, "depl_fast", events.DEPLOYMENT_PAUSED)
        [request] = receiver.wait_for(1, timeout=40)
        assert request.webhook_id == fast_id
        SDK.beta.webhooks.unwrap(request.body.decode(), headers=request.headers, key=secret)
        # One slot: the slow endpoint gets one request at a time (3 s each), and the fast endpoint's
        # event, recorded after all 8 slow ones, does not queue behind them. Without the slots the 3
        # threads take the slow messages first and the fast event arrives after 6 to 8 slow requests.
        before_fast = [r for r in slow.wait_for(8, timeout=1) if r.at < request.at]
        assert 1 <= len(before_fast) <= 3, len(before_fast)
    finally:
        slow.stop()

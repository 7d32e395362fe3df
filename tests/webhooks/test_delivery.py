"""Delivery to a real HTTP receiver in the test process: every event type arrives once per change
and verifies with the official SDK's `unwrap`; retries, give-up, auto-disable, secret rotation,
timeouts and bounded reads; every attempt recorded."""

import json
import time
from datetime import timedelta

import anthropic
import pytest
from django.utils import timezone
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import WebhookVerificationError

from deployments_app import services as deployment_services
from tests.deployments.helpers import WEEKLY
from tests.factories import USER_MESSAGE, make_agent, make_environment
from tests.webhooks.helpers import ALL_EVENTS, Reply, pump, retry_now
from webhooks_app import events, services
from webhooks_app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks_app.signing import new_secret

pytestmark = [pytest.mark.django_db]

SDK = anthropic.Anthropic(api_key="unused", base_url="http://127.0.0.1:9")
TOKEN = "ghp_WEBHOOKtestTOKEN0123456789abcdefghij"


@pytest.fixture(autouse=True)
def setup(inline, private_targets, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 2.0
    settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS = 1.0


def subscribe(tenant, receiver, enabled_events=ALL_EVENTS, **kwargs):
    return services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=receiver.url,
                                            enabled_events=enabled_events, **kwargs)


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unwrap(request, secret):
    return SDK.beta.webhooks.unwrap(request.body.decode(), headers=request.headers, key=secret)


def test_every_event_type_arrives_once_per_change_and_verifies_with_the_sdk(tenant, receiver):
    endpoint, secret = subscribe(tenant, receiver)
    agent, environment = make_agent(tenant), make_environment(tenant)
    deployment = deployment_services.deployment_create(
        organization=tenant.organization, workspace=tenant.workspace, name="Weekly", agent=agent.id,
        environment_id=environment.id, initial_events=[USER_MESSAGE], schedule=WEEKLY,
        resources=[{"type": "github_repository", "url": "https://github.com/acme/app", "authorization_token": TOKEN}],
    )
    deployment_services.deployment_update(deployment=deployment, data={"name": "Renamed"})
    deployment_services.deployment_pause(deployment=deployment)
    deployment_services.deployment_unpause(deployment=deployment)
    org, ws = tenant.organization.pk, tenant.workspace.pk
    services.events_record(events=[(events.DEPLOYMENT_RUN_STARTED, org, ws, "drun_ok"),
                                   (events.DEPLOYMENT_RUN_SUCCEEDED, org, ws, "drun_ok"),
                                   (events.DEPLOYMENT_RUN_STARTED, org, ws, "drun_bad"),
                                   (events.DEPLOYMENT_RUN_FAILED, org, ws, "drun_bad")])
    deployment_services.deployment_archive(deployment=deployment)
    assert pump() == 9

    requests = receiver.wait_for(9)
    assert len(requests) == 9
    parsed = [unwrap(request, secret) for request in requests]
    assert [(e.data.type, e.data.id) for e in parsed] == [
        (events.DEPLOYMENT_CREATED, deployment.pk),
        (events.DEPLOYMENT_UPDATED, deployment.pk),
        (events.DEPLOYMENT_PAUSED, deployment.pk),
        (events.DEPLOYMENT_UNPAUSED, deployment.pk),
        (events.DEPLOYMENT_RUN_STARTED, "drun_ok"),
        (events.DEPLOYMENT_RUN_SUCCEEDED, "drun_ok"),
        (events.DEPLOYMENT_RUN_STARTED, "drun_bad"),
        (events.DEPLOYMENT_RUN_FAILED, "drun_bad"),
        (events.DEPLOYMENT_ARCHIVED, deployment.pk),
    ]
    # The SDK's own models for our event types, with the envelope's fields.
    assert type(parsed[2].data).__name__ == "BetaWebhookDeploymentPausedEventData"
    assert type(parsed[7].data).__name__ == "BetaWebhookDeploymentRunFailedEventData"
    for event, request in zip(parsed, requests):
        assert event.type == "event"
        assert event.id.startswith("evt_") and request.webhook_id == event.id
        assert event.data.organization_id == org and event.data.workspace_id == ws
        assert event.created_at.tzinfo is not None
        assert request.headers["content-type"] == "application/json"
        assert TOKEN not in request.body.decode()
    assert len({event.id for event in parsed}) == 9
    # Every attempt recorded; nothing secret in what is kept.
    assert WebhookDelivery.objects.filter(endpoint=endpoint, status="succeeded", attempts=1).count() == 9
    attempt = WebhookAttempt.objects.first()
    assert attempt.status_code == 200 and attempt.response_excerpt == "ok" and attempt.error == ""
    assert attempt.duration_ms > 0
    assert not WebhookAttempt.objects.filter(response_excerpt__contains=TOKEN).exists()


def test_a_wrong_key_or_a_changed_body_does_not_verify(tenant, receiver):
    subscribe(tenant, receiver)
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    pump()
    request = receiver.wait_for(1)[0]
    with pytest.raises(WebhookVerificationError):
        SDK.beta.webhooks.unwrap(request.body.decode(), headers=request.headers, key=new_secret())
    with pytest.raises(WebhookVerificationError):
        SDK.beta.webhooks.unwrap(request.body.decode().replace("depl_1", "depl_2"), headers=request.headers,
                                 key=new_secret())


def test_events_an_endpoint_did_not_subscribe_to_are_not_sent(tenant, receiver):
    subscribe(tenant, receiver, [events.DEPLOYMENT_RUN_FAILED])
    org, ws = tenant.organization.pk, tenant.workspace.pk
    services.events_record(events=[(events.DEPLOYMENT_RUN_STARTED, org, ws, "drun_1"),
                                   (events.DEPLOYMENT_RUN_SUCCEEDED, org, ws, "drun_1"),
                                   (events.DEPLOYMENT_RUN_FAILED, org, ws, "drun_2")])
    pump()
    requests = receiver.wait_for(1)
    assert [json.loads(r.body)["data"]["type"] for r in requests] == [events.DEPLOYMENT_RUN_FAILED]


def test_a_failed_attempt_is_retried_with_the_same_webhook_id_and_every_attempt_is_recorded(tenant, receiver):
    endpoint, secret = subscribe(tenant, receiver)
    answers = iter([Reply(500, b"E" * 5000), Reply(503, b"busy"), Reply(200, b"thanks")])
    receiver.reply = lambda request: next(answers)
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    pump()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status_code == 500
    assert delivery.next_attempt_at > timezone.now()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None
    retry_now()
    retry_now()
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.attempts == 3 and delivery.delivered_at is not None
    attempts = list(delivery.attempt_log.order_by("number"))
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    assert attempts[0].response_excerpt == "E" * 1024  # the first KB only
    assert attempts[0].error == "HTTP 500" and attempts[2].error == ""
    requests = receiver.wait_for(3)
    assert len({r.webhook_id for r in requests}) == 1
    assert all(unwrap(r, secret).data.id == "depl_1" for r in requests)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None  # a success ends the failure streak


def test_backoff_grows_exponentially_with_jitter_up_to_the_ceiling(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 4
    settings.WEBHOOK_RETRY_MAX_INTERVAL_SECONDS = 60
    for attempts, full in [(1, 4), (2, 8), (3, 16), (4, 32), (5, 60), (30, 60)]:
        delays = [services.retry_delay(attempts) for _ in range(200)]
        assert all(full / 2 <= delay <= full for delay in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 100  # jittered, not one value


def test_a_delivery_is_given_up_after_its_retry_window(tenant, receiver, settings):
    settings.WEBHOOK_RETRY_FOR_SECONDS = 0
    before = sample("sd_webhook_deliveries_total", result="gave_up")
    receiver.reply = lambda request: Reply(500, b"no")
    subscribe(tenant, receiver)
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    pump()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.attempts == 1 and delivery.last_error == "HTTP 500"
    assert sample("sd_webhook_deliveries_total", result="gave_up") == before + 1
    assert retry_now()["due"] == 0  # nothing more is tried


def test_an_endpoint_failing_for_too_long_is_disabled_with_its_reason(tenant, receiver, settings,
                                                                     django_capture_on_commit_callbacks):
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 3600
    before = sample("sd_webhooks_disabled_total")
    receiver.stop()  # nothing listens: connection refused
    endpoint, _ = subscribe(tenant, receiver)
    org, ws = tenant.organization.pk, tenant.workspace.pk
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, org, ws, "depl_1")])
    pump()
    endpoint.refresh_from_db()
    assert endpoint.state == "enabled" and endpoint.failing_since is not None
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(hours=2))
    retry_now()
    endpoint.refresh_from_db()
    assert endpoint.state == "disabled"
    assert "every delivery failed for more than 1 hours" in endpoint.disabled_reason
    assert "connection refused" in endpoint.disabled_reason
    assert sample("sd_webhooks_disabled_total") == before + 1
    # While disabled nothing is delivered, and new events are not even fanned out to it.
    receiver.start()
    services.events_record(events=[(events.DEPLOYMENT_UNPAUSED, org, ws, "depl_1")])
    retry_now()
    assert receiver.ids() == []
    assert WebhookDelivery.objects.get().status == "failed"
    # Enabling clears the reason; a redelivery then goes through.
    services.webhook_endpoint_enable(endpoint=endpoint)
    endpoint.refresh_from_db()
    assert (endpoint.state, endpoint.disabled_reason, endpoint.failing_since) == ("enabled", "", None)
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_delivery_redeliver(delivery=WebhookDelivery.objects.get())
    assert len(receiver.wait_for(1)) == 1
    assert WebhookDelivery.objects.get().status == "succeeded"


def test_after_a_rotation_both_secrets_verify_until_the_grace_period_ends(tenant, receiver, settings):
    endpoint, old = subscribe(tenant, receiver)
    new = services.webhook_endpoint_regenerate_secret(endpoint=endpoint)
    assert new.startswith("whsec_") and new != old
    org, ws = tenant.organization.pk, tenant.workspace.pk
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, org, ws, "depl_1")])
    pump()
    request = receiver.wait_for(1)[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert unwrap(request, old).data.id == unwrap(request, new).data.id == "depl_1"
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_expires_at=timezone.now())
    services.events_record(events=[(events.DEPLOYMENT_UNPAUSED, org, ws, "depl_1")])
    pump()
    request = receiver.wait_for(2)[1]
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    assert unwrap(request, new).data.type == events.DEPLOYMENT_UNPAUSED
    with pytest.raises(WebhookVerificationError):
        unwrap(request, old)


def test_a_slow_endpoint_times_out_and_costs_one_timeout_per_retry_not_one_per_event(tenant, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.reply = lambda request: Reply(200, b"late", delay=3)
    subscribe(tenant, receiver)
    org, ws = tenant.organization.pk, tenant.workspace.pk
    services.events_record(events=[(events.DEPLOYMENT_RUN_STARTED, org, ws, f"drun_{i}") for i in range(5)])
    started = time.monotonic()
    pump()
    assert time.monotonic() - started < 2.5
    deliveries = list(WebhookDelivery.objects.order_by("event_id"))
    assert [d.attempts for d in deliveries] == [1, 0, 0, 0, 0]
    assert deliveries[0].last_error.startswith("timed out")
    assert {d.status for d in deliveries} == {"pending"}
    assert len({d.next_attempt_at for d in deliveries}) == 1  # the rest wait with the one that failed


def test_a_response_is_read_only_to_a_small_bound(tenant, receiver):
    receiver.reply = lambda request: Reply(200, b"x" * (20 * 1024 * 1024))
    subscribe(tenant, receiver)
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    pump()
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code == 200 and attempt.response_excerpt == "x" * 1024
    assert WebhookDelivery.objects.get().status == "succeeded"


def test_a_response_with_nul_bytes_and_invalid_utf8_is_stored_readably(tenant, receiver):
    receiver.reply = lambda request: Reply(400, b"bad\x00\xff\xfe input")
    subscribe(tenant, receiver)
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    pump()
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code == 400 and attempt.response_excerpt == "bad\ufffd\ufffd\ufffd input"


def test_the_admin_test_event_reaches_the_endpoint_signed(tenant, receiver, django_capture_on_commit_callbacks):
    endpoint, secret = subscribe(tenant, receiver, [events.DEPLOYMENT_RUN_FAILED])
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_endpoint_send_test_event(endpoint=endpoint)
    event = unwrap(receiver.wait_for(1)[0], secret)
    assert (event.data.type, event.data.id, event.data.workspace_id) == (
        "webhook_endpoint.test", endpoint.pk, tenant.workspace.pk)


def test_a_batch_finding_every_slot_of_its_endpoint_busy_leaves_its_deliveries_to_the_holder(tenant, receiver, settings):
    import threading

    from django.db import connection

    settings.WEBHOOK_ENDPOINT_CONCURRENCY = 1
    endpoint, _ = subscribe(tenant, receiver)
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    holding, release = threading.Event(), threading.Event()

    def hold():  # another worker (its own database connection) busy with this endpoint
        try:
            with services.endpoint_slots.hold(endpoint.pk) as held:
                assert held
                holding.set()
                release.wait(timeout=20)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(timeout=10)
        pump()
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == "pending" and delivery.attempts == 0
        assert receiver.ids() == []
    finally:
        release.set()
        holder.join(timeout=10)
    services.deliveries_attempt(endpoint_id=endpoint.pk, delivery_ids=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and len(receiver.ids()) == 1


def test_a_url_with_non_ascii_characters_is_sent_percent_encoded(tenant, receiver):
    services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                     url=receiver.url + "/ü?team=équipe", enabled_events=ALL_EVENTS)
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    pump()
    [request] = receiver.wait_for(1)
    assert request.path == "/hooks/%C3%BC?team=%C3%A9quipe"
    assert WebhookDelivery.objects.get().status == "succeeded"

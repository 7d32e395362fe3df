"""The webhooks admin: endpoints created, edited and acted on through the services (the secret shown
once, never again), deliveries with every attempt, redeliver."""

import re

import pytest

from tests.webhooks.helpers import ALL_EVENTS, Reply, pump
from webhooks_app import events, services
from webhooks_app.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

ENDPOINTS = "/admin/webhooks_app/webhookendpoint/"
DELIVERIES = "/admin/webhooks_app/webhookdelivery/"


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def add(admin_client, tenant, **fields):
    data = {"organization": tenant.organization.pk, "workspace": "", "url": "https://hooks.example.com/in",
            "name": "Pager", "description": "", "enabled_events": ["deployment.paused", "deployment_run.failed"],
            **fields}
    return admin_client.post(f"{ENDPOINTS}add/", data, follow=True)


def test_an_endpoint_made_in_the_admin_shows_its_secret_once(admin_client, tenant):
    response = add(admin_client, tenant)
    assert response.status_code == 200
    [message] = [m for m in page_messages(response) if "Signing secret" in m]
    secret = re.search(r"(whsec_\S+)", message).group(1)
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.name, endpoint.url, endpoint.enabled_events) == (
        "Pager", "https://hooks.example.com/in", ["deployment.paused", "deployment_run.failed"])
    assert endpoint.organization == tenant.organization and endpoint.workspace is None
    for url in (ENDPOINTS, f"{ENDPOINTS}{endpoint.pk}/change/"):
        page = admin_client.get(url).content.decode()
        assert secret not in page and endpoint.signing_secret not in page


def test_the_admin_refuses_an_unsafe_url_on_the_form(admin_client, tenant, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    response = add(admin_client, tenant, url="http://169.254.169.254/latest/")
    assert response.status_code == 200
    assert "169.254.169.254 is a link-local address" in response.content.decode()
    assert WebhookEndpoint.objects.count() == 0


def test_the_admin_edits_through_the_service(admin_client, tenant):
    endpoint, _ = services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                                   url="https://hooks.example.com/in", enabled_events=ALL_EVENTS)
    response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/change/", {
        "url": "https://hooks.example.com/v2", "name": "Renamed", "description": "notes",
        "enabled_events": ["deployment.archived"],
    }, follow=True)
    assert response.status_code == 200
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.name, endpoint.enabled_events) == (
        "https://hooks.example.com/v2", "Renamed", ["deployment.archived"])


def test_disable_enable_and_regenerate_actions(admin_client, tenant):
    endpoint, old = services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                                     url="https://hooks.example.com/in", enabled_events=ALL_EVENTS)
    act = lambda action: admin_client.post(ENDPOINTS, {"action": action, "_selected_action": [endpoint.pk]},
                                           follow=True)
    act("disable")
    endpoint.refresh_from_db()
    assert endpoint.state == "disabled" and endpoint.disabled_reason == ""
    act("enable")
    endpoint.refresh_from_db()
    assert endpoint.state == "enabled"
    response = act("regenerate_secret")
    [message] = [m for m in page_messages(response) if "New signing secret" in m]
    new = re.search(r"(whsec_\S+)", message).group(1)
    assert new != old
    endpoint.refresh_from_db()
    assert endpoint.previous_secret_expires_at is not None


def test_a_test_event_and_a_redelivery_with_every_attempt_shown(admin_client, tenant, receiver, inline,
                                                                 private_targets, django_capture_on_commit_callbacks):
    endpoint, _ = services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=receiver.url,
                                                   enabled_events=ALL_EVENTS)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(ENDPOINTS, {"action": "send_test_event", "_selected_action": [endpoint.pk]},
                                     follow=True)
    assert any("Test event evt_" in m for m in page_messages(response))
    assert len(receiver.wait_for(1)) == 1

    receiver.reply = lambda request: Reply(502, b"upstream down")
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    pump()
    failed = WebhookDelivery.objects.get(event__type=events.DEPLOYMENT_PAUSED)
    assert failed.status == "pending" and failed.last_status_code == 502
    receiver.reply = lambda request: Reply(200, b"fine now")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(DELIVERIES, {"action": "redeliver", "_selected_action": [failed.pk]}, follow=True)
    failed.refresh_from_db()
    assert failed.status == "succeeded" and failed.attempts == 2

    page = admin_client.get(f"{DELIVERIES}{failed.pk}/change/").content.decode()
    assert "upstream down" in page and "fine now" in page and "502" in page
    listing = admin_client.get(DELIVERIES, {"status__exact": "succeeded"}).content.decode()
    assert failed.event_id in listing

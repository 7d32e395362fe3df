"""Server-side request forgery: with WEBHOOK_ALLOW_PRIVATE_TARGETS off (the production default),
no delivery reaches a loopback, private, link-local or otherwise non-public address — literal,
behind a name, behind a DNS answer that changed since the URL was saved, or behind a redirect."""

import pytest

from tests.webhooks.helpers import ALL_EVENTS, Reply, pump, webhooks_client
from webhooks_app import events, services, transport
from webhooks_app.errors import UnsafeWebhookUrl
from webhooks_app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.0.0.7", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "not globally routable"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "private"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("ff02::1", "multicast"),
    ("fec0::1", "site-local"),
    ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
    ("::ffff:169.254.169.254", "link-local (IPv4 169.254.169.254 inside IPv6)"),
    ("::ffff:10.1.2.3", "private (IPv4 10.1.2.3 inside IPv6)"),
    ("::127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
    ("64:ff9b::7f00:1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
    ("2002:a9fe:a9fe::1", "link-local (IPv4 169.254.169.254 inside IPv6)"),
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.216.34"]


@pytest.fixture(autouse=True)
def private_targets_off(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False


@pytest.mark.parametrize(("address", "problem"), REFUSED)
def test_non_public_addresses_are_refused(address, problem):
    assert transport.address_problem(address) == problem


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address):
    assert transport.address_problem(address) is None


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:8000/hooks", "127.0.0.1 is a loopback address"),
    ("http://[::1]/hooks", "::1 is a loopback address"),
    ("http://[::ffff:7f00:1]/hooks", "is a loopback (IPv4 127.0.0.1 inside IPv6) address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://2130706433/", "127.0.0.1 is a loopback address"),
    ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
    ("http://10.1.2.3/", "10.1.2.3 is a private address"),
    ("https://localhost/hooks", "localhost is a loopback name"),
    ("https://api.localhost/hooks", "api.localhost is a loopback name"),
    ("https://internal.example.com/hooks", "internal.example.com resolves to 127.0.0.1 is a loopback address"),
    ("ftp://hooks.example.com/in", "only http and https URLs are allowed"),
    ("file:///etc/passwd", "only http and https URLs are allowed"),
    ("gopher://hooks.example.com/", "only http and https URLs are allowed"),
    ("https://user:secret@hooks.example.com/in", "credentials in the URL are not allowed"),
    ("https:///nohost", "the URL has no host"),
    ("https://hooks.example.com:99999/", "not a valid URL"),
])
def test_unsafe_urls_are_refused_when_saved_with_a_message_naming_the_field(db, tenant, dns, url, message):
    dns.answers["internal.example.com"] = ["127.0.0.1"]
    response = webhooks_client(tenant).post("/v1/organizations/webhooks", {"url": url, "enabled_events": ALL_EVENTS},
                                            format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("url: ") and message in body["error"]["message"]
    assert "secret" not in body["error"]["message"]
    assert WebhookEndpoint.objects.count() == 0


def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_again_at_delivery(db, tenant):
    endpoint, _ = services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                                   url="https://not-yet.example.com/in", enabled_events=ALL_EVENTS)
    assert endpoint.url == "https://not-yet.example.com/in"


def _deliver_one(tenant, endpoint) -> WebhookAttempt:
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk, "depl_1")])
    pump()
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == "pending" and delivery.attempts == 1
    return delivery.attempt_log.get()


def test_a_dns_answer_that_changed_since_the_url_was_saved_is_refused_at_delivery(db, tenant, dns, receiver, inline):
    dns.answers["hooks.example.com"] = ["93.184.216.34"]
    endpoint, _ = services.webhook_endpoint_create(
        organization=tenant.organization, workspace=None, url=f"http://hooks.example.com:{receiver.port}/in",
        enabled_events=ALL_EVENTS,
    )
    dns.answers["hooks.example.com"] = ["93.184.216.34", "127.0.0.1"]  # rebinding: one answer now points home
    attempt = _deliver_one(tenant, endpoint)
    assert attempt.status_code is None
    assert attempt.error == "target refused: hooks.example.com resolves to 127.0.0.1 is a loopback address"
    assert receiver.ids() == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_a_target_saved_while_private_targets_were_allowed_is_refused_once_they_are_not(
        db, tenant, receiver, inline, settings, host):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    endpoint, _ = services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                                   url=f"http://{host}:{receiver.port}/in", enabled_events=ALL_EVENTS)
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    attempt = _deliver_one(tenant, endpoint)
    assert attempt.error.startswith("target refused: ") and "loopback" in attempt.error
    assert receiver.ids() == []


def test_a_redirect_is_not_followed(db, tenant, receiver, inline, settings):
    """Even where private targets are allowed (the only way to run a receiver here), a 3xx is a
    failed attempt: the Location is never requested."""
    from tests.webhooks.helpers import Receiver

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    inner = Receiver()
    try:
        receiver.reply = lambda request: Reply(302, b"", headers={"Location": f"http://127.0.0.1:{inner.port}/admin"})
        endpoint, _ = services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                                       url=receiver.url, enabled_events=ALL_EVENTS)
        attempt = _deliver_one(tenant, endpoint)
        assert attempt.status_code == 302 and attempt.error == "redirect (302) not followed"
        assert len(receiver.ids()) == 1 and inner.ids() == []
    finally:
        inner.stop()


def test_the_save_time_check_is_the_same_in_the_service(db, tenant):
    with pytest.raises(UnsafeWebhookUrl):
        services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                         url="http://169.254.169.254/", enabled_events=ALL_EVENTS)

"""Fixtures for the webhooks tests: a real receiving HTTP server in the test process, fake DNS
(no test ever asks a real resolver), in-process delivery."""

import pytest

from tests.webhooks.helpers import FakeDns, Receiver
from webhooks_app import services, transport


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def dns(monkeypatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(transport, "resolve", fake)
    return fake


@pytest.fixture
def private_targets(settings):
    """Deliveries may go to the receiver on 127.0.0.1 (as in development)."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True


@pytest.fixture
def inline(monkeypatch, settings):
    """Deliveries attempted in the test's own thread when published, instead of by a worker; the
    doorbell is replaced by calling `pump()`."""
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 0

    def publish(groups):
        groups = list(groups)
        for endpoint_id, ids in groups:
            services.deliveries_attempt(endpoint_id=endpoint_id, delivery_ids=ids)
        return len(groups)

    monkeypatch.setattr(services, "deliveries_publish", publish)
    monkeypatch.setattr(services, "ring_doorbell", lambda: None)

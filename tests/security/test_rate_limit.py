"""The per-key request rate limit (API_RATE_LIMIT_PER_MINUTE) on write endpoints: a refused POST is
the error envelope with `retry-after`, and it changes nothing."""

import time

import pytest

from deployments_app.models import Deployment
from platform_app.models import Vault
from tests.security.conftest import USER_MESSAGE
from tests.security.helpers import envelope_message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def away_from_a_window_boundary():
    """The window is a calendar minute: keep each test's requests inside one."""
    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.1)


def assert_throttled(response) -> None:
    assert envelope_message(response, 429) == "rate limit exceeded"
    assert 1 <= int(response["retry-after"]) <= 60
    assert response["request-id"]


def test_a_throttled_post_is_the_429_envelope_with_retry_after_and_creates_nothing(tenant, world, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    client = tenant.client()
    body = {"name": "Throttled", "agent": world.agent_id, "environment_id": world.environment_id,
            "initial_events": [USER_MESSAGE]}
    statuses = [client.post("/v1/deployments", body, format="json").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    before = Deployment.objects.count()
    response = client.post("/v1/deployments", body, format="json")
    assert_throttled(response)
    assert Deployment.objects.count() == before


@pytest.mark.parametrize("method,path", [
    ("post", "/v1/vaults"),
    ("post", "/v1/deployments/{deployment}/pause"),
    ("post", "/v1/deployments/{deployment}/run"),
    ("post", "/v1/deployments/schedule_preview"),
    ("get", "/v1/deployments/{deployment}"),
])
def test_every_kind_of_request_counts_against_the_same_per_key_budget(tenant, world, settings, method, path):
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    client = tenant.client()
    assert client.get("/v1/deployment_runs").status_code == 200
    assert client.get("/v1/agents").status_code == 200
    vaults = Vault.objects.count()
    response = getattr(client, method)(path.format(deployment=world.deployment_id), {"display_name": "v"},
                                       format="json")
    assert_throttled(response)
    assert Vault.objects.count() == vaults


def test_an_invalid_body_still_counts_and_a_throttled_one_is_refused_before_parsing(tenant, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    client = tenant.client()
    assert client.post("/v1/deployments", "{not json", content_type="application/json").status_code == 400
    assert_throttled(client.post("/v1/deployments", "{not json", content_type="application/json"))


def test_one_keys_429_does_not_throttle_another_key_of_the_same_organization(tenant, world, settings):
    from tests.conftest import Tenant

    settings.API_RATE_LIMIT_PER_MINUTE = 1
    first = tenant.client()
    assert first.post("/v1/vaults", {"display_name": "a"}, format="json").status_code == 200
    assert_throttled(first.post("/v1/vaults", {"display_name": "b"}, format="json"))
    second = Tenant(tenant.organization.name).client()  # another key of the same organization
    assert second.post("/v1/vaults", {"display_name": "c"}, format="json").status_code == 200

"""`/v1/organizations/webhooks` driven by the official SDK's `client.beta.organization.webhooks`,
unchanged, against a live server; validation and tenancy through the test client."""

import anthropic
import pytest

from accounts_app.services import api_key_create
from tests.conftest import Tenant
from tests.webhooks.helpers import ALL_EVENTS, webhooks_client
from webhooks_app import services
from webhooks_app.auth import WEBHOOKS_BETA
from webhooks_app.models import WebhookEndpoint

URL = "https://hooks.example.com/in"


@pytest.fixture(autouse=True)
def no_doorbell(monkeypatch):
    monkeypatch.setattr(services, "ring_doorbell", lambda: None)


def test_the_sdk_creates_reads_updates_rotates_lists_and_deletes(sdk):
    hooks = sdk.beta.organization.webhooks
    created = hooks.create(url=URL, enabled_events=["deployment.paused", "deployment_run.failed"], name="Pager",
                           description="Failed runs page the on-call")
    assert created.id.startswith("whep_")
    assert created.signing_secret.startswith("whsec_") and len(created.signing_secret) > 40
    assert (created.url, created.name, created.description, created.state, created.disabled_reason) == (
        URL, "Pager", "Failed runs page the on-call", "enabled", "")
    assert created.enabled_events == ["deployment.paused", "deployment_run.failed"]

    retrieved = hooks.retrieve(created.id)
    assert retrieved.id == created.id and retrieved.url == URL
    assert "signing_secret" not in retrieved.to_dict()
    listed = list(hooks.list())
    assert [e.id for e in listed] == [created.id]
    assert all("signing_secret" not in e.to_dict() for e in listed)

    updated = hooks.update(created.id, name="Pager (paused)", state="disabled", enabled_events=[])
    assert (updated.name, updated.state, updated.disabled_reason) == ("Pager (paused)", "disabled", "")
    assert updated.enabled_events == ["deployment.paused", "deployment_run.failed"]  # [] keeps the set
    assert updated.updated_at >= created.updated_at
    updated = hooks.update(created.id, state="enabled", enabled_events=["deployment_run.started"],
                           url="https://hooks.example.com/v2")
    assert (updated.state, updated.enabled_events, updated.url) == (
        "enabled", ["deployment_run.started"], "https://hooks.example.com/v2")

    rotated = hooks.regenerate_signing_secret(created.id)
    assert rotated.signing_secret.startswith("whsec_") and rotated.signing_secret != created.signing_secret
    assert "signing_secret" not in hooks.retrieve(created.id).to_dict()

    deleted = hooks.delete(created.id)
    assert (deleted.id, deleted.type) == (created.id, "webhook_endpoint_deleted")
    with pytest.raises(anthropic.NotFoundError):
        hooks.retrieve(created.id)
    assert list(hooks.list()) == []


def test_the_sdk_pages_through_the_list_newest_first_or_oldest_first(sdk):
    hooks = sdk.beta.organization.webhooks
    ids = [hooks.create(url=URL, enabled_events=ALL_EVENTS, name=f"e{i}").id for i in range(5)]
    first = hooks.list(limit=2)
    assert [e.id for e in first.data] == ids[::-1][:2] and first.has_more
    assert [e.id for e in hooks.list(limit=2)] == ids[::-1]  # auto-pagination with after_id
    assert [e.id for e in hooks.list(limit=2, order="asc")] == ids
    assert [e.id for e in hooks.list(limit=2, before_id=ids[1]).data] == ids[::-1][:2]


def test_at_most_32_endpoints_per_organization(sdk, tenant):
    for i in range(32):
        services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=URL,
                                         enabled_events=ALL_EVENTS, name=f"e{i}")
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.beta.organization.webhooks.create(url=URL, enabled_events=ALL_EVENTS)
    assert "at most 32 webhook endpoints" in refused.value.message
    assert WebhookEndpoint.objects.filter(organization=tenant.organization).count() == 32


def test_an_unknown_event_type_is_refused_naming_its_index(sdk):
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.beta.organization.webhooks.create(url=URL, enabled_events=["deployment.paused", "external_key.failed"])
    assert refused.value.body["error"]["message"].startswith("enabled_events[1]: unknown event type; must be one of: ")
    assert "deployment_run.failed" in refused.value.body["error"]["message"]
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize(("body", "message"), [
    ({"url": URL}, "enabled_events: is required"),
    ({"url": URL, "enabled_events": []}, "enabled_events: must list at least one event type"),
    ({"url": URL, "enabled_events": "deployment.paused"}, "enabled_events: must be a list of event types"),
    ({"url": URL, "enabled_events": [7]}, "enabled_events[0]: must be a string"),
    ({"enabled_events": ALL_EVENTS}, "url: is required"),
    ({"url": 5, "enabled_events": ALL_EVENTS}, "url: must be a string"),
    ({"url": "", "enabled_events": ALL_EVENTS}, "url: must not be empty"),
    ({"url": URL + "x" * 2048, "enabled_events": ALL_EVENTS}, "url: must be at most 2048 characters"),
    ({"url": URL, "enabled_events": ALL_EVENTS, "name": "n" * 257}, "name: must be at most 256 characters"),
    ({"url": URL, "enabled_events": ALL_EVENTS, "secret": "whsec_x"}, "secret: unknown field"),
])
def test_create_refuses_bad_input_naming_the_field(db, tenant, body, message):
    response = webhooks_client(tenant).post("/v1/organizations/webhooks", body, format="json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(("body", "message"), [
    ({"state": "paused"}, "state: must be one of: enabled, disabled"),
    ({"state": None}, "state: must not be null"),
    ({"enabled_events": ["deployment.deleted"]}, "enabled_events[0]: unknown event type"),
    ({"url": "http://169.254.169.254/"}, "url: 169.254.169.254 is a link-local address"),
])
def test_update_refuses_bad_input_naming_the_field(db, tenant, body, message):
    endpoint, _ = services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=URL,
                                                   enabled_events=ALL_EVENTS)
    response = webhooks_client(tenant).post(f"/v1/organizations/webhooks/{endpoint.pk}", body, format="json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]
    endpoint.refresh_from_db()
    assert endpoint.state == "enabled" and endpoint.url == URL


@pytest.mark.parametrize("beta", ["", "managed-agents-2026-04-01", "webhooks-2026-10-06"])
def test_the_webhooks_beta_header_is_required(db, tenant, beta):
    response = tenant.client(HTTP_ANTHROPIC_BETA=beta).get("/v1/organizations/webhooks")
    assert response.status_code == 400
    assert f"anthropic-beta header must include {WEBHOOKS_BETA}" in response.json()["error"]["message"]


def test_the_webhooks_beta_may_come_with_others(db, tenant):
    response = tenant.client(HTTP_ANTHROPIC_BETA=f"managed-agents-2026-04-01, {WEBHOOKS_BETA}").get(
        "/v1/organizations/webhooks")
    assert response.status_code == 200 and response.json()["data"] == []


def test_bad_list_parameters_are_400s(db, tenant):
    client = webhooks_client(tenant)
    for query, message in [("limit=101", "limit: must be between 0 and 100"), ("limit=x", "limit: must be an integer"),
                           ("order=up", "order: must be asc or desc"),
                           ("after_id=a&before_id=b", "after_id and before_id cannot be combined")]:
        response = client.get(f"/v1/organizations/webhooks?{query}")
        assert response.status_code == 400 and message in response.json()["error"]["message"], query


def test_endpoints_of_another_organization_or_workspace_are_not_found(db, tenant, other_tenant):
    theirs, _ = services.webhook_endpoint_create(organization=other_tenant.organization, workspace=None, url=URL,
                                                 enabled_events=ALL_EVENTS)
    client = webhooks_client(tenant)
    for method, path in [("get", ""), ("post", ""), ("delete", ""), ("post", "/regenerate_signing_secret")]:
        response = getattr(client, method)(f"/v1/organizations/webhooks/{theirs.pk}{path}", {}, format="json")
        assert response.status_code == 404, (method, path)
    assert client.get("/v1/organizations/webhooks").json()["data"] == []
    assert WebhookEndpoint.objects.filter(pk=theirs.pk).exists()


def test_a_key_bound_to_a_workspace_manages_that_workspaces_endpoints_only(db, tenant):
    org_wide, _ = services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=URL,
                                                   enabled_events=ALL_EVENTS)
    research = Tenant("Acme", workspace_name="research")
    client = webhooks_client(research)
    created = client.post("/v1/organizations/webhooks", {"url": URL, "enabled_events": ALL_EVENTS}, format="json")
    assert created.status_code == 200
    endpoint = WebhookEndpoint.objects.get(pk=created.json()["id"])
    assert endpoint.workspace_id == research.workspace.pk
    assert [e["id"] for e in client.get("/v1/organizations/webhooks").json()["data"]] == [endpoint.pk]
    assert client.get(f"/v1/organizations/webhooks/{org_wide.pk}").status_code == 404
    # The organization-wide key sees the organization's endpoints, not the workspace's.
    listed = webhooks_client(tenant).get("/v1/organizations/webhooks").json()["data"]
    assert [e["id"] for e in listed] == [org_wide.pk]


def test_a_revoked_or_missing_key_is_refused(db, tenant):
    client = webhooks_client(tenant, HTTP_X_API_KEY="sk-sd-nope")
    assert client.get("/v1/organizations/webhooks").status_code == 401
    _, plain = api_key_create(organization=tenant.organization)
    assert webhooks_client(tenant, HTTP_X_API_KEY=plain).get("/v1/organizations/webhooks").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_parallel_creates_stop_at_exactly_32(tenant):
    """Threads with their own PostgreSQL connections, released together: the organization's row
    lock counts them one at a time."""
    import threading

    from django.db import connection

    for i in range(28):
        services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=URL,
                                         enabled_events=ALL_EVENTS, name=f"e{i}")
    barrier = threading.Barrier(10)
    statuses: list[int] = []

    def create():
        try:
            barrier.wait(timeout=30)
            response = webhooks_client(tenant).post("/v1/organizations/webhooks",
                                                    {"url": URL, "enabled_events": ALL_EVENTS}, format="json")
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200] * 4 + [400] * 6
    assert WebhookEndpoint.objects.filter(organization=tenant.organization).count() == 32

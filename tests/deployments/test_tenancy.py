"""Another organization's or workspace's deployment is a 404 for every route, never a 403."""

import pytest

from deployments_app.models import Deployment
from tests.conftest import Tenant
from tests.deployments.helpers import WEEKLY, create, error, ok

pytestmark = pytest.mark.django_db


@pytest.fixture
def foreign(api, body):
    return create(api, body, schedule=WEEKLY)


ROUTES = [
    ("get", "", None),
    ("post", "", {"name": "stolen"}),
    ("post", "", {"name": ""}),  # even an invalid body: existence is not revealed
    ("post", "/pause", None),
    ("post", "/unpause", None),
    ("post", "/archive", None),
]


@pytest.mark.parametrize("method, suffix, data", ROUTES)
def test_another_organizations_deployment_is_404(other_tenant, foreign, method, suffix, data):
    client = other_tenant.client()
    path = f"/v1/deployments/{foreign['id']}{suffix}"
    response = getattr(client, method)(path, data, format="json") if data is not None else getattr(client, method)(path)
    assert error(response, 404) == f"deployment {foreign['id']} not found"


@pytest.mark.parametrize("method, suffix, data", ROUTES)
def test_another_workspace_of_the_same_organization_is_404(tenant, foreign, method, suffix, data):
    client = Tenant(tenant.organization.name, workspace_name="Staging").client()
    path = f"/v1/deployments/{foreign['id']}{suffix}"
    response = getattr(client, method)(path, data, format="json") if data is not None else getattr(client, method)(path)
    assert error(response, 404) == f"deployment {foreign['id']} not found"


def test_nothing_changes_after_foreign_attempts(api, other_tenant, foreign):
    client = other_tenant.client()
    client.post(f"/v1/deployments/{foreign['id']}", {"name": "stolen"}, format="json")
    client.post(f"/v1/deployments/{foreign['id']}/pause")
    client.post(f"/v1/deployments/{foreign['id']}/archive")
    row = Deployment.objects.get(pk=foreign["id"])
    assert (row.name, row.status, row.archived_at) == (foreign["name"], "active", None)
    assert ok(api.get(f"/v1/deployments/{foreign['id']}"))["name"] == foreign["name"]


def test_workspace_header_selects_the_workspace(tenant, body):
    sibling = Tenant(tenant.organization.name, workspace_name="Staging")
    org_wide_key = tenant.client(HTTP_ANTHROPIC_WORKSPACE_ID=sibling.workspace.id)
    assert ok(org_wide_key.get("/v1/deployments"))["data"] == []
    created = create(tenant.client(), body)
    assert error(org_wide_key.get(f"/v1/deployments/{created['id']}"), 404).startswith("deployment ")


def test_schedule_preview_is_not_mistaken_for_a_deployment_id(api):
    response = api.get("/v1/deployments/schedule_preview")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"

import io

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts_app.models import ApiKey, Organization, Workspace, hash_key
from tests.conftest import BETA, Tenant

pytestmark = pytest.mark.django_db


def test_every_organization_gets_a_default_workspace(tenant):
    assert Workspace.objects.filter(organization=tenant.organization, is_default=True).count() == 1


def test_keys_are_stored_hashed_with_a_display_prefix(tenant):
    stored = ApiKey.objects.get(pk=tenant.api_key.pk)
    assert stored.key_hash == hash_key(tenant.key)
    assert tenant.key not in {stored.key_hash, stored.prefix, stored.name}
    assert tenant.key.startswith(stored.prefix) and len(stored.prefix) < len(tenant.key) // 3


def test_last_used_at_is_recorded(tenant):
    assert ApiKey.objects.get(pk=tenant.api_key.pk).last_used_at is None
    assert tenant.client().get("/v1/deployment_runs").status_code == 200
    assert ApiKey.objects.get(pk=tenant.api_key.pk).last_used_at is not None


def test_create_api_key_command_creates_what_is_missing_and_prints_the_key_last():
    out = io.StringIO()
    call_command("create_api_key", "--organization", "Initech", "--workspace", "Research", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    assert key.startswith("sk-sd-")
    organization = Organization.objects.get(name="Initech")
    api_key = ApiKey.objects.get(key_hash=hash_key(key))
    assert api_key.organization == organization and api_key.workspace.name == "Research"
    response = APIClient().get("/v1/deployment_runs", HTTP_X_API_KEY=key, HTTP_ANTHROPIC_BETA=BETA)
    assert response.status_code == 200


def test_create_api_key_twice_reuses_the_organization():
    call_command("create_api_key", "--organization", "Initech", stdout=io.StringIO())
    call_command("create_api_key", "--organization", "Initech", stdout=io.StringIO())
    assert Organization.objects.filter(name="Initech").count() == 1
    assert ApiKey.objects.filter(organization__name="Initech").count() == 2


def test_workspace_bound_key_may_omit_the_header_or_send_its_own(db):
    bound = Tenant("Umbrella", workspace_name="Labs")
    assert bound.client().get("/v1/deployment_runs").status_code == 200
    own = bound.client(HTTP_ANTHROPIC_WORKSPACE_ID=bound.workspace.id)
    assert own.get("/v1/deployment_runs").status_code == 200


def test_workspace_bound_key_sending_another_workspace_is_403(db):
    bound = Tenant("Umbrella", workspace_name="Labs")
    default = bound.organization.workspaces.get(is_default=True)
    response = bound.client(HTTP_ANTHROPIC_WORKSPACE_ID=default.id).get("/v1/deployment_runs")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_organization_key_selects_a_workspace_by_header(tenant):
    from accounts_app.services import workspace_get_or_create

    other = workspace_get_or_create(organization=tenant.organization, name="Staging")
    assert tenant.client(HTTP_ANTHROPIC_WORKSPACE_ID=other.id).get("/v1/deployment_runs").status_code == 200


def test_another_organizations_workspace_is_refused(tenant, other_tenant):
    response = tenant.client(HTTP_ANTHROPIC_WORKSPACE_ID=other_tenant.workspace.id).get("/v1/deployment_runs")
    assert response.status_code == 403

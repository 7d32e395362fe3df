"""The deployments admin: read-only pages, state changes only through the service actions."""

import pytest

from deployments_app.models import Deployment
from tests.deployments.helpers import WEEKLY, create

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/deployments_app/deployment/"


def test_changelist_shows_name_organization_status_and_schedule(admin_client, api, body, tenant):
    data = create(api, body, schedule=WEEKLY)
    html = admin_client.get(CHANGELIST).content.decode()
    assert data["name"] in html
    assert tenant.organization.name in html
    assert "0 20 * * 5 (America/New_York)" in html


def test_actions_go_through_the_services(admin_client, api, body):
    data = create(api, body, schedule=WEEKLY)

    def act(action: str, **extra):
        return admin_client.post(CHANGELIST, {"action": action, "_selected_action": [data["id"]], **extra}, follow=True)

    act("pause")
    row = Deployment.objects.get(pk=data["id"])
    assert (row.status, row.paused_reason, row.next_fire_at) == ("paused", {"type": "manual"}, None)
    act("unpause")
    row.refresh_from_db()
    assert row.status == "active" and row.next_fire_at is not None
    assert "Archiving is <strong>final</strong>" in act("archive").content.decode()  # asks first
    row.refresh_from_db()
    assert row.archived_at is None
    act("archive", post="yes")
    row.refresh_from_db()
    assert row.archived_at is not None and row.next_fire_at is None
    page = act("pause")
    assert "is archived" in page.content.decode()
    row.refresh_from_db()
    assert row.status == "active"


def test_admin_cannot_edit_add_or_delete(admin_client, api, body):
    data = create(api, body)
    response = admin_client.post(f"{CHANGELIST}{data['id']}/change/", {"name": "edited"})
    assert Deployment.objects.get(pk=data["id"]).name == data["name"]
    assert response.status_code in (200, 302, 403)
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.get(f"{CHANGELIST}{data['id']}/delete/").status_code == 403

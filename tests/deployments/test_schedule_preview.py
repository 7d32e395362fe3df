"""POST /v1/deployments/schedule_preview: the schedule engine's verdict before creating anything."""

import pytest
from django.utils import timezone

from deployments_app import schedule
from deployments_app.models import Deployment
from tests.deployments.helpers import error, ok, upcoming

pytestmark = pytest.mark.django_db

URL = "/v1/deployments/schedule_preview"


def test_preview_describes_the_schedule_and_lists_the_next_fires(api):
    before = timezone.now()
    data = ok(api.post(URL, {"expression": "0 20 * * 5", "timezone": "America/New_York"}, format="json"))
    after = timezone.now()
    assert data["valid"] is True
    assert data["description"] == schedule.describe("0 20 * * 5")
    assert data["upcoming_runs_at"] in (
        upcoming("0 20 * * 5", "America/New_York", before), upcoming("0 20 * * 5", "America/New_York", after)
    )
    assert data["dst_notes"] == []  # 20:00 is never skipped or repeated in New York
    assert Deployment.objects.count() == 0


def test_preview_reports_dst_skips_and_repeats(api):
    data = ok(api.post(URL, {"expression": "30 1,2 * * *", "timezone": "America/New_York", "count": 20},
                       format="json"))
    assert len(data["upcoming_runs_at"]) == 20
    kinds = {note["kind"] for note in data["dst_notes"]}
    assert kinds == {"skipped", "repeated"}
    expected = [n.as_dict() for n in schedule.dst_notes("30 1,2 * * *", "America/New_York", timezone.now())]
    assert data["dst_notes"] == expected
    repeated = next(note for note in data["dst_notes"] if note["kind"] == "repeated")
    assert repeated["local_time"] == "01:30" and len(repeated["instants"]) == 2


@pytest.mark.parametrize("payload, message", [
    ({"expression": "0 0 31 2 *", "timezone": "UTC"}, "expression: never fires"),
    ({"expression": "@daily", "timezone": "UTC"}, "expression: shortcut"),
    ({"expression": "0 0 * * *", "timezone": "Atlantis/Capital"}, "timezone: unknown time zone"),
    ({"expression": "0 0 * * *"}, "timezone: is required"),
    ({"timezone": "UTC"}, "expression: is required"),
    ({"expression": 5, "timezone": "UTC"}, "expression: must be a string"),
    ({"expression": "0 0 * * *", "timezone": "UTC", "count": 0}, "count: must be between 1 and 20"),
    ({"expression": "0 0 * * *", "timezone": "UTC", "count": 21}, "count: must be between 1 and 20"),
    ({"expression": "0 0 * * *", "timezone": "UTC", "count": "5"}, "count: must be an integer"),
    ({"expression": "0 0 * * *", "timezone": "UTC", "type": "cron"}, "type: unknown field"),
])
def test_invalid_preview_is_400_naming_the_field(api, payload, message):
    assert error(api.post(URL, payload, format="json"), 400).startswith(message)


def test_preview_needs_an_api_key():
    from rest_framework.test import APIClient

    response = APIClient().post(URL, {"expression": "0 0 * * *", "timezone": "UTC"}, format="json")
    assert response.status_code == 401

"""The read path of the deployments API: a deployment read in one statement, upcoming fire times
computed once per schedule (not once per deployment), and the same answers as before."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments_app import schedule, serializers
from deployments_app.serializers import UpcomingRuns
from tests.deployments.helpers import WEEKLY, create, ok, upcoming

pytestmark = pytest.mark.django_db

UTC = dt_timezone.utc
QUARTER = {"type": "cron", "expression": "*/15 * * * *", "timezone": "UTC"}


@pytest.fixture
def counted_fires(monkeypatch):
    """Counts calls of schedule.next_fires made for `upcoming_runs_at`."""
    calls = []
    real = schedule.next_fires

    def counting(expression, timezone_name, after, n=5):
        calls.append((expression, timezone_name))
        return real(expression, timezone_name, after, n)

    monkeypatch.setattr(serializers.cron, "next_fires", counting)
    monkeypatch.setattr(serializers, "upcoming_runs", UpcomingRuns(serializers.UPCOMING_RUNS))
    return calls


def test_a_retrieve_is_one_statement_once_the_key_is_remembered(api, body):
    created = create(api, body, schedule=WEEKLY, metadata={"team": "ops"})
    api.get("/v1/deployment_runs")  # the key is now remembered
    with CaptureQueriesContext(connection) as captured:
        fetched = ok(api.get(f"/v1/deployments/{created['id']}"))
    assert len(captured) == 1
    assert fetched == created


def test_another_tenants_deployment_is_still_not_found(api, body, other_tenant):
    created = create(api, body)
    response = other_tenant.client().get(f"/v1/deployments/{created['id']}")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def test_a_page_computes_upcoming_fires_once_per_schedule(api, body, counted_fires):
    for i in range(6):
        create(api, body, name=f"weekly {i}", schedule=WEEKLY)
        create(api, body, name=f"quarter {i}", schedule=QUARTER)
    counted_fires.clear()
    before = datetime.now(UTC)
    page = ok(api.get("/v1/deployments", {"limit": 100}))["data"]
    after = datetime.now(UTC)
    assert len(page) == 12
    assert len(counted_fires) <= 2
    for item in page:
        shown = item["schedule"]["upcoming_runs_at"]
        expression, tz = item["schedule"]["expression"], item["schedule"]["timezone"]
        # Right for the moment of the request (a quarter hour may start during it).
        assert shown in (upcoming(expression, tz, before), upcoming(expression, tz, after))


def test_the_list_never_reads_resource_secrets(api, body):
    create(api, body)
    with CaptureQueriesContext(connection) as captured:
        ok(api.get("/v1/deployments"))
    page_query = [q["sql"] for q in captured.captured_queries if "deployments_app_deployment" in q["sql"]]
    assert page_query and all("resource_secrets" not in sql for sql in page_query)


def test_remembered_upcoming_fires_are_those_after_now_at_every_instant():
    memo = UpcomingRuns(5)
    expression, tz = "0 9 * * 1-5", "America/New_York"
    start = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)  # a Friday; DST starts on the 8th
    first = schedule.next_fires(expression, tz, start, 1)[0]
    instants = [
        start, start + timedelta(hours=5), first - timedelta(microseconds=1), first,
        first + timedelta(seconds=1), start - timedelta(days=3), start,
        first + timedelta(days=10), first + timedelta(days=10, minutes=1),
    ]
    for now in instants:
        expected = [at.strftime("%Y-%m-%dT%H:%M:%SZ") for at in schedule.next_fires(expression, tz, now, 5)]
        assert memo(expression, tz, now) == expected, now


def test_a_short_answer_is_not_remembered(monkeypatch):
    answers = [[], [datetime(2031, 1, 1, tzinfo=UTC)] * 5]
    monkeypatch.setattr(serializers.cron, "next_fires", lambda expression, tz, after, n: answers.pop(0))
    memo = UpcomingRuns(5)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert memo("0 0 1 1 *", "UTC", now) == []
    assert memo("0 0 1 1 *", "UTC", now + timedelta(seconds=1)) == ["2031-01-01T00:00:00Z"] * 5


def test_a_caller_changing_its_list_does_not_change_the_memo():
    memo = UpcomingRuns(5)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    memo("* * * * *", "UTC", now).append("not a fire")
    assert len(memo("* * * * *", "UTC", now)) == 5

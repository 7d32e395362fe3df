"""GET /v1/deployments: filters, archived visibility, pagination, parameter validation, query count."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments_app.models import Deployment
from tests.deployments.helpers import WEEKLY, create, error, ok
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def ids(response) -> list[str]:
    return [item["id"] for item in ok(response)["data"]]


@pytest.fixture
def three(api, body):
    """Oldest first: an active, a paused and an archived deployment."""
    active = create(api, body, name="active")
    paused = create(api, body, name="paused")
    ok(api.post(f"/v1/deployments/{paused['id']}/pause"))
    archived = create(api, body, name="archived")
    ok(api.post(f"/v1/deployments/{archived['id']}/archive"))
    return active["id"], paused["id"], archived["id"]


def test_list_is_newest_first_and_hides_archived(api, three):
    active, paused, _ = three
    data = ok(api.get("/v1/deployments"))
    assert [d["id"] for d in data["data"]] == [paused, active]
    assert data["next_page"] is None
    assert data["data"][0]["type"] == "deployment"


@pytest.mark.parametrize("query, expected", [
    ("include_archived=true", [2, 1, 0]),
    ("include_archived=false", [1, 0]),
    ("status=active", [0]),
    ("status=paused", [1]),
    ("status=active&include_archived=false", [0]),
])
def test_status_and_archived_filters(api, three, query, expected):
    assert ids(api.get(f"/v1/deployments?{query}")) == [three[i] for i in expected]


def test_agent_id_filter(api, body, tenant):
    other = make_agent(tenant, name="other")
    mine = create(api, body)["id"]
    theirs = create(api, body, agent=other.id)["id"]
    assert ids(api.get(f"/v1/deployments?agent_id={other.id}")) == [theirs]
    assert ids(api.get(f"/v1/deployments?agent_id={body['agent']}")) == [mine]
    assert ids(api.get("/v1/deployments?agent_id=agent_nope")) == []


def test_created_at_filters_are_inclusive(api, body):
    rows = [create(api, body, name=f"d{i}")["id"] for i in range(3)]
    base = timezone.now().replace(microsecond=0) - timedelta(days=3)
    for i, pk in enumerate(rows):
        Deployment.objects.filter(pk=pk).update(created_at=base + timedelta(days=i))
    day1 = (base + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(api.get(f"/v1/deployments?created_at[gte]={day1}")) == [rows[2], rows[1]]
    assert ids(api.get(f"/v1/deployments?created_at[lte]={day1}")) == [rows[1], rows[0]]
    assert ids(api.get(f"/v1/deployments?created_at[gte]={day1}&created_at[lte]={day1}")) == [rows[1]]
    offset = (base + timedelta(days=1)).astimezone(timezone.get_fixed_timezone(120)).isoformat()
    assert ids(api.get("/v1/deployments", {"created_at[gte]": offset})) == [rows[2], rows[1]]


def test_pages_follow_the_cursor_without_gaps_or_repeats(api, body):
    created = [create(api, body, name=f"d{i}")["id"] for i in range(7)]
    seen, page, pages = [], None, 0
    while True:
        query = {"limit": 3, **({"page": page} if page else {})}
        data = ok(api.get("/v1/deployments", query))
        seen += [d["id"] for d in data["data"]]
        pages += 1
        page = data["next_page"]
        if page is None:
            break
    assert seen == list(reversed(created))
    assert pages == 3


def test_cursor_is_stable_under_concurrent_inserts(api, body):
    first = [create(api, body, name=f"d{i}")["id"] for i in range(4)]
    page1 = ok(api.get("/v1/deployments", {"limit": 2}))
    newer = create(api, body, name="newer")["id"]
    page2 = ok(api.get("/v1/deployments", {"limit": 2, "page": page1["next_page"]}))
    assert [d["id"] for d in page2["data"]] == [first[1], first[0]]
    assert newer not in [d["id"] for d in page2["data"]]


@pytest.mark.parametrize("query, message", [
    ("status=archived", 'status: must be one of: "active", "paused"'),
    ("status=", 'status: must be one of: "active", "paused"'),
    ("include_archived=yes", "include_archived: must be true or false"),
    ("include_archived=1", "include_archived: must be true or false"),
    ("include_archived=true&status=active", "include_archived: cannot be combined with status"),
    ("created_at[gte]=yesterday", "created_at[gte]: must be an RFC 3339 timestamp"),
    ("created_at[lte]=2026-05-09", "created_at[lte]: must be an RFC 3339 timestamp"),
    ("created_at[lte]=2026-05-09T00:00:00", "created_at[lte]: must be an RFC 3339 timestamp"),
    ("created_at[gte]=2026-13-09T00:00:00Z", "created_at[gte]: must be an RFC 3339 timestamp"),
    ("limit=0", "limit: must be between 1 and 100"),
    ("limit=101", "limit: must be between 1 and 100"),
    ("limit=ten", "limit: must be an integer"),
    ("page=not-a-cursor", "page: invalid or expired pagination cursor"),
    ("agent_id=" + "a" * 65, "agent_id: must be an agent id"),
])
def test_bad_query_parameters_are_400_naming_them(api, query, message):
    assert error(api.get(f"/v1/deployments?{query}"), 400).startswith(message)


def test_cursor_of_another_list_is_refused(api):
    from core.pagination import encode_cursor

    foreign = encode_cursor("deployment_run", timezone.now(), "drun_x")
    assert error(api.get("/v1/deployments", {"page": foreign}), 400).startswith("page:")


def test_unknown_query_parameters_such_as_beta_are_ignored(api, body):
    pk = create(api, body)["id"]
    assert ids(api.get("/v1/deployments?beta=true&whatever=1")) == [pk]


def test_list_is_scoped_to_the_callers_tenant(api, body, other_tenant):
    mine = create(api, body)["id"]
    assert ids(other_tenant.client().get("/v1/deployments?include_archived=true")) == []
    assert ids(api.get("/v1/deployments")) == [mine]


def test_list_uses_a_constant_number_of_queries(api, body):
    for i in range(30):
        create(api, body, name=f"d{i}", schedule=WEEKLY)

    def count(limit: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert len(ok(api.get("/v1/deployments", {"limit": limit}))["data"]) == limit
        return len(queries)

    assert count(2) == count(30)
    assert count(30) <= 5


def test_list_items_are_full_deployments(api, body):
    created = create(api, body, schedule=WEEKLY, metadata={"a": "b"})
    listed = ok(api.get("/v1/deployments"))["data"][0]
    assert listed == created

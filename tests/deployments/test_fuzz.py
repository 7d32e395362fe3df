"""No input produces a 500: arbitrary JSON in every field of create and update, and arbitrary query
strings for list. Every refusal is a 4xx envelope naming a field."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.deployments.helpers import WEEKLY, base_body, create
from tests.factories import make_agent, make_environment

pytestmark = pytest.mark.django_db

FIELDS = ["name", "description", "agent", "environment_id", "initial_events", "resources", "vault_ids", "metadata",
          "budget", "schedule"]
TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=[]), max_size=12) | st.sampled_from(
    ["", "\x00", "\ud800", "text", "user.message", "github_repository", "cron", "agent", "limit", "0 0 * * *", "UTC",
     "a" * 70, "1", "USD", "file", "memory_store", "branch", "commit", "https://github.com/a/b", "/abs"]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False,
                                                                                              allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "text", "content", "id", "version", "url", "expression", "timezone", "source",
                         "rubric", "description", "max_list_cost", "amount", "currency", "authorization_token",
                         "checkout", "name", "sha", "mount_path", "file_id", "memory_store_id", "access"]) | TEXT,
        children, max_size=5,
    ),
    max_leaves=12,
)
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def world(tenant):
    agent, environment = make_agent(tenant), make_environment(tenant)
    client = tenant.client()
    return client, base_body(agent, environment), create(client, base_body(agent, environment), schedule=WEEKLY)["id"]


def _post(client, path: str, payload: dict):
    return client.generic("POST", path, json.dumps(payload), content_type="application/json")


def _assert_clean(response):
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["type"] in ("invalid_request_error", "not_found_error")
        assert error["message"]


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_any_value_in_any_create_field_is_never_a_500(world, field, value):
    client, body, _ = world
    _assert_clean(_post(client, "/v1/deployments", {**body, field: value}))


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=3))
def test_any_update_is_never_a_500(world, changes):
    client, _, deployment_id = world
    _assert_clean(_post(client, f"/v1/deployments/{deployment_id}", changes))


@SETTINGS
@given(params=st.dictionaries(
    st.sampled_from(["agent_id", "status", "include_archived", "created_at[gte]", "created_at[lte]", "limit", "page"]),
    st.text(max_size=40) | st.sampled_from(["true", "false", "active", "paused", "2026-01-01T00:00:00Z", "20"]),
    max_size=4,
))
def test_any_list_query_is_never_a_500(world, params):
    client, _, _ = world
    _assert_clean(client.get("/v1/deployments", params))


@pytest.mark.parametrize("method, path, status", [
    ("get", "/v1/deployments/depl%00x", 404),
    ("post", "/v1/deployments/depl%00x/pause", 404),
    ("post", "/v1/deployments/depl%00x", 404),
    ("get", "/v1/deployments/" + "d" * 2000, 404),
    ("get", "/v1/deployments/%F0%9F%98%80", 404),
    ("get", "/v1/deployments/%ED%A0%80", 404),
    ("get", "/v1/deployments?agent_id=a%00b", 400),
    ("get", "/v1/deployments?page=a%00b", 400),
    ("get", "/v1/deployments?created_at[gte]=2026-01-01T00:00:00%00Z", 400),
])
def test_odd_ids_and_query_values_are_clean_4xx(world, method, path, status):
    client, _, _ = world
    response = getattr(client, method)(path)
    assert response.status_code == status, response.content
    assert response.json()["type"] == "error"

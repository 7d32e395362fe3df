"""Bad input is a 400 that names the field; no input produces a 500."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from platform_app.models import Agent, Session

pytestmark = pytest.mark.django_db


def error_of(response, status=400):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["type"] == "error"
    return body["error"]["message"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"model": "claude-sonnet-4-6"}, "name: This field is required."),
        ({"name": "a"}, "model: This field is required."),
        ({"name": 5, "model": "m"}, "name: Not a valid string."),
        ({"name": "", "model": "m"}, "name: This field may not be blank."),
        ({"name": "x" * 257, "model": "m"}, "name: Ensure this field has no more than 256 characters."),
        ({"name": "a", "model": 42}, "model: must be a model id string or an object with an id"),
        ({"name": "a", "model": {"speed": "fast"}}, "model.id: is required"),
        ({"name": "a", "model": {"id": "m", "effort": "extreme"}}, "model.effort: must be one of low, medium, high, xhigh, max"),
        ({"name": "a", "model": "m", "tools": {}}, "tools: Expected an array."),
        ({"name": "a", "model": "m", "tools": [{"type": "hammer"}]}, "tools[0].type: must be one of"),
        ({"name": "a", "model": "m", "tools": [{"type": "agent_toolset_20260401", "configs": [{"name": "rm"}]}]}, "tools[0].configs[0].name:"),
        ({"name": "a", "model": "m", "tools": [{"type": "custom", "name": "x y", "description": "d", "input_schema": {"type": "object"}}]}, "tools[0].name:"),
        ({"name": "a", "model": "m", "tools": [{"type": "mcp_toolset", "mcp_server_name": "nope"}]}, "tools[0].mcp_server_name: no MCP server named 'nope'"),
        ({"name": "a", "model": "m", "mcp_servers": [{"type": "url", "name": "s", "url": "https://x"}]}, "mcp_servers[0]: server 's' is not referenced"),
        ({"name": "a", "model": "m", "skills": [{"type": "anthropic"}]}, "skills[0].skill_id: is required"),
        ({"name": "a", "model": "m", "metadata": {"k": 1}}, "metadata.k: must be a string"),
        ({"name": "a", "model": "m", "metadata": {str(i): "v" for i in range(17)}}, "metadata: must have at most 16 pairs"),
        ({"name": "a", "model": "m", "multiagent": {"type": "swarm"}}, "multiagent.type: must be one of coordinator, multiagent_20261001"),
        ({"name": "a", "model": "m", "multiagent": {"type": "coordinator", "agents": []}}, "multiagent.agents: must have at least 1 item"),
        ({"name": "a", "model": "m", "multiagent": {"type": "coordinator", "agents": [{"type": "self"}, {"type": "self"}]}}, "multiagent.agents: at most one"),
        ({"name": "a", "model": "m", "execution_identity": {"type": "aws_role"}}, "execution_identity.role_arn: is required"),
    ],
)
def test_agent_create_errors_name_the_field(api, body, message):
    assert error_of(api.post("/v1/agents", body, format="json")).startswith(message)
    assert not Agent.objects.exists()


def test_agent_update_refuses_clearing_name_and_model(api, make_agent):
    agent = make_agent()
    assert error_of(api.post(f"/v1/agents/{agent.id}", {"name": None}, format="json")).startswith("name:")
    assert error_of(api.post(f"/v1/agents/{agent.id}", {"model": None}, format="json")).startswith("model:")
    assert error_of(api.post(f"/v1/agents/{agent.id}", {"version": "1"}, format="json")) == "version: A valid integer is required."
    assert Agent.objects.get(pk=agent.pk).latest_version == 1


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/v1/environments", {}, "name: This field is required."),
        ("/v1/environments", {"name": "e", "config": {"type": "moon"}}, "config.type: must be one of cloud, self_hosted"),
        ("/v1/environments", {"name": "e", "config": {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": "x"}}}, "config.networking.allowed_hosts: must be an array"),
        ("/v1/environments", {"name": "e", "scope": "account"}, "scope: only 'organization' is supported"),
        ("/v1/environments", {"name": "e", "scope": "galaxy"}, "scope:"),
        ("/v1/vaults", {}, "display_name: This field is required."),
        ("/v1/vaults", {"display_name": ["x"]}, "display_name: Not a valid string."),
        ("/v1/sessions", {}, "agent: This field is required."),
        ("/v1/sessions", {"agent": "agent_x"}, "environment_id: This field is required."),
        ("/v1/sessions", {"agent": "agent_x", "environment_id": 7}, "environment_id: Not a valid string."),
        ("/v1/sessions", {"agent": "agent_x", "environment_id": "env_x", "resources": {}}, "resources: Expected an array."),
    ],
)
def test_create_errors_name_the_field(api, path, body, message):
    assert error_of(api.post(path, body, format="json")).startswith(message)


@pytest.mark.parametrize(
    "query, message",
    [
        ("limit=0", "limit:"),
        ("limit=101", "limit:"),
        ("limit=ten", "limit:"),
        ("include_archived=maybe", "include_archived:"),
        ("created_at[gte]=yesterday", "created_at[gte]:"),
        ("page=forged", "page:"),
    ],
)
def test_list_query_errors_name_the_parameter(api, query, message):
    assert error_of(api.get(f"/v1/agents?{query}")).startswith(message)


@pytest.mark.parametrize(
    "query, message",
    [
        ("order=sideways", "order:"),
        ("statuses[]=sleeping", "statuses:"),
        ("agent_version=0", "agent_version:"),
        ("created_at[lt]=nope", "created_at[lt]:"),
    ],
)
def test_session_list_query_errors_name_the_parameter(api, query, message):
    assert error_of(api.get(f"/v1/sessions?{query}")).startswith(message)


def test_a_cursor_from_another_list_is_refused(api, make_agent, make_environment):
    for n in range(3):
        make_agent(name=f"a{n}")
    cursor = api.get("/v1/agents?limit=1").json()["next_page"]
    assert error_of(api.get(f"/v1/environments?page={cursor}")).startswith("page:")


def test_agent_version_query_must_be_positive(api, make_agent):
    agent = make_agent()
    assert error_of(api.get(f"/v1/agents/{agent.id}?version=0")).startswith("version:")
    assert error_of(api.get(f"/v1/agents/{agent.id}?version=2"), 404) == f"agent {agent.id} has no version 2"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

FIELDS = {
    "/v1/agents": ["name", "model", "system", "description", "tools", "mcp_servers", "skills", "metadata", "multiagent", "execution_identity"],
    "/v1/environments": ["name", "description", "config", "metadata", "scope"],
    "/v1/vaults": ["display_name", "metadata"],
    "/v1/sessions": ["agent", "environment_id", "initial_events", "resources", "vault_ids", "metadata", "title", "budget"],
}
VALID = {
    "/v1/agents": {"name": "n", "model": "claude-sonnet-4-6"},
    "/v1/environments": {"name": "n"},
    "/v1/vaults": {"display_name": "n"},
}


@pytest.mark.parametrize("path", list(FIELDS))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_field_value_produces_a_500(api, make_agent, make_environment, path, data):
    if path == "/v1/sessions":
        base = {"agent": make_agent().id, "environment_id": make_environment().id}
    else:
        base = dict(VALID[path])
    field = data.draw(st.sampled_from(FIELDS[path]))
    value = data.draw(json_values)
    response = api.post(path, {**base, field: value}, format="json")
    assert response.status_code in (200, 400, 404), (field, value, response.content)
    if response.status_code != 200:
        assert response.json()["type"] == "error"


@pytest.mark.parametrize("path", ["/v1/agents/{agent}", "/v1/environments/{environment}", "/v1/vaults/{vault}"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_update_value_produces_a_500(api, make_agent, make_environment, make_vault, path, data):
    ids = {"agent": make_agent().id, "environment": make_environment().id, "vault": make_vault().id}
    kind = path.split("/")[2][:-1]
    fields = FIELDS[f"/v1/{path.split('/')[2]}"] + (["version"] if kind == "agent" else [])
    body = data.draw(st.dictionaries(st.sampled_from(fields), json_values, max_size=3))
    response = api.post(path.format(**ids), body, format="json")
    assert response.status_code in (200, 400, 404), (body, response.content)


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/v1/agents", {"name": "a", "model": "m", "tools": [{"type": "custom", "name": "t", "description": "d", "input_schema": {"type": "object", "x": "a\x00"}}]}, "tools[0].input_schema.x: must not contain NUL"),
        ("/v1/agents", {"name": "a", "model": "m", "metadata": {"k\x00": "v"}}, "metadata: keys must not contain NUL"),
        ("/v1/environments", {"name": "e", "config": {"type": "cloud", "packages": {"pip": ["\x00"]}}}, "config.packages.pip[0]: must not contain NUL"),
        ("/v1/vaults", {"display_name": "v", "metadata": {"k": "\x00"}}, "metadata.k: must not contain NUL"),
        ("/v1/sessions", {"agent": "agent_x", "environment_id": "env_x", "resources": [{"type": "github_repository", "url": "\x00"}]}, "resources[0].url: must not contain NUL"),
        # Lone surrogates only exist as JSON escapes: sent as raw text.
        ("/v1/agents", '{"name": "a", "model": "m", "metadata": {"k": "\\ud800"}}', "metadata.k: must not contain NUL (U+0000) or lone surrogate"),
        ("/v1/sessions", '{"agent": "agent_x", "environment_id": "env_x", "initial_events": [{"type": "user.message", "content": [{"type": "text", "text": "\\udfff"}]}]}', "initial_events[0].content[0].text: must not contain"),
    ],
)
def test_unstorable_characters_are_refused_naming_the_field(api, path, body, message):
    if isinstance(body, str):
        response = api.generic("POST", path, body, content_type="application/json")
    else:
        response = api.post(path, body, format="json")
    assert error_of(response).startswith(message)


def test_sessions_are_not_created_by_rejected_requests(api, make_agent, make_environment):
    agent, env = make_agent(), make_environment()
    api.post("/v1/sessions", {"agent": agent.id, "environment_id": env.id, "initial_events": [{"type": "user.message"}]}, format="json")
    assert not Session.objects.exists()


def shaped(types, keys):
    """Objects with a valid `type` and arbitrary values under the keys the shape knows, so the
    fuzzing reaches past the first check."""
    return st.fixed_dictionaries(
        {"type": st.sampled_from(types)}, optional={key: json_values | st.text(max_size=8) for key in keys}
    )


TOOL = shaped(
    ["agent_toolset_20260401", "mcp_toolset", "custom"],
    ["configs", "default_config", "mcp_server_name", "name", "description", "input_schema"],
)
TOOL_CONFIG = st.fixed_dictionaries(
    {"name": st.sampled_from(["bash", "web_fetch", "web_search"])},
    optional={k: json_values for k in ("enabled", "permission_policy", "allowed_domains", "blocked_domains", "max_content_tokens", "url_sources", "user_location", "type")},
)
ROSTER = st.lists(st.text(max_size=8) | shaped(["agent", "self", "advisor"], ["id", "version", "model"]), max_size=3)
MEMBER = shaped(["enabled", "disabled"], ["inline_agents", "predefined_agents", "model"])
SHAPED = {
    "tools": st.lists(TOOL | st.fixed_dictionaries({"type": st.just("agent_toolset_20260401"), "configs": st.lists(TOOL_CONFIG, max_size=3)}), max_size=3),
    "multiagent": st.fixed_dictionaries({"type": st.just("coordinator"), "agents": ROSTER})
    | st.fixed_dictionaries({"type": st.just("multiagent_20261001")}, optional={m: MEMBER | st.none() for m in ("advisor", "subagents", "workflows")}),
    "model": shaped(["x"], ["id", "effort", "speed", "inference_geo"]).map(lambda d: {k: v for k, v in d.items() if k != "type"}),
    "config": shaped(["cloud", "self_hosted"], ["networking", "packages"])
    | st.fixed_dictionaries({"type": st.just("cloud"), "networking": shaped(["limited"], ["allowed_hosts", "allow_mcp_servers", "allow_package_managers"])}),
    "initial_events": st.lists(shaped(["user.message", "user.define_outcome", "system.message"], ["content", "description", "rubric", "max_iterations"]), max_size=3),
    "resources": st.lists(shaped(["github_repository", "file", "memory_store"], ["url", "authorization_token", "checkout", "mount_path", "file_id", "memory_store_id", "access", "instructions"]), max_size=3),
    "budget": shaped(["limit"], ["max_list_cost"]),
    "agent": shaped(["agent", "agent_with_overrides"], ["id", "version"]),
}


@pytest.mark.parametrize(
    "path, field",
    [("/v1/agents", f) for f in ("tools", "multiagent", "model")]
    + [("/v1/environments", "config")]
    + [("/v1/sessions", f) for f in ("initial_events", "resources", "budget", "agent")],
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_shaped_value_produces_a_500(api, make_agent, make_environment, path, field, data):
    if path == "/v1/sessions":
        base = {"agent": make_agent().id, "environment_id": make_environment().id}
    else:
        base = dict(VALID[path])
    value = data.draw(SHAPED[field])
    response = api.post(path, {**base, field: value}, format="json")
    assert response.status_code in (200, 400, 404), (field, value, response.content)

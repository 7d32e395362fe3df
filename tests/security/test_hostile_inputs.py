"""Hand-written hostile inputs: each one a clear 4xx in the error envelope whose message names the
field or parameter — never a 500, never an echo of a huge input.

Wrong JSON types in every field, NUL and lone surrogates (PostgreSQL text cannot hold U+0000),
other control and exotic Unicode characters (accepted and returned unchanged, or refused by name),
oversized and deeply nested bodies, 10,000-character cron expressions and ids, time zones that
look like paths, out-of-range limits, forged and foreign pagination cursors, odd path segments.
"""

import json
import re

import pytest
from django.conf import settings
from django.core import signing

from core.parsers import MAX_DEPTH
from deployments_app import services as deployment_services
from deployments_app.models import Deployment
from platform_app import services as platform_services
from platform_app.models import Agent, Environment, Session, Vault
from tests.security.conftest import USER_MESSAGE
from tests.security.helpers import dotted, envelope_message, send, with_value

pytestmark = pytest.mark.django_db

KINDS = {
    "int": 7,
    "float": 1.5,
    "bool": True,
    "null": None,
    "list": ["x"],
    "dict": {"x": "y"},
    "str": "text",
}


class Refs:
    """Real rows for request bodies to reference, so a wrongly accepted value shows as a 200."""

    def __init__(self, tenant):
        scope = {"organization": tenant.organization, "workspace": tenant.workspace}
        self.agent = platform_services.agent_create(**scope, name="Triage bot", model="claude-sonnet-4-6")
        self.environment = platform_services.environment_create(**scope, name="prod")
        self.vault = platform_services.vault_create(**scope, display_name="Team credentials")
        self.deployment = deployment_services.deployment_create(
            **scope, name="Nightly", agent=self.agent.id, environment_id=self.environment.id,
            initial_events=[USER_MESSAGE],
        )


@pytest.fixture
def refs(tenant) -> Refs:
    return Refs(tenant)


# --- valid bodies, and the JSON types each of their fields accepts ---------------------------------


def deployment_body(refs: Refs) -> dict:
    return {
        "name": "Weekly compliance scan",
        "description": "Checks the repositories",
        "agent": {"type": "agent", "id": refs.agent.id, "version": 1},
        "environment_id": refs.environment.id,
        "initial_events": [{"type": "user.message", "content": [{"type": "text", "text": "Scan."}]}],
        "resources": [{"type": "github_repository", "url": "https://github.com/acme/app",
                       "authorization_token": "ghp_hostileTOKEN", "checkout": {"type": "branch", "name": "main"}}],
        "vault_ids": [refs.vault.id],
        "metadata": {"team": "sre"},
        "budget": {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}},
        "schedule": {"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"},
    }


DEPLOYMENT_FIELDS = {
    ("name",): {"str"},
    ("description",): {"str", "null"},
    ("agent",): {"str", "dict"},
    ("agent", "type"): {"str"},
    ("agent", "id"): {"str"},
    ("agent", "version"): {"int", "null"},
    ("environment_id",): {"str"},
    ("initial_events",): {"list"},
    ("initial_events", 0): {"dict"},
    ("initial_events", 0, "type"): {"str"},
    ("initial_events", 0, "content"): {"list"},
    ("initial_events", 0, "content", 0): {"dict"},
    ("initial_events", 0, "content", 0, "text"): {"str"},
    ("resources",): {"list", "null"},
    ("resources", 0): {"dict"},
    ("resources", 0, "url"): {"str"},
    ("resources", 0, "authorization_token"): {"str", "null"},
    ("resources", 0, "checkout"): {"dict", "null"},
    ("resources", 0, "checkout", "name"): {"str"},
    ("vault_ids",): {"list", "null"},
    ("vault_ids", 0): {"str"},
    ("metadata",): {"dict", "null"},
    ("metadata", "team"): {"str"},
    ("budget",): {"dict", "null"},
    ("budget", "max_list_cost"): {"dict"},
    ("budget", "max_list_cost", "amount"): {"str"},
    ("schedule",): {"dict", "null"},
    ("schedule", "type"): {"str"},
    ("schedule", "expression"): {"str"},
    ("schedule", "timezone"): {"str"},
}
# An update accepts the same shapes, and null in a metadata value (it deletes the key).
UPDATE_FIELDS = {**DEPLOYMENT_FIELDS, ("metadata", "team"): {"str", "null"}}
PREVIEW_FIELDS = {("expression",): {"str"}, ("timezone",): {"str"}, ("count",): {"int"}}


def agent_body(refs: Refs) -> dict:
    return {"name": "Researcher", "model": "claude-sonnet-4-6", "description": "Reads papers", "system": "Be brief.",
            "tools": [], "mcp_servers": [], "skills": [], "metadata": {"team": "r&d"}}


AGENT_FIELDS = {
    ("name",): {"str"},
    ("model",): {"str", "dict"},
    ("description",): {"str", "null"},
    ("system",): {"str", "null"},
    ("tools",): {"list"},
    ("mcp_servers",): {"list"},
    ("skills",): {"list"},
    ("metadata",): {"dict"},
    ("metadata", "team"): {"str"},
    ("multiagent",): {"dict", "null"},
    ("execution_identity",): {"dict", "null"},
}


# An update may clear the lists and the metadata with null.
AGENT_UPDATE_FIELDS = {**AGENT_FIELDS, **{(name,): {"list", "null"} for name in ("tools", "mcp_servers", "skills")},
                       ("metadata",): {"dict", "null"}, ("metadata", "team"): {"str", "null"}}


def environment_body(refs: Refs) -> dict:
    return {"name": "python-env", "description": "CI image", "config": {"type": "cloud"}, "metadata": {"os": "linux"}}


ENVIRONMENT_FIELDS = {
    ("name",): {"str"},
    ("description",): {"str", "null"},
    ("config",): {"dict", "null"},
    ("metadata",): {"dict"},
    ("metadata", "os"): {"str"},
}


def vault_body(refs: Refs) -> dict:
    return {"display_name": "Team credentials", "metadata": {"owner": "sre"}}


VAULT_FIELDS = {("display_name",): {"str"}, ("metadata",): {"dict"}, ("metadata", "owner"): {"str"}}


def session_body(refs: Refs) -> dict:
    return {
        "agent": refs.agent.id,
        "environment_id": refs.environment.id,
        "initial_events": [{"type": "user.message", "content": [{"type": "text", "text": "Hi"}]}],
        "resources": [],
        "vault_ids": [refs.vault.id],
        "metadata": {"ticket": "OPS-1"},
        "title": "Ad-hoc",
    }


SESSION_FIELDS = {
    ("agent",): {"str", "dict"},
    ("environment_id",): {"str"},
    ("initial_events",): {"list"},
    ("initial_events", 0, "content", 0, "text"): {"str"},
    ("resources",): {"list"},
    ("vault_ids",): {"list"},
    ("vault_ids", 0): {"str"},
    ("metadata",): {"dict"},
    ("metadata", "ticket"): {"str"},
    ("title",): {"str", "null"},
}

ENDPOINTS = {
    "create deployment": ("/v1/deployments", deployment_body, DEPLOYMENT_FIELDS),
    "update deployment": ("/v1/deployments/{deployment}", deployment_body, UPDATE_FIELDS),
    "schedule preview": ("/v1/deployments/schedule_preview",
                         lambda refs: {"expression": "0 20 * * 5", "timezone": "UTC", "count": 3}, PREVIEW_FIELDS),
    "create agent": ("/v1/agents", agent_body, AGENT_FIELDS),
    "update agent": ("/v1/agents/{agent}", agent_body, AGENT_UPDATE_FIELDS),
    "create environment": ("/v1/environments", environment_body, ENVIRONMENT_FIELDS),
    "create vault": ("/v1/vaults", vault_body, VAULT_FIELDS),
    "create session": ("/v1/sessions", session_body, SESSION_FIELDS),
}


def endpoint_path(template: str, refs: Refs) -> str:
    return template.format(deployment=refs.deployment.id, agent=refs.agent.id)


WRONG_TYPE_CASES = [
    pytest.param(endpoint, path, kind, id=f"{endpoint}-{dotted(path)}-{kind}")
    for endpoint, (_, _, fields) in ENDPOINTS.items()
    for path, accepted in fields.items()
    for kind in KINDS
    if kind not in accepted
]


def test_every_valid_base_body_is_accepted(api, refs):
    """The wrong-type cases below start from these bodies: each must be valid as it is."""
    for name, (template, make_body, _) in ENDPOINTS.items():
        response = send(api, "post", endpoint_path(template, refs), make_body(refs))
        assert response.status_code == 200, (name, response.content)


@pytest.mark.parametrize("endpoint,path,kind", WRONG_TYPE_CASES)
def test_a_wrong_json_type_in_any_field_is_a_400_naming_it(api, refs, endpoint, path, kind):
    template, make_body, _ = ENDPOINTS[endpoint]
    body = with_value(make_body(refs), path, KINDS[kind])
    message = envelope_message(send(api, "post", endpoint_path(template, refs), body), 400)
    assert dotted(path) in message, message


# --- NUL, lone surrogates, control and exotic characters ---------------------------------------------

TEXT_FIELDS = [
    ("create deployment", ("name",)),
    ("create deployment", ("description",)),
    ("create deployment", ("agent", "id")),
    ("create deployment", ("environment_id",)),
    ("create deployment", ("initial_events", 0, "content", 0, "text")),
    ("create deployment", ("resources", 0, "url")),
    ("create deployment", ("resources", 0, "authorization_token")),
    ("create deployment", ("resources", 0, "checkout", "name")),
    ("create deployment", ("vault_ids", 0)),
    ("create deployment", ("metadata", "team")),
    ("create deployment", ("schedule", "expression")),
    ("create deployment", ("schedule", "timezone")),
    ("update deployment", ("name",)),
    ("update deployment", ("metadata", "team")),
    ("schedule preview", ("expression",)),
    ("schedule preview", ("timezone",)),
    ("create agent", ("name",)),
    ("create agent", ("model",)),
    ("create agent", ("description",)),
    ("create agent", ("system",)),
    ("create agent", ("metadata", "team")),
    ("update agent", ("name",)),
    ("create environment", ("name",)),
    ("create environment", ("description",)),
    ("create environment", ("metadata", "os")),
    ("create vault", ("display_name",)),
    ("create vault", ("metadata", "owner")),
    ("create session", ("agent",)),
    ("create session", ("environment_id",)),
    ("create session", ("initial_events", 0, "content", 0, "text")),
    ("create session", ("vault_ids", 0)),
    ("create session", ("metadata", "ticket")),
    ("create session", ("title",)),
]
FORBIDDEN_CHARACTERS = {"nul": "bad\x00value", "only-nul": "\x00", "lone-surrogate": "bad\ud800value",
                        "low-surrogate": "\udfff"}


@pytest.mark.parametrize("what", FORBIDDEN_CHARACTERS)
@pytest.mark.parametrize("endpoint,path", [pytest.param(e, p, id=f"{e}-{dotted(p)}") for e, p in TEXT_FIELDS])
def test_nul_and_lone_surrogates_are_a_400_naming_the_field(api, refs, endpoint, path, what):
    template, make_body, _ = ENDPOINTS[endpoint]
    body = with_value(make_body(refs), path, FORBIDDEN_CHARACTERS[what])
    message = envelope_message(send(api, "post", endpoint_path(template, refs), body), 400)
    assert dotted(path) in message, message


@pytest.mark.parametrize("what", ["key-nul", "key-surrogate"])
@pytest.mark.parametrize("endpoint", ["create deployment", "update deployment", "create agent", "create environment",
                                      "create vault", "create session"])
def test_nul_and_lone_surrogates_in_a_metadata_key_are_a_400_naming_metadata(api, refs, endpoint, what):
    template, make_body, _ = ENDPOINTS[endpoint]
    key = {"key-nul": "te\x00am", "key-surrogate": "te\ud800am"}[what]
    body = {**make_body(refs), "metadata": {key: "x"}}
    message = envelope_message(send(api, "post", endpoint_path(template, refs), body), 400)
    assert message.startswith("metadata"), message


EXOTIC_TEXT = {
    "controls": "tab\tnew\nline\rbell\x07esc\x1bdel\x7f",
    "bidi-override": "\u202egnp.exe\u202c",
    "emoji-and-combining": "déploiement 🚀 e\u0301 名前",
    "zero-width-and-bom": "\ufeffzero\u200bwidth\u2060",
    "line-separators": "a\u2028b\u2029c\x85d",
    "astral": "\U0001f9ea\U00010348\U000e0041",
}
EXOTIC_FIELDS = [
    ("/v1/deployments", "deployment", deployment_body, ("name",)),
    ("/v1/deployments", "deployment", deployment_body, ("description",)),
    ("/v1/deployments", "deployment", deployment_body, ("metadata", "team")),
    ("/v1/deployments", "deployment", deployment_body, ("initial_events", 0, "content", 0, "text")),
    ("/v1/agents", "agent", agent_body, ("name",)),
    ("/v1/agents", "agent", agent_body, ("system",)),
    ("/v1/agents", "agent", agent_body, ("metadata", "team")),
    ("/v1/environments", "environment", environment_body, ("name",)),
    ("/v1/environments", "environment", environment_body, ("metadata", "os")),
    ("/v1/vaults", "vault", vault_body, ("display_name",)),
    ("/v1/vaults", "vault", vault_body, ("metadata", "owner")),
    ("/v1/sessions", "session", session_body, ("title",)),
    ("/v1/sessions", "session", session_body, ("metadata", "ticket")),
]


@pytest.mark.parametrize("what", EXOTIC_TEXT)
@pytest.mark.parametrize("collection,kind,make_body,path",
                         [pytest.param(*case, id=f"{case[1]}-{dotted(case[3])}") for case in EXOTIC_FIELDS])
def test_other_control_and_exotic_characters_round_trip_or_are_refused_by_name(
    api, refs, collection, kind, make_body, path, what
):
    value = EXOTIC_TEXT[what]
    if path[0] == "name" and kind == "deployment":
        value = "x" + value + "x"  # names are trimmed: keep the edges visible
    response = send(api, "post", collection, with_value(make_body(refs), path, value), keep=True)
    if response.status_code == 400:
        assert dotted(path) in envelope_message(response, 400)
        return
    assert response.status_code == 200, response.content
    created = response.json()
    stored = send(api, "get", f"{collection}/{created['id']}").json()
    for data in (created, stored):
        target = data
        for key in path:
            target = target[key]
        assert target == value


# --- sizes ---------------------------------------------------------------------------------------------

BODY_ENDPOINTS = [
    "/v1/deployments", "/v1/deployments/{deployment}", "/v1/deployments/schedule_preview",
    "/v1/deployments/{deployment}/pause", "/v1/deployments/{deployment}/run", "/v1/agents", "/v1/agents/{agent}",
    "/v1/agents/{agent}/archive", "/v1/environments", "/v1/environments/{environment}", "/v1/vaults",
    "/v1/vaults/{vault}", "/v1/sessions",
]


def any_path(template: str, refs: Refs) -> str:
    return template.format(deployment=refs.deployment.id, agent=refs.agent.id, environment=refs.environment.id,
                           vault=refs.vault.id)


def _row_counts() -> tuple:
    return tuple(model.objects.count() for model in (Deployment, Agent, Environment, Vault, Session))


@pytest.mark.parametrize("template", BODY_ENDPOINTS)
def test_a_body_over_the_size_limit_is_a_413_and_changes_nothing(api, refs, template):
    limit = settings.API_MAX_BODY_BYTES
    raw = json.dumps({"name": "x" * limit, "display_name": "x"})
    before = _row_counts()
    message = envelope_message(send(api, "post", any_path(template, refs), raw=raw, keep=True), 413)
    assert str(limit) in message
    assert _row_counts() == before


@pytest.mark.parametrize("template", ["/v1/deployments", "/v1/agents", "/v1/sessions"])
def test_a_declared_content_length_over_the_limit_is_a_413_before_reading(api, refs, template):
    message = envelope_message(
        send(api, "post", any_path(template, refs), raw="{}", CONTENT_LENGTH=str(10**12)), 413
    )
    assert str(10**12) in message


def test_a_non_numeric_content_length_is_a_400_naming_the_header(api):
    message = envelope_message(send(api, "post", "/v1/deployments", raw="{}", CONTENT_LENGTH="abc"), 400)
    assert "Content-Length" in message


@pytest.mark.parametrize("endpoint,path,limit", [
    ("create deployment", ("name",), 256),
    ("create deployment", ("description",), 2048),
    ("create deployment", ("metadata", "team"), 512),
    ("create deployment", ("resources", 0, "authorization_token"), 4096),
    ("create agent", ("name",), 256),
    ("create environment", ("name",), 256),
    ("create vault", ("display_name",), 255),
    ("create session", ("title",), 512),
])
def test_an_over_long_string_just_under_the_body_limit_is_a_400_naming_the_field(api, refs, endpoint, path, limit):
    template, make_body, _ = ENDPOINTS[endpoint]
    huge = "y" * (settings.API_MAX_BODY_BYTES - 4096)
    body = with_value(make_body(refs), path, huge)
    message = envelope_message(send(api, "post", endpoint_path(template, refs), body), 400)
    assert dotted(path) in message and str(limit) in message
    assert len(message) < 1000, "the message must not echo the value"


ID_FIELDS = [
    ("create deployment", ("agent",)),
    ("create deployment", ("agent", "id")),
    ("create deployment", ("environment_id",)),
    ("create deployment", ("vault_ids", 0)),
    ("create deployment", ("resources", 0)),
    ("update deployment", ("environment_id",)),
    ("create session", ("agent",)),
    ("create session", ("environment_id",)),
    ("create session", ("vault_ids", 0)),
]


@pytest.mark.parametrize("endpoint,path", [pytest.param(e, p, id=f"{e}-{dotted(p)}") for e, p in ID_FIELDS])
def test_a_10k_character_id_in_a_body_is_a_4xx_naming_the_field_without_echoing_it(api, refs, endpoint, path):
    template, make_body, _ = ENDPOINTS[endpoint]
    huge = "i" * 10_000
    value = {"type": "file", "file_id": huge} if path[-1] == 0 and path[0] == "resources" else huge
    response = send(api, "post", endpoint_path(template, refs), with_value(make_body(refs), path, value))
    assert response.status_code in (400, 404), response.content[:300]
    message = envelope_message(response, response.status_code)
    first_word = re.split(r"[.\[: ]", message, maxsplit=1)[0]  # "environment_id: …" or "environment env_… not found"
    assert first_word and first_word in dotted(path), message
    assert len(message) < 300, "the message must not echo the id"


def _nested(depth: int) -> str:
    """JSON text nested `depth` levels deep (json.dumps stops near 1,000 levels: written by hand)."""
    return "[" * depth + '"x"' + "]" * depth


def _splice(body: dict, path: tuple, text: str) -> str:
    """The JSON text of `body` with the value at `path` replaced by raw JSON `text`."""
    return json.dumps(with_value(body, path, "@@SPLICE@@")).replace('"@@SPLICE@@"', text)


# Endpoints that read a body (pause, unpause, archive and run take none and ignore one).
PARSING_ENDPOINTS = [t for t in BODY_ENDPOINTS if not t.endswith(("/pause", "/run", "/archive"))]


@pytest.mark.parametrize("depth", [100_000, 20_000])
@pytest.mark.parametrize("template", PARSING_ENDPOINTS)
def test_a_body_nested_beyond_the_parser_is_a_400(api, refs, template, depth):
    raw = '{"name": ' + _nested(depth) + "}"
    assert len(raw) < settings.API_MAX_BODY_BYTES
    message = envelope_message(send(api, "post", any_path(template, refs), raw=raw), 400)
    assert "nested too deeply" in message


DEEP_SLOTS = [
    ("create deployment", ("metadata", "team")),
    ("create deployment", ("initial_events", 0, "content")),
    ("create deployment", ("schedule",)),
    ("create deployment", ("budget", "max_list_cost")),
    ("create deployment", ("unknown_field",)),
    ("update deployment", ("resources",)),
    ("schedule preview", ("count",)),
    ("create agent", ("tools",)),
    ("create agent", ("model",)),
    ("create agent", ("multiagent",)),
    ("create agent", ("metadata",)),
    ("create environment", ("config",)),
    ("create vault", ("metadata",)),
    ("create session", ("resources",)),
    ("create session", ("initial_events",)),
    ("create session", ("agent",)),
]


@pytest.mark.parametrize("depth", [50, 900])
@pytest.mark.parametrize("endpoint,path", [pytest.param(e, p, id=f"{e}-{dotted(p)}") for e, p in DEEP_SLOTS])
def test_deep_json_that_parses_is_refused_by_field_not_by_a_500(api, refs, endpoint, path, depth):
    template, make_body, _ = ENDPOINTS[endpoint]
    raw = _splice(make_body(refs), path, _nested(depth))
    message = envelope_message(send(api, "post", endpoint_path(template, refs), raw=raw), 400)
    assert message.startswith(path[0]) or "nested too deeply" in message, message


def _agent_with_nested_tool_schema(levels: int) -> str:
    """An agent body whose custom tool's input schema nests `levels` properties deep (each level
    adds two JSON levels: the property's schema and its `properties` object)."""
    schema = '{"type": "object"}'
    for _ in range(levels):
        schema = '{"type": "object", "properties": {"a": ' + schema + "}}"
    tool = {"type": "custom", "name": "lookup", "description": "Looks things up", "input_schema": "@@SPLICE@@"}
    return json.dumps({"name": "Deep", "model": "claude-sonnet-4-6", "tools": [tool]}).replace('"@@SPLICE@@"', schema)


def test_a_tool_input_schema_as_deep_as_the_parser_allows_is_stored_and_read_back(api):
    # body (1), tools (2), the tool (3), input_schema (4), then two levels per property.
    levels = (MAX_DEPTH - 4) // 2
    raw = _agent_with_nested_tool_schema(levels)
    response = send(api, "post", "/v1/agents", raw=raw, keep=True)
    if response.status_code == 400:
        assert envelope_message(response, 400).startswith("tools")
        return
    assert response.status_code == 200, response.content[:300]
    stored = send(api, "get", f"/v1/agents/{response.json()['id']}")
    assert stored.status_code == 200
    assert stored.json()["tools"][0]["input_schema"] == json.loads(raw)["tools"][0]["input_schema"]


@pytest.mark.parametrize("levels", [(MAX_DEPTH - 4) // 2 + 1, 450])
def test_a_tool_input_schema_deeper_than_the_parser_allows_is_a_400(api, levels):
    raw = _agent_with_nested_tool_schema(levels)
    assert "nested too deeply" in envelope_message(send(api, "post", "/v1/agents", raw=raw), 400)


# --- schedules ---------------------------------------------------------------------------------------

BAD_EXPRESSIONS = {
    "10k-stars": " ".join(["*"] * 5000),
    "10k-digits": "1" * 10_000,
    "10k-one-field": "*/" + "9" * 9998,
    "newline-two-lines": "0 0 * * *\n0 1 * * *",
    "arabic-digits": "\u0660 \u0660 * * *",
    "fullwidth-digits": "\uff10 \uff10 * * *",
    "six-fields": "0 0 0 * * *",
    "shortcut": "@daily",
    "nul-inside": "0 0 * * *\x00",
    "huge-number": "0 99999999999999999999999 * * *",
    "never-fires": "0 0 31 2 *",
}
BAD_TIMEZONES = {
    "traversal": "../../etc/passwd",
    "deep-traversal": "Europe/../../../../../etc/passwd",
    "absolute": "/etc/passwd",
    "absolute-zoneinfo": "/usr/share/zoneinfo/UTC",
    "dot": ".",
    "dotdot": "..",
    "empty": "",
    "blank": "   ",
    "padded": " UTC ",
    "trailing-slash": "Europe/Paris/",
    "double-slash": "Europe//Paris",
    "backslash": "Europe\\Paris",
    "nul": "UTC\x00",
    "10k": "A" * 10_000,
    "65": "A" * 65,
    "wrong-case": "EUROPE/PARIS",
    "url": "file:///etc/passwd",
    "posix-string": "EST5EDT,M3.2.0,M11.1.0",
    "offset": "+05:00",
}


def _schedule_targets(refs):
    body = deployment_body(refs)
    return [
        ("post", "/v1/deployments", lambda schedule: {**body, "schedule": schedule}, "schedule."),
        ("post", f"/v1/deployments/{refs.deployment.id}", lambda schedule: {"schedule": schedule}, "schedule."),
        ("post", "/v1/deployments/schedule_preview", lambda schedule: {k: schedule[k] for k in ("expression",
                                                                                                 "timezone")}, ""),
    ]


@pytest.mark.parametrize("expression", BAD_EXPRESSIONS)
def test_hostile_cron_expressions_are_a_400_naming_the_expression(api, refs, expression):
    for method, path, make, prefix in _schedule_targets(refs):
        schedule = {"type": "cron", "expression": BAD_EXPRESSIONS[expression], "timezone": "UTC"}
        message = envelope_message(send(api, method, path, make(schedule)), 400)
        assert message.startswith(f"{prefix}expression:"), (path, message)
        assert len(message) < 1000, "the message must not echo the expression"


@pytest.mark.parametrize("zone", BAD_TIMEZONES)
def test_time_zones_that_are_not_iana_names_are_a_400_naming_the_timezone(api, refs, zone):
    for method, path, make, prefix in _schedule_targets(refs):
        schedule = {"type": "cron", "expression": "0 20 * * 5", "timezone": BAD_TIMEZONES[zone]}
        message = envelope_message(send(api, method, path, make(schedule)), 400)
        assert message.startswith(f"{prefix}timezone:"), (path, message)
        assert len(message) < 1000
        assert "root:" not in message  # nothing read from the file system ends up in a message


# --- query parameters ----------------------------------------------------------------------------------

LIST_ENDPOINTS = ["/v1/deployments", "/v1/deployment_runs", "/v1/agents", "/v1/agents/{agent}/versions",
                  "/v1/environments", "/v1/vaults", "/v1/sessions"]
BAD_LIMITS = ["-1", "0", "101", "1000000", "9" * 30, "9" * 5000, "1e2", "1.5", "abc", "0x10", "\u0661\u0660",
              "\uff15", "[]", "5;DROP TABLE x"]


@pytest.mark.parametrize("limit", BAD_LIMITS)
@pytest.mark.parametrize("template", LIST_ENDPOINTS)
def test_a_limit_outside_1_to_100_or_not_an_integer_is_a_400_naming_limit(api, refs, template, limit):
    message = envelope_message(send(api, "get", any_path(template, refs), data={"limit": limit}), 400)
    assert message.startswith("limit:"), message
    assert len(message) < 300


@pytest.mark.parametrize("template", LIST_ENDPOINTS)
def test_limits_at_the_edges_are_accepted(api, refs, template):
    for limit in ("1", "100"):
        assert send(api, "get", any_path(template, refs), data={"limit": limit}).status_code == 200


@pytest.mark.parametrize("path,param,prefix", [
    ("/v1/deployments", "agent_id", "agent_id:"),
    ("/v1/deployment_runs", "deployment_id", "deployment_id:"),
    ("/v1/sessions", "agent_id", "agent_id:"),
    ("/v1/sessions", "deployment_id", "deployment_id:"),
    ("/v1/sessions", "memory_store_id", "memory_store_id:"),
])
@pytest.mark.parametrize("value", ["x" * 10_000, "a\x00b"])
def test_a_filter_id_of_10k_characters_or_with_nul_is_a_400_naming_it(api, path, param, prefix, value):
    message = envelope_message(send(api, "get", path, data={param: value}), 400)
    assert message.startswith(prefix), message
    assert len(message) < 300


@pytest.mark.parametrize("path,param", [
    ("/v1/deployments", "created_at[gte]"),
    ("/v1/deployments", "created_at[lte]"),
    ("/v1/deployment_runs", "created_at[gt]"),
    ("/v1/deployment_runs", "created_at[lte]"),
    ("/v1/agents", "created_at[gte]"),
    ("/v1/sessions", "created_at[lt]"),
])
@pytest.mark.parametrize("value", [
    "2026-01-01T00:00:00+19:00",  # valid in Python, out of PostgreSQL's offset range
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    "yesterday",
    "2026-13-45T99:99:99Z",
    "2" * 5000,
])
def test_odd_timestamps_in_created_at_filters_are_a_400_or_a_valid_answer(api, path, param, value):
    response = send(api, "get", path, data={param: value})
    if response.status_code == 200:
        assert response.json()["data"] == []
        return
    assert envelope_message(response, 400).startswith(param)


@pytest.mark.parametrize("path,param,value", [
    ("/v1/deployments", "include_archived", "yes"),
    ("/v1/deployments", "status", "archived"),
    ("/v1/deployment_runs", "has_error", "maybe"),
    ("/v1/deployment_runs", "trigger_type", "cron"),
    ("/v1/agents", "include_archived", "2"),
    ("/v1/sessions", "order", "sideways"),
    ("/v1/sessions", "statuses[]", "exploded"),
])
def test_unknown_enum_values_in_the_query_are_a_400_naming_the_parameter(api, path, param, value):
    message = envelope_message(send(api, "get", path, data={param: value}), 400)
    assert message.startswith(param.rstrip("[]")), message


# --- pagination cursors --------------------------------------------------------------------------------

FORGED_CURSORS = {
    "garbage": "not-a-cursor",
    "empty-json": "e30",
    "long": "A" * 10_000,
    "nul": "abc\x00def",
    "unsigned-payload": "eyJrIjoiZGVwbG95bWVudCIsInQiOiIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwiaSI6IngifQ",
    "other-salt": signing.dumps({"k": "deployment", "t": "2026-01-01T00:00:00+00:00", "i": "x"}, salt="other"),
    "other-key": signing.dumps({"k": "deployment", "t": "2026-01-01T00:00:00+00:00", "i": "x"},
                               key="another-secret", salt="core.pagination.cursor"),
}


@pytest.mark.parametrize("cursor", FORGED_CURSORS)
@pytest.mark.parametrize("template", LIST_ENDPOINTS)
def test_a_forged_cursor_is_a_400_naming_page(api, refs, template, cursor):
    message = envelope_message(send(api, "get", any_path(template, refs), data={"page": FORGED_CURSORS[cursor]}), 400)
    assert message.startswith("page:"), message


def _first_cursor(api, path: str) -> str:
    page = send(api, "get", path, data={"limit": 1}).json()
    assert page["next_page"], page
    return page["next_page"]


@pytest.fixture
def two_of_each(api, refs, tenant):
    """Two rows of every listed kind, so that each list's first page of 1 has a next_page."""
    Refs(tenant)
    from runs_app.firing import run_manually

    for deployment in Deployment.objects.filter(organization=tenant.organization):
        run_manually(deployment=deployment)
    platform_services.agent_update(agent=refs.agent, system="v2")
    return refs


CURSOR_SOURCES = {
    "/v1/deployments": "/v1/agents",
    "/v1/deployment_runs": "/v1/deployments",
    "/v1/agents": "/v1/environments",
    "/v1/environments": "/v1/vaults",
    "/v1/vaults": "/v1/sessions",
    "/v1/sessions": "/v1/deployment_runs",
    "/v1/agents/{agent}/versions": "/v1/agents",
}


@pytest.mark.parametrize("target,source", CURSOR_SOURCES.items())
def test_a_cursor_from_another_list_is_a_400_naming_page(api, two_of_each, target, source):
    cursor = _first_cursor(api, any_path(source, two_of_each))
    assert _first_cursor(api, any_path(target, two_of_each))  # the target list does paginate
    message = envelope_message(send(api, "get", any_path(target, two_of_each), data={"page": cursor}), 400)
    assert message.startswith("page:"), message


def test_a_versions_cursor_of_one_agent_is_refused_for_another(api, tenant, two_of_each):
    other = platform_services.agent_create(organization=tenant.organization, workspace=tenant.workspace,
                                           name="Other", model="claude-sonnet-4-6")
    platform_services.agent_update(agent=other, system="v2")
    cursor = _first_cursor(api, f"/v1/agents/{two_of_each.agent.id}/versions")
    response = send(api, "get", f"/v1/agents/{other.id}/versions", data={"page": cursor})
    assert envelope_message(response, 400).startswith("page:")


def test_ascending_and_descending_session_cursors_do_not_mix(api, two_of_each):
    descending = _first_cursor(api, "/v1/sessions")
    response = send(api, "get", "/v1/sessions", data={"page": descending, "order": "asc"})
    assert envelope_message(response, 400).startswith("page:")


@pytest.mark.parametrize("payload", [
    {"k": "deployment", "t": "not a date", "i": "x"},
    {"k": "deployment", "t": "2026-01-01T00:00:00", "i": "x"},
    {"k": "deployment", "t": 5, "i": "x"},
    {"k": "deployment", "i": "x"},
    {"k": "deployment", "t": "2026-01-01T00:00:00+00:00", "i": "x\x00"},
    ["deployment"],
])
def test_a_validly_signed_cursor_with_an_odd_payload_is_a_400_not_a_500(api, payload):
    cursor = signing.dumps(payload, salt="core.pagination.cursor", compress=True)
    response = send(api, "get", "/v1/deployments", data={"page": cursor})
    assert envelope_message(response, 400).startswith("page:")


def test_a_signed_cursor_with_an_offset_postgresql_cannot_store_is_read_in_utc(api):
    payload = {"k": "deployment", "t": "2026-01-01T00:00:00+19:00", "i": "x"}
    cursor = signing.dumps(payload, salt="core.pagination.cursor", compress=True)
    assert send(api, "get", "/v1/deployments", data={"page": cursor}).json() == {"data": [], "next_page": None}


def test_a_server_cursor_pages_through_its_own_list(api, tenant, refs):
    Refs(tenant)
    first = send(api, "get", "/v1/deployments", data={"limit": 1}).json()
    second = send(api, "get", "/v1/deployments", data={"limit": 1, "page": first["next_page"]}).json()
    assert [d["id"] for d in first["data"] + second["data"]] == list(
        Deployment.objects.order_by("-created_at", "-id").values_list("id", flat=True)
    )
    assert second["next_page"] is None


# --- ids and path segments -----------------------------------------------------------------------------

BY_ID = [
    ("get", "/v1/deployments/{}"), ("post", "/v1/deployments/{}"), ("post", "/v1/deployments/{}/pause"),
    ("post", "/v1/deployments/{}/unpause"), ("post", "/v1/deployments/{}/archive"), ("post", "/v1/deployments/{}/run"),
    ("get", "/v1/deployment_runs/{}"), ("get", "/v1/agents/{}"), ("post", "/v1/agents/{}"),
    ("get", "/v1/agents/{}/versions"), ("post", "/v1/agents/{}/archive"), ("get", "/v1/environments/{}"),
    ("post", "/v1/environments/{}"), ("post", "/v1/environments/{}/archive"), ("get", "/v1/vaults/{}"),
    ("post", "/v1/vaults/{}"), ("post", "/v1/vaults/{}/archive"), ("get", "/v1/sessions/{}"),
]
WEIRD_SEGMENTS = {
    "10k": "d" * 10_000,
    "nul": "depl_%00",
    "invalid-utf8": "%FF%FE%FD",
    "overlong-slash": "%C0%AF",
    "encoded-slash": "..%2F..%2Fetc%2Fpasswd",
    "crlf": "x%0D%0ASet-Cookie:%20a=b",
    "percent": "%25%25",
    "space": "depl%20x",
    "bidi": "%E2%80%AEdepl",
    "emoji": "%F0%9F%9A%80",
    "sql": "x'%20OR%20'1'='1",
    "semicolon": "depl;x=1",
    "prefix-only": "depl_",
}


@pytest.mark.parametrize("segment", WEIRD_SEGMENTS)
@pytest.mark.parametrize("method,template", BY_ID)
def test_odd_ids_in_the_path_are_a_clear_4xx(api, method, template, segment):
    response = send(api, method, template.format(WEIRD_SEGMENTS[segment]))
    assert response.status_code in (400, 404), (response.status_code, response.content[:300])
    message = envelope_message(response, response.status_code)
    assert len(message) < 300, "the message must not echo a huge id"
    assert "Set-Cookie" not in response and "a=b" not in response.cookies
    if "%00" in WEIRD_SEGMENTS[segment]:
        assert message.startswith("path:"), message


def test_an_unknown_route_of_10k_characters_is_a_404_that_does_not_echo_it(api):
    response = send(api, "get", "/v1/" + "u" * 10_000)
    assert len(envelope_message(response, 404)) < 300


# --- headers ---------------------------------------------------------------------------------------------


def test_an_api_key_of_10k_characters_is_a_401(tenant):
    response = send(tenant.client(HTTP_X_API_KEY="k" * 10_000), "get", "/v1/deployments")
    assert len(envelope_message(response, 401)) < 300


def test_a_beta_header_of_10k_characters_is_a_400_naming_the_header(tenant):
    response = send(tenant.client(HTTP_ANTHROPIC_BETA="b" * 10_000), "get", "/v1/deployments")
    message = envelope_message(response, 400)
    assert "anthropic-beta" in message and len(message) < 600


@pytest.mark.parametrize("workspace", ["\x00", "wrkspc_\x00", "w" * 10_000, "' OR 1=1 --", "%00"])
def test_an_odd_workspace_header_is_a_403(tenant, workspace):
    response = send(tenant.client(HTTP_ANTHROPIC_WORKSPACE_ID=workspace), "get", "/v1/deployments")
    assert "workspace" in envelope_message(response, 403)


@pytest.mark.parametrize("key", ["a\x00b", "k" * 10_000, "\ud800", "   "])
def test_an_odd_idempotency_key_is_a_400_naming_the_header(tenant, refs, key):
    body = {"agent": refs.agent.id, "environment_id": refs.environment.id}
    response = send(tenant.client(HTTP_IDEMPOTENCY_KEY=key), "post", "/v1/sessions", body)
    message = envelope_message(response, 400)
    assert message.startswith("Idempotency-Key:") and len(message) < 300


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_that_is_not_json_is_a_400(api, content_type):
    response = api.generic("POST", "/v1/deployments", "name=x", content_type=content_type)
    assert envelope_message(response, 400)


@pytest.mark.parametrize("raw", ["[]", '"x"', "5", "null", "{", '{"a": NaN}', '{"a": Infinity}', "\xff\xfe",
                                 '{"name": "x", "name": 5}'])
@pytest.mark.parametrize("template", ["/v1/deployments", "/v1/agents", "/v1/sessions", "/v1/vaults"])
def test_a_body_that_is_not_one_json_object_is_a_400(api, template, raw):
    response = send(api, "post", template, raw=raw.encode("latin-1") if raw == "\xff\xfe" else raw)
    assert envelope_message(response, 400)

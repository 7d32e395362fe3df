"""The OpenAPI document: valid, complete (every /v1 route and method), and true (real responses
of every operation match the schema documented for their status code)."""

import json
import re
from io import StringIO

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema
from jsonschema import Draft202012Validator
from rest_framework.views import APIView

from tests.conftest import BETA

pytestmark = pytest.mark.django_db

GITHUB_TOKEN = "ghp_openapiTestTokenThatMustNeverBeReturned000"


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    from django.test import Client

    with django_db_blocker.unblock():
        response = Client().get("/v1/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)


def test_schema_is_valid_openapi_3_1_with_no_generator_warnings():
    out = StringIO()
    call_command("spectacular", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    document = json.loads(out.getvalue())
    validate_schema(document)
    assert document["openapi"] == "3.1.0"
    scheme = document["components"]["securitySchemes"]["ApiKeyAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")


def _v1_routes(patterns=None, prefix=""):
    """(path template, view class) for every DRF view mounted under /v1/, from the URLconf."""
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _v1_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
            if route.startswith("v1/") and view_class is not None and issubclass(view_class, APIView):
                yield "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route), view_class


def test_every_v1_route_and_method_is_documented(schema):
    docs_views = {"/v1/openapi.json", "/v1/docs", "/v1/redoc"}
    expected = set()
    for path, view_class in _v1_routes():
        if path in docs_views:
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view_class, method):
                expected.add((path, method))
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert len(expected) >= 30
    assert expected - documented == set()
    assert documented - expected == set()
    assert not any(path in schema["paths"] for path in (*docs_views, "/metrics", "/healthz", "/readyz"))


def test_every_operation_documents_the_error_envelope_and_headers(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation["operationId"] and operation["summary"] and operation["tags"], (method, path)
            for status in ("400", "401", "403", "404", "429"):
                content = operation["responses"][status]["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            if method == "post":
                assert "413" in operation["responses"]
            ok = operation["responses"]["200"]
            assert "request-id" in ok["headers"]
            assert ok["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
            names = {(p["name"], p["in"]) for p in operation["parameters"]}
            assert ("anthropic-beta", "header") in names
            assert operation["security"] == [{"ApiKeyAuth": []}]
    envelope = schema["components"]["schemas"]["Error"]
    assert envelope["required"] == ["type", "error", "request_id"]
    assert set(envelope["properties"]["error"]["properties"]["type"]["enum"]) >= {
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "rate_limit_error",
    }


def test_list_parameters_are_typed_with_their_enums(schema):
    def parameter(path, name):
        return next(p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == name)

    assert parameter("/v1/deployments", "status")["schema"]["enum"] == ["active", "paused"]
    assert parameter("/v1/deployments", "include_archived")["schema"]["type"] == "boolean"
    assert parameter("/v1/deployments", "limit")["schema"] == {"type": "integer", "minimum": 1, "maximum": 100,
                                                               "default": 20}
    assert parameter("/v1/deployment_runs", "trigger_type")["schema"]["enum"] == ["schedule", "manual"]
    assert parameter("/v1/deployment_runs", "created_at[lte]")["schema"] == {"type": "string", "format": "date-time"}
    assert parameter("/v1/sessions", "statuses[]")["schema"]["items"]["enum"] == [
        "rescheduling", "running", "idle", "terminated"]


def test_response_ids_are_strings_and_nullable_fields_are_nullable(schema):
    components = schema["components"]["schemas"]
    deployment = components["Deployment"]["properties"]
    assert deployment["id"]["type"] == "string"
    assert {"type": "null"} in deployment["archived_at"]["anyOf"]
    assert {"type": "null"} in deployment["schedule"]["anyOf"]
    run = components["DeploymentRun"]["properties"]
    assert {"type": "null"} in run["session_id"]["anyOf"]
    assert {"type": "null"} in run["error"]["anyOf"]
    # The write-only GitHub token is accepted on input and absent from what is returned.
    github_out = components["BetaManagedAgentsGitHubRepositoryResourceConfig"]["properties"]
    assert "authorization_token" not in github_out


# --- real responses against the schema ----------------------------------------------------------------


class Conformance:
    """Calls the API and checks each response against the schema of its operation and status."""

    def __init__(self, schema, client):
        self.schema = schema
        self.client = client
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, method: str, template: str, ids: dict | None = None, *, status: int = 200, data=None,
                 query: str = "", client=None, **headers):
        path = template.format(**(ids or {})) + (f"?{query}" if query else "")
        client = client or self.client
        if method == "get":
            response = client.get(path, **headers)
        elif method == "delete":
            response = client.delete(path, **headers)
        else:
            response = client.post(path, data if data is not None else None, format="json", **headers)
        assert response.status_code == status, (method, path, response.content[:500])
        operation = self.schema["paths"][template][method]
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} {template} returned undocumented {status}"
        body_schema = documented["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**body_schema, "components": self.schema["components"]})
        problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(response.json())]
        assert problems == [], (method, template, status, problems[:5])
        assert response["request-id"]
        self.seen.add((template, method))
        return response.json()


def test_real_responses_of_every_operation_match_the_schema(schema, tenant, other_tenant):
    check = Conformance(schema, tenant.client())

    agent = check("post", "/v1/agents", data={"name": "Triage", "model": "claude-sonnet-4-6"})
    ids = {"agent_id": agent["id"]}
    check("get", "/v1/agents", query="include_archived=true&limit=5")
    check("get", "/v1/agents/{agent_id}", ids, query="version=1")
    check("post", "/v1/agents/{agent_id}", ids, data={"version": 1, "description": "Nightly triage"})
    check("get", "/v1/agents/{agent_id}/versions", ids)

    environment = check("post", "/v1/environments", data={"name": "prod", "config": {"type": "cloud"}})
    ids["environment_id"] = environment["id"]
    check("get", "/v1/environments")
    check("get", "/v1/environments/{environment_id}", ids)
    check("post", "/v1/environments/{environment_id}", ids, data={"description": "Production"})

    vault = check("post", "/v1/vaults", data={"display_name": "Team credentials"})
    ids["vault_id"] = vault["id"]
    check("get", "/v1/vaults")
    check("get", "/v1/vaults/{vault_id}", ids)
    check("post", "/v1/vaults/{vault_id}", ids, data={"metadata": {"team": "ops"}})

    body = {
        "name": "Nightly triage",
        "agent": agent["id"],
        "environment_id": environment["id"],
        "initial_events": [{"type": "user.message", "content": [{"type": "text", "text": "Triage."}]}],
        "resources": [{"type": "github_repository", "url": "https://github.com/acme/app",
                       "authorization_token": GITHUB_TOKEN}],
        "vault_ids": [vault["id"]],
        "metadata": {"team": "ops"},
        "schedule": {"type": "cron", "expression": "30 2 * * *", "timezone": "America/New_York"},
    }
    deployment = check("post", "/v1/deployments", data=body)
    ids["deployment_id"] = deployment["id"]
    check("get", "/v1/deployments", query="status=active&limit=1")
    check("get", "/v1/deployments/{deployment_id}", ids)
    check("post", "/v1/deployments/{deployment_id}", ids, data={"description": "Every night", "budget": None})
    check("post", "/v1/deployments/{deployment_id}/pause", ids)
    run = check("post", "/v1/deployments/{deployment_id}/run", ids)
    ids["run_id"] = run["id"]
    check("post", "/v1/deployments/{deployment_id}/unpause", ids)
    preview = check("post", "/v1/deployments/schedule_preview",
                    data={"expression": "30 2 * * *", "timezone": "America/New_York", "count": 3})
    assert len(preview["upcoming_runs_at"]) == 3 and preview["dst_notes"]
    check("get", "/v1/deployment_runs", query=f"deployment_id={deployment['id']}&trigger_type=manual&has_error=false")
    check("get", "/v1/deployment_runs/{run_id}", ids)
    check("post", "/v1/deployments/{deployment_id}/backfill", ids,
          data={"start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"})

    session = check("post", "/v1/sessions", data={"agent": agent["id"], "environment_id": environment["id"]},
                    HTTP_IDEMPOTENCY_KEY="conformance-1")
    ids["session_id"] = session["id"]
    check("get", "/v1/sessions", query="order=asc&statuses[]=idle&statuses[]=running")
    check("get", "/v1/sessions/{session_id}", ids)

    check("post", "/v1/deployments/{deployment_id}/archive", ids)
    check("post", "/v1/deployments/{deployment_id}/unpause", ids, status=400)
    check("post", "/v1/vaults/{vault_id}/archive", ids)
    check("post", "/v1/environments/{environment_id}/archive", ids)
    check("post", "/v1/agents/{agent_id}/archive", ids)

    # Outgoing webhook endpoints, with their own beta header.
    hooks = tenant.client(HTTP_ANTHROPIC_BETA="webhooks-2026-10-07")
    endpoint = check("post", "/v1/organizations/webhooks", client=hooks,
                     data={"url": "https://93.184.216.34/hooks", "enabled_events": ["deployment.paused"]})
    ids["endpoint_id"] = endpoint["id"]
    check("get", "/v1/organizations/webhooks", query="limit=5&order=asc", client=hooks)
    check("get", "/v1/organizations/webhooks/{endpoint_id}", ids, client=hooks)
    check("post", "/v1/organizations/webhooks/{endpoint_id}", ids, data={"state": "disabled"}, client=hooks)
    check("post", "/v1/organizations/webhooks/{endpoint_id}/regenerate_signing_secret", ids, client=hooks)
    check("delete", "/v1/organizations/webhooks/{endpoint_id}", ids, client=hooks)

    # The error envelope, for each documented error status.
    check("get", "/v1/deployments", query="limit=0", status=400)
    check("get", "/v1/deployments/{deployment_id}", {"deployment_id": "depl_nope"}, status=404)
    check("get", "/v1/deployments/{deployment_id}", ids, client=other_tenant.client(), status=404)
    check("get", "/v1/deployment_runs", client=tenant.client(HTTP_X_API_KEY="sk-wrong"), status=401)
    check("get", "/v1/vaults", client=tenant.client(HTTP_ANTHROPIC_BETA="other-beta"), status=400)

    every_operation = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert every_operation - check.seen == set()
    assert GITHUB_TOKEN not in json.dumps(deployment)


def test_permission_error_matches_the_envelope(schema, tenant):
    from accounts_app.services import api_key_create, workspace_get_or_create

    workspace = workspace_get_or_create(organization=tenant.organization, name="Team B")
    _, bound_key = api_key_create(organization=tenant.organization, workspace=workspace)
    client = tenant.client(HTTP_X_API_KEY=bound_key, HTTP_ANTHROPIC_WORKSPACE_ID=tenant.workspace.id)
    Conformance(schema, client)("get", "/v1/deployments", status=403)


# --- the docs pages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/docs", "/v1/redoc"])
def test_docs_pages_render_with_local_assets_only(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "/v1/openapi.json" in html
    assert re.findall(r"https?://", html) == []
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        assert asset.startswith("/static/"), asset
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not a local static file"


def test_api_docs_page_needs_no_api_key_and_the_schema_neither(client):
    assert client.get("/v1/openapi.json").status_code == 200
    assert client.get("/v1/docs", HTTP_ANTHROPIC_BETA=BETA).status_code == 200

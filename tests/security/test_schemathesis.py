"""schemathesis against our own OpenAPI document (/v1/openapi.json), in-process through the WSGI
application: every operation, positive and negative inputs (including requests without a key),
no 5xx, every response (success and error) conforming to its schema, every status code declared.

Reproducible: a fixed seed, derandomized generation, no example database. Path parameters, the
agent/deployment filters and the references inside request bodies are mostly swapped for the ids
of a seeded tenant, and some bodies for a known-valid one, so that every operation also reaches
real rows and answers 200 — a schema that only ever sees 400s and 404s proves little.

To replay one operation: `make test PYTEST_ARGS="tests/security/test_schemathesis.py -v"` and read
the reproduction schemathesis prints; every example starts from the same seeded tenant.
"""

import copy

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.conftest import BETA
from tests.security.conftest import GITHUB_TOKEN, USER_MESSAGE

SEED = 20260401
MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
          response_headers_conformance]


def in_test_transaction(app):
    """The Django WSGI handler, minus the request_started/finished hooks that close a connection
    whose autocommit differs from the settings: that is the test's open transaction, which must
    survive every request (Django's own test client does the same)."""

    def wsgi(environ, start_response):
        signals.request_started.disconnect(close_old_connections)
        signals.request_finished.disconnect(close_old_connections)
        try:
            result = app(environ, start_response)
            body = b"".join(result)
            if hasattr(result, "close"):
                result.close()
            return [body]
        finally:
            signals.request_started.connect(close_old_connections)
            signals.request_finished.connect(close_old_connections)

    return wsgi


CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        # The coverage phase (boundary values of every keyword) passes too, but takes ~5 minutes on the
        # SDK-sized request schemas: fuzzing alone keeps the run near two.
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", in_test_transaction(application), config=CONFIG)

# --- steering generation towards the seeded tenant ------------------------------------------------

PLACEHOLDER = "SEEDED."


def seeded(kind: str) -> str:
    """A stand-in for a seeded id. Examples are drawn before the tenant exists (some at
    collection time), so the test swaps stand-ins for the real ids just before each call.
    (Path parameters reach the hooks URL-encoded: the stand-in uses no character that changes.)"""
    return f"{PLACEHOLDER}{kind}"


def resolve(value, ids: dict[str, str]):
    if isinstance(value, str) and value.startswith(PLACEHOLDER) and value[len(PLACEHOLDER):] in ids:
        return ids[value[len(PLACEHOLDER):]]
    if isinstance(value, dict):
        return {key: resolve(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, ids) for item in value]
    return value


REPOSITORY = {"type": "github_repository", "url": "https://github.com/acme/app", "authorization_token": GITHUB_TOKEN,
              "checkout": {"type": "branch", "name": "main"}, "mount_path": "/workspace/app"}
VALID_BODIES = {
    "POST /v1/deployments": {
        "name": "Weekday digest",
        "description": "Summarise yesterday's incidents",
        "agent": {"type": "agent", "id": seeded("agent_id"), "version": 1},
        "environment_id": seeded("environment_id"),
        "initial_events": [USER_MESSAGE],
        "resources": [REPOSITORY],
        "vault_ids": [seeded("vault_id")],
        "metadata": {"team": "sre"},
        "budget": {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}},
        "schedule": {"type": "cron", "expression": "30 7 * * 1-5", "timezone": "America/New_York"},
    },
    "POST /v1/deployments/{deployment_id}": {
        "name": "Renamed",
        "agent": seeded("agent_id"),
        "metadata": {"team": None, "owner": "ops"},
        "schedule": None,
        "resources": [REPOSITORY],
    },
    "POST /v1/deployments/schedule_preview": {"expression": "0 2 * * 0", "timezone": "Europe/London", "count": 7},
    "POST /v1/deployments/{deployment_id}/backfill": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"},
    "POST /v1/sessions": {
        "agent": seeded("agent_id"),
        "environment_id": seeded("environment_id"),
        "initial_events": [USER_MESSAGE],
        "vault_ids": [seeded("vault_id")],
        "title": "Ad-hoc triage",
        "metadata": {"ticket": "OPS-1"},
    },
    "POST /v1/agents/{agent_id}": {"description": "Triages issues", "metadata": {"tier": "gold"}},
    "POST /v1/environments/{environment_id}": {"name": "staging", "metadata": {"region": "eu"}},
    "POST /v1/vaults/{vault_id}": {"display_name": "Renamed vault", "metadata": {"owner": "sre"}},
}


def _seeded_body(body):
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if isinstance(body.get("agent"), str):
        body["agent"] = seeded("agent_id")
    elif isinstance(body.get("agent"), dict):
        body["agent"] = {**body["agent"], "id": seeded("agent_id")}
    if "environment_id" in body:
        body["environment_id"] = seeded("environment_id")
    if isinstance(body.get("vault_ids"), list):
        body["vault_ids"] = [seeded("vault_id")] if body["vault_ids"] else []
    return body


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """3 examples in 4 name the seeded rows, the rest keep what schemathesis generated."""
    substituted = {key: seeded(key) for key in path_parameters or {}}
    return st.integers(0, 3).map(lambda pick: substituted if pick else path_parameters)


@schema.hook
def flatmap_query(context, query):
    if not isinstance(query, dict) or not {"agent_id", "deployment_id"} & set(query):
        return st.just(query)
    substituted = {key: seeded(key) if key in ("agent_id", "deployment_id") else value for key, value in query.items()}
    return st.integers(0, 3).map(lambda pick: substituted if pick else query)


@schema.hook
def flatmap_body(context, body):
    """Generated as is (1 in 8), with the seeded references (5 in 8), or a known-valid body (2 in 8)."""
    valid = VALID_BODIES.get(context.operation.label) if context.operation else None
    choices = [body, *[_seeded_body(body)] * 5, *[copy.deepcopy(valid) if valid else _seeded_body(body)] * 2]
    return st.sampled_from(choices)


@schema.hook
def map_headers(context, headers):
    # A random workspace id is a 403 for every request; the workspace header has its own tests.
    if headers:
        headers.pop("anthropic-workspace-id", None)
    return headers


# --- the test -------------------------------------------------------------------------------------


@pytest.fixture
def statuses():
    """Every status one operation answered; the operation must have succeeded at least once."""
    seen: list[int] = []
    yield seen
    assert seen, "no example reached the API"
    assert any(200 <= status < 300 for status in seen), f"no example of this operation succeeded: {sorted(set(seen))}"


@pytest.mark.django_db
# The webhooks operations take another beta header and have a run of their own (tests/webhooks).
@schema.exclude(tag="Webhooks").parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_schema(case, tenant, world, statuses):
    ids = world.as_path_parameters()
    case.path_parameters = resolve(case.path_parameters, ids)
    case.query = resolve(case.query, ids)
    case.body = resolve(case.body, ids)
    # Each example starts from the seeded tenant: an archive in one example must not turn every
    # later one into a 400, and a failed statement must not abort the test's transaction.
    savepoint = transaction.savepoint()
    try:
        response = case.call_and_validate(
            headers={"x-api-key": tenant.key, "anthropic-beta": BETA, "anthropic-version": "2023-06-01"},
            checks=CHECKS,
        )
        statuses.append(response.status_code)
    finally:
        transaction.savepoint_rollback(savepoint)

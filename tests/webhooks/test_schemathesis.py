"""schemathesis on the webhooks operations of our OpenAPI document, in-process, as
tests/security/test_schemathesis.py does for the rest (same configuration and checks): positive and
negative inputs with the webhooks beta header, no 5xx, every response within its schema. Path ids
are mostly the seeded endpoint's and some bodies a known-valid one, so every operation also
succeeds."""

import copy

import pytest
import schemathesis
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from config.wsgi import application
from tests.security.test_schemathesis import CHECKS, CONFIG, MAX_EXAMPLES, in_test_transaction
from webhooks_app import services
from webhooks_app.auth import WEBHOOKS_BETA

PLACEHOLDER = "SEEDED.endpoint"
VALID_BODIES = {
    "POST /v1/organizations/webhooks": {
        "url": "https://hooks.example.com/in", "enabled_events": ["deployment.paused", "deployment_run.failed"],
        "name": "Pager", "description": "Failed runs page the on-call",
    },
    "POST /v1/organizations/webhooks/{endpoint_id}": {
        "name": "Renamed", "state": "disabled", "enabled_events": ["deployment_run.started"],
    },
}

schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", in_test_transaction(application), config=CONFIG).include(
    tag="Webhooks"
)


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    substituted = {key: PLACEHOLDER for key in path_parameters or {}}
    return st.integers(0, 3).map(lambda pick: substituted if pick else path_parameters)


@schema.hook
def flatmap_body(context, body):
    valid = VALID_BODIES.get(context.operation.label) if context.operation else None
    if valid is None:
        return st.just(body)
    return st.sampled_from([body, body, copy.deepcopy(valid), copy.deepcopy(valid)])


@schema.hook
def map_headers(context, headers):
    if headers:
        headers.pop("anthropic-workspace-id", None)
    return headers


@pytest.fixture
def endpoint(tenant):
    created, _ = services.webhook_endpoint_create(organization=tenant.organization, workspace=None,
                                                  url="https://hooks.example.com/seeded", enabled_events=["deployment.paused"])
    return created


@pytest.fixture
def statuses():
    seen: list[int] = []
    yield seen
    assert seen, "no example reached the API"
    assert any(200 <= status < 300 for status in seen), f"no example of this operation succeeded: {sorted(set(seen))}"


@pytest.fixture(autouse=True)
def no_doorbell(monkeypatch):
    monkeypatch.setattr(services, "ring_doorbell", lambda: None)


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_webhooks_operation_answers_within_its_schema(case, tenant, endpoint, statuses):
    if case.path_parameters:
        case.path_parameters = {key: endpoint.pk if value == PLACEHOLDER else value
                                for key, value in case.path_parameters.items()}
    savepoint = transaction.savepoint()
    try:
        response = case.call_and_validate(
            headers={"x-api-key": tenant.key, "anthropic-beta": WEBHOOKS_BETA, "anthropic-version": "2023-06-01"},
            checks=CHECKS,
        )
        statuses.append(response.status_code)
    finally:
        transaction.savepoint_rollback(savepoint)

import json

import pytest
from rest_framework.test import APIClient

from tests.conftest import BETA

pytestmark = pytest.mark.django_db


def assert_envelope(response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"].startswith("req_")
    assert response["request-id"] == body["request_id"]
    return body


def test_missing_key_is_401_envelope():
    response = APIClient().get("/v1/deployments", HTTP_ANTHROPIC_BETA=BETA)
    body = assert_envelope(response, 401, "authentication_error")
    assert "x-api-key" in body["error"]["message"]


def test_wrong_key_is_401(tenant):
    response = APIClient().get("/v1/deployments", HTTP_X_API_KEY="sk-sd-nope", HTTP_ANTHROPIC_BETA=BETA)
    assert_envelope(response, 401, "authentication_error")


def test_revoked_key_is_401(tenant):
    from accounts_app.services import api_key_revoke

    api_key_revoke(api_key=tenant.api_key)
    assert_envelope(tenant.client().get("/v1/deployments"), 401, "authentication_error")


def test_missing_beta_header_names_the_value(tenant):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=tenant.key)
    body = assert_envelope(client.get("/v1/deployments"), 400, "invalid_request_error")
    assert "managed-agents-2026-04-01" in body["error"]["message"]


def test_other_beta_value_is_400(tenant):
    response = tenant.client(HTTP_ANTHROPIC_BETA="files-api-2025-04-14").get("/v1/deployments/depl_x")
    body = assert_envelope(response, 400, "invalid_request_error")
    assert "managed-agents-2026-04-01" in body["error"]["message"]


def test_comma_list_beta_header_is_accepted(tenant):
    client = tenant.client(HTTP_ANTHROPIC_BETA=f"files-api-2025-04-14, {BETA}")
    assert_envelope(client.get("/v1/deployments/depl_nope?beta=true"), 404, "not_found_error")


def test_unknown_route_under_v1_is_404_envelope(api):
    assert_envelope(api.get("/v1/no-such-thing"), 404, "not_found_error")


def test_unknown_route_without_key_is_404_too():
    assert_envelope(APIClient().get("/v1/nothing/here"), 404, "not_found_error")


def test_wrong_method_is_405_envelope(api):
    assert_envelope(api.delete("/v1/deployments"), 405, "invalid_request_error")


def test_malformed_json_is_400_naming_json(api):
    response = api.generic("POST", "/v1/deployments", "{not json", content_type="application/json")
    body = assert_envelope(response, 400, "invalid_request_error")
    assert "JSON" in body["error"]["message"]


def test_non_object_json_is_400(api):
    response = api.generic("POST", "/v1/deployments", json.dumps([1, 2]), content_type="application/json")
    assert_envelope(response, 400, "invalid_request_error")


def test_huge_body_is_413(api, settings):
    settings.API_MAX_BODY_BYTES = 1000
    response = api.generic("POST", "/v1/deployments", json.dumps({"name": "x" * 5000}), content_type="application/json")
    assert_envelope(response, 413, "request_too_large")


def test_deeply_nested_json_is_400(api):
    body = "[" * 100000 + "]" * 100000
    response = api.generic("POST", "/v1/deployments", "{\"a\": " + body + "}", content_type="application/json")
    assert_envelope(response, 400, "invalid_request_error")


def test_unhandled_exception_is_500_envelope_not_html(api, monkeypatch):
    from core import auth

    def explode(request):
        raise RuntimeError("boom")

    monkeypatch.setattr(auth, "check_beta_header", explode)
    client = APIClient(raise_request_exception=False)
    client.credentials(**api._credentials)
    response = client.get("/v1/deployments")
    body = assert_envelope(response, 500, "api_error")
    assert "boom" not in body["error"]["message"]


def test_request_id_header_on_non_api_responses(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["request-id"].startswith("req_")

"""A GitHub authorization_token is write-only: encrypted at rest, handed to the session gateway,
and never in a response, an error message, a log line or the admin."""

import json
import logging

import pytest

from core.crypto import decrypt
from deployments_app.models import Deployment
from deployments_app.selectors import deployment_session_resources
from tests.deployments.helpers import WEEKLY, ok

pytestmark = pytest.mark.django_db

TOKEN = "ghp_S3CRET0123456789abcdefTOKENvalue"
OTHER_TOKEN = "github_pat_11ANOTHERsecretTOKEN000"


def repo(url: str, token: str | None = None, **fields) -> dict:
    resource = {"type": "github_repository", "url": url, **fields}
    if token is not None:
        resource["authorization_token"] = token
    return resource


@pytest.fixture
def bodies():
    """Every response body the test saw, to search for secrets."""
    return []


@pytest.fixture
def call(api, bodies):
    def call(method: str, path: str, data=None):
        response = getattr(api, method)(path, data, format="json") if data is not None else getattr(api, method)(path)
        bodies.append(response.content.decode())
        return response

    return call


def test_token_is_stored_encrypted_and_only_the_gateway_gets_it(call, body):
    resources = [
        {"type": "file", "file_id": "file_01"},
        repo("https://github.com/acme/private", TOKEN, checkout={"type": "branch", "name": "main"}),
        repo("https://github.com/acme/public"),
        repo("https://github.com/acme/other", OTHER_TOKEN),
    ]
    data = ok(call("post", "/v1/deployments", {**body, "resources": resources}))
    assert data["resources"] == [
        {"type": "file", "file_id": "file_01"},
        repo("https://github.com/acme/private", checkout={"type": "branch", "name": "main"}),
        repo("https://github.com/acme/public"),
        repo("https://github.com/acme/other"),
    ]

    row = Deployment.objects.get(pk=data["id"])
    stored = json.dumps(row.resources) + json.dumps(row.resource_secrets)
    assert TOKEN not in stored and OTHER_TOKEN not in stored
    assert set(row.resource_secrets) == {"1", "3"}
    assert decrypt(row.resource_secrets["1"]["authorization_token"]) == TOKEN

    assert deployment_session_resources(deployment=row) == [
        {"type": "file", "file_id": "file_01"},
        repo("https://github.com/acme/private", TOKEN, checkout={"type": "branch", "name": "main"}),
        repo("https://github.com/acme/public"),
        repo("https://github.com/acme/other", OTHER_TOKEN),
    ]


def test_replacing_resources_replaces_the_secrets_and_clearing_drops_them(call, body):
    data = ok(call("post", "/v1/deployments", {**body, "resources": [repo("https://github.com/a/b", TOKEN)]}))
    ok(call("post", f"/v1/deployments/{data['id']}", {"resources": [
        repo("https://github.com/a/c"), repo("https://github.com/a/b", OTHER_TOKEN),
    ]}))
    row = Deployment.objects.get(pk=data["id"])
    assert set(row.resource_secrets) == {"1"}
    assert deployment_session_resources(deployment=row)[1]["authorization_token"] == OTHER_TOKEN

    # Updates that do not send resources keep them, secrets included.
    ok(call("post", f"/v1/deployments/{data['id']}", {"name": "renamed"}))
    row.refresh_from_db()
    assert deployment_session_resources(deployment=row)[1]["authorization_token"] == OTHER_TOKEN

    ok(call("post", f"/v1/deployments/{data['id']}", {"resources": None}))
    row.refresh_from_db()
    assert (row.resources, row.resource_secrets) == ([], {})


def test_no_response_error_or_log_line_ever_contains_the_token(call, bodies, body, caplog):
    caplog.set_level(logging.DEBUG)
    resources = [repo("https://github.com/acme/private", TOKEN)]
    created = ok(call("post", "/v1/deployments", {**body, "resources": resources, "schedule": WEEKLY}))
    pk = created["id"]
    call("get", f"/v1/deployments/{pk}")
    call("get", "/v1/deployments")
    call("get", "/v1/deployments?include_archived=true")
    call("post", f"/v1/deployments/{pk}", {"name": "renamed"})
    call("post", f"/v1/deployments/{pk}/pause")
    call("post", f"/v1/deployments/{pk}/unpause")
    # Invalid requests carrying the token, so an error message could echo it.
    bad_requests = [
        {**body, "resources": [repo("not a url", TOKEN)]},
        {**body, "resources": [repo("https://github.com/a/b", TOKEN * 200)]},
        {**body, "resources": [{"type": "file", "file_id": "f", "authorization_token": TOKEN}]},
        {**body, "resources": [{"type": TOKEN, "authorization_token": TOKEN}]},
        {**body, "resources": [repo("https://github.com/a/b", TOKEN, checkout={"type": TOKEN})]},
        {**body, "resources": [repo("https://github.com/a/b", TOKEN)], "vault_ids": ["vlt_nope"]},
        {**body, "resources": [repo("https://github.com/a/b", TOKEN)], "agent": "agent_nope"},
        {**body, "resources": [repo("https://github.com/a/b", TOKEN), {"type": "bogus"}]},
    ]
    for request_body in bad_requests:
        assert call("post", "/v1/deployments", request_body).status_code in (400, 404)
        assert call("post", f"/v1/deployments/{pk}", {"resources": request_body["resources"]}).status_code in (
            200, 400, 404,
        )
    call("post", f"/v1/deployments/{pk}/archive")
    call("post", f"/v1/deployments/{pk}", {"resources": resources})  # refused: archived

    assert len(bodies) == 25
    for text in bodies:
        assert TOKEN[:12] not in text
    for record in caplog.records:
        assert TOKEN[:12] not in record.getMessage()
        assert TOKEN[:12] not in str(record.__dict__)


def test_admin_never_shows_the_token_or_its_ciphertext(admin_client, api, body):
    data = ok(api.post("/v1/deployments", {**body, "resources": [repo("https://github.com/a/b", TOKEN)]},
                       format="json"))
    ciphertext = Deployment.objects.get(pk=data["id"]).resource_secrets["0"]["authorization_token"]
    pages = [
        admin_client.get("/admin/deployments_app/deployment/"),
        admin_client.get(f"/admin/deployments_app/deployment/{data['id']}/change/"),
    ]
    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        assert TOKEN not in html and ciphertext not in html
        assert "resource_secrets" not in html
    assert "github.com/a/b" in pages[1].content.decode()

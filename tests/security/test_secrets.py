"""Secrets never leave where they belong. A full scenario plants GitHub tokens (a deployment's
`github_repository` resource) and API keys, then drives everything that could leak them: create,
update, list, a scheduled fire (scheduler claim + worker execution), manual runs (API and admin),
pause/unpause/archive, error paths that carry a token — and searches every response body, every
admin page, every log line (SQL included) and every text column of the database.

(Outgoing webhooks are not built yet: their signing secret joins this list when they are.)
"""

import json
import logging
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from accounts_app.models import ApiKey, hash_key
from accounts_app.services import api_key_create, api_key_revoke
from core.logging import JsonFormatter
from deployments_app.models import Deployment
from runs_app import firing, scheduler
from gateways.local import LocalGateway
from runs_app.models import DeploymentRun, Fire
from tests.conftest import Tenant
from tests.security.conftest import USER_MESSAGE
from tests.security.helpers import send

pytestmark = pytest.mark.django_db

FIRST_TOKEN = "ghp_FIRSTsecretTOKENaaaaaaaaaaaaaaaaaaaa01"
SECOND_TOKEN = "github_pat_SECONDsecretTOKENbbbbbbbbbbbbbbbbbbb02"
REJECTED_TOKEN = "ghp_REJECTEDsecretTOKENccccccccccccccccc03"


def repository(url: str, token: str | None = None) -> dict:
    resource = {"type": "github_repository", "url": url, "checkout": {"type": "branch", "name": "main"}}
    if token is not None:
        resource["authorization_token"] = token
    return resource


class CapturingHandler(logging.Handler):
    """Every record, rendered the way production renders it (JSON with every extra field) and
    also raw (message, args, exception text), so a secret in any attribute shows."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.formatter = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.formatter.format(record))
        self.lines.append(repr(record.__dict__))


@pytest.fixture
def captured_logs():
    """All logging output: a handler on the root logger and on every logger that does not
    propagate to it, every level lowered to DEBUG, SQL statements (with parameters) included."""
    handler = CapturingHandler()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    non_propagating = [logger for logger in loggers[1:] if not logger.propagate]
    for logger in [loggers[0], *non_propagating]:
        logger.addHandler(handler)
    connection.force_debug_cursor = True
    try:
        yield handler
    finally:
        connection.force_debug_cursor = False
        for logger in [loggers[0], *non_propagating]:
            logger.removeHandler(handler)
        for logger, level in saved:
            logger.setLevel(level)


class RecordingGateway(LocalGateway):
    """The local platform, noting what it was asked: the token must reach the session platform."""

    def __init__(self):
        self.requests = []

    def create_sessions(self, requests):
        self.requests.extend(requests)
        return super().create_sessions(requests)


def text_columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT table_name, column_name FROM information_schema.columns
               WHERE table_schema = current_schema()
                 AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')
               ORDER BY table_name, column_name"""
        )
        return cursor.fetchall()


def database_hits(secret: str) -> list[str]:
    """Every table.column of the database whose text holds `secret`."""
    hits = []
    with connection.cursor() as cursor:
        for table, column in text_columns():
            cursor.execute(
                f'SELECT count(*) FROM "{table}" WHERE strpos("{column}"::text, %s) > 0',  # noqa: S608 (catalog names)
                [secret],
            )
            if cursor.fetchone()[0]:
                hits.append(f"{table}.{column}")
    return hits


def test_no_token_or_api_key_leaks_from_a_full_scenario(tenant, other_tenant, captured_logs):
    api = tenant.client()
    bodies: list[str] = []

    def call(method: str, path: str, body=None, **extra):
        response = send(api, method, path, body, keep=True, **extra)
        bodies.append(response.content.decode())
        assert response.status_code < 500, (path, response.content)
        return response

    # Keys besides the two tenants': one bound to a workspace, one revoked.
    bound = Tenant(tenant.organization.name, workspace_name="Staging")
    revoked_key, revoked_plain = api_key_create(organization=tenant.organization, name="old")
    api_key_revoke(api_key=revoked_key)
    assert send(tenant.client(HTTP_X_API_KEY=revoked_plain), "get", "/v1/deployments").status_code == 401
    assert send(bound.client(), "get", "/v1/deployments").status_code == 200
    assert send(other_tenant.client(), "get", "/v1/deployments").status_code == 200

    # --- through the API -------------------------------------------------------------------------
    agent = call("post", "/v1/agents", {"name": "Triage", "model": "claude-sonnet-4-6"}).json()
    environment = call("post", "/v1/environments", {"name": "prod"}).json()
    vault = call("post", "/v1/vaults", {"display_name": "Team credentials"}).json()
    create_body = {
        "name": "Nightly triage",
        "agent": agent["id"],
        "environment_id": environment["id"],
        "initial_events": [USER_MESSAGE],
        "resources": [repository("https://github.com/acme/private", FIRST_TOKEN),
                      repository("https://github.com/acme/public"), {"type": "file", "file_id": "file_01"}],
        "vault_ids": [vault["id"]],
        "metadata": {"team": "sre"},
        "schedule": {"type": "cron", "expression": "* * * * *", "timezone": "UTC"},
    }
    created = call("post", "/v1/deployments", create_body).json()
    deployment_id = created["id"]
    assert created["resources"][0] == repository("https://github.com/acme/private")
    call("get", f"/v1/deployments/{deployment_id}")
    call("get", "/v1/deployments")
    call("post", f"/v1/deployments/{deployment_id}", {"name": "Nightly triage (renamed)"})
    call("post", f"/v1/deployments/{deployment_id}",
         {"resources": [repository("https://github.com/acme/private", SECOND_TOKEN)]})
    # Refused requests that carry a token in its own field, so that an error message could echo it.
    for bad in ([repository("not a url", REJECTED_TOKEN)],
                [repository("https://github.com/a/b", REJECTED_TOKEN * 200)],
                [{"type": "file", "file_id": "f", "authorization_token": REJECTED_TOKEN}],
                [{"type": "github_repository", "authorization_token": REJECTED_TOKEN}],
                [repository("https://github.com/a/b", 12345), repository("https://github.com/a/b", REJECTED_TOKEN)]):
        assert call("post", f"/v1/deployments/{deployment_id}", {"resources": bad}).status_code == 400
        assert call("post", "/v1/deployments", {**create_body, "resources": bad}).status_code == 400
        # The local platform is laxer (it takes any string as a URL) but drops the token as well.
        assert call("post", "/v1/sessions", {"agent": agent["id"], "environment_id": environment["id"],
                                             "resources": bad}).status_code in (200, 400)

    # --- a scheduled fire, through the scheduler and the worker's code path ------------------------
    row = Deployment.objects.get(pk=deployment_id)
    tick = scheduler.claim_due(row.next_fire_at + timedelta(seconds=5))
    assert [fire[2] for fire in tick.fires] == [deployment_id]
    gateway = RecordingGateway()
    result = firing.execute_fire(tick.fires[0][0], gateway=gateway)
    assert result.status == "done"
    # The token did reach the session platform (and only it): the search below means something.
    assert gateway.requests[0].resources[0]["authorization_token"] == SECOND_TOKEN
    scheduled_run = DeploymentRun.objects.get(pk=result.run_id)
    assert scheduled_run.session_id

    # --- manual runs: API and admin ---------------------------------------------------------------
    manual = call("post", f"/v1/deployments/{deployment_id}/run").json()
    assert manual["session_id"], manual
    admin = Client()
    get_user_model().objects.create_superuser("root", "root@example.com", "correct horse battery staple")
    assert admin.login(username="root", password="correct horse battery staple")
    pages: list[str] = []

    def page(path: str, method: str = "get", data=None):
        response = getattr(admin, method)(path, data or {})
        assert response.status_code in (200, 302), (path, response.status_code)
        if response.status_code == 200:
            pages.append(response.content.decode())
        return response

    page(f"/admin/deployments_app/deployment/{deployment_id}/do/run_now/", "post")
    assert DeploymentRun.objects.filter(deployment_id=deployment_id).count() == 3

    # --- lifecycle and every list ---------------------------------------------------------------------
    for action in ("pause", "unpause"):
        call("post", f"/v1/deployments/{deployment_id}/{action}")
    for path in ("/v1/deployments", "/v1/deployments?include_archived=true", "/v1/deployment_runs",
                 f"/v1/deployment_runs?deployment_id={deployment_id}", "/v1/sessions",
                 f"/v1/sessions?deployment_id={deployment_id}", "/v1/agents", "/v1/environments", "/v1/vaults"):
        listing = call("get", path).json()
        for item in listing["data"]:
            if path.startswith("/v1/deployment_runs") or path.startswith("/v1/sessions"):
                kind = "deployment_runs" if path.startswith("/v1/deployment_runs") else "sessions"
                call("get", f"/v1/{kind}/{item['id']}")
    call("post", f"/v1/deployments/{deployment_id}/archive")
    call("get", f"/v1/deployments/{deployment_id}")

    # --- the admin -------------------------------------------------------------------------------------
    session_ids = list(DeploymentRun.objects.filter(deployment_id=deployment_id).values_list("session_id", flat=True))
    fire = Fire.objects.get(deployment_id=deployment_id)
    for path in [
        "/admin/deployments_app/deployment/",
        "/admin/deployments_app/deployment/?q=ghp_",
        f"/admin/deployments_app/deployment/{deployment_id}/change/",
        f"/admin/deployments_app/deployment/{deployment_id}/history/",
        "/admin/platform_app/session/",
        *[f"/admin/platform_app/session/{sid}/change/" for sid in session_ids],
        "/admin/runs_app/deploymentrun/",
        f"/admin/runs_app/deploymentrun/{scheduled_run.pk}/change/",
        f"/admin/runs_app/deploymentrun/{manual['id']}/change/",
        "/admin/runs_app/fire/",
        f"/admin/runs_app/fire/{fire.pk}/change/",
        "/admin/accounts_app/apikey/",
        f"/admin/accounts_app/apikey/{tenant.api_key.pk}/change/",
        f"/admin/accounts_app/organization/{tenant.organization.pk}/change/",
        f"/admin/platform_app/agent/{agent['id']}/change/",
        "/admin/",
    ]:
        page(path)

    # --- the search ------------------------------------------------------------------------------------
    ciphertexts = [
        token for secrets in Deployment.objects.get(pk=deployment_id).resource_secrets.values()
        for token in secrets.values()
    ]
    assert ciphertexts, "the current token is stored, encrypted"
    tokens = [FIRST_TOKEN, SECOND_TOKEN, REJECTED_TOKEN]
    keys = [tenant.key, other_tenant.key, bound.key, revoked_plain]
    # A JSON body escapes nothing in these (ASCII, no quotes), so a plain substring search is exact.
    for secret in tokens + keys + ciphertexts:
        shown = secret[:10]
        assert not [b for b in bodies if secret in b], f"a response body contains {shown}…"
        assert not [p for p in pages if secret in p], f"an admin page contains {shown}…"
    for secret in tokens + keys:
        # (The ciphertext is in SQL debug lines, as in the database: only the plain values count.)
        assert not [line for line in captured_logs.lines if secret in line], f"a log line contains {secret[:10]}…"
    for secret in tokens + keys:
        assert database_hits(secret) == [], f"{secret[:10]}… is stored in plain text"
    # Sessions keep the repository, without its token.
    for session_id in session_ids:
        assert "github.com/acme/private" in json.dumps(call("get", f"/v1/sessions/{session_id}").json())
    # The logs did see the scenario (a search of nothing would pass too).
    assert any(deployment_id in line for line in captured_logs.lines)
    assert any("INSERT INTO" in line for line in captured_logs.lines)
    assert len(bodies) > 40 and len(pages) > 15


# A token pasted into a field with a closed set of values or a fixed shape. (A token used as a key
# name is named back — naming the field is the point of the message — and free-text fields such
# as a session's url store what they are given.)
MISPLACED = {
    "type": {"type": REJECTED_TOKEN, "authorization_token": REJECTED_TOKEN},
    "checkout.type": {**repository("https://github.com/a/b", REJECTED_TOKEN), "checkout": {"type": REJECTED_TOKEN}},
    "checkout.name": {**repository("https://github.com/a/b"), "checkout": {"type": "branch", "name": 5},
                      "authorization_token": REJECTED_TOKEN},
    "memory_store.access": {"type": "memory_store", "memory_store_id": "ms_1", "access": REJECTED_TOKEN},
    "budget-like": {"type": "file", "file_id": ["not", REJECTED_TOKEN]},
}


@pytest.mark.parametrize("where", MISPLACED)
@pytest.mark.parametrize("endpoint", ["create deployment", "update deployment", "create session"])
def test_a_token_pasted_into_the_wrong_resource_field_is_not_echoed_in_the_error(tenant, endpoint, where):
    """A token sent where it does not belong is still a token: the 400 names the field, not the value."""
    from tests.security.conftest import build_world

    world = build_world(tenant)
    resources = [MISPLACED[where]]
    path, body = {
        "create deployment": ("/v1/deployments", {"name": "x", "agent": world.agent_id,
                                                  "initial_events": [USER_MESSAGE],
                                                  "environment_id": world.environment_id, "resources": resources}),
        "update deployment": (f"/v1/deployments/{world.deployment_id}", {"resources": resources}),
        "create session": ("/v1/sessions", {"agent": world.agent_id, "environment_id": world.environment_id,
                                            "resources": resources}),
    }[endpoint]
    response = send(tenant.client(), "post", path, body)
    assert response.status_code == 400, response.content
    assert REJECTED_TOKEN[:12] not in response.content.decode()


def test_api_keys_are_stored_only_as_their_hash(tenant, other_tenant):
    bound = Tenant(tenant.organization.name, workspace_name="Staging")
    for owner in (tenant, other_tenant, bound):
        stored = ApiKey.objects.get(pk=owner.api_key.pk)
        assert stored.key_hash == hash_key(owner.key) != owner.key
        assert owner.key.startswith(stored.prefix) and len(stored.prefix) < len(owner.key) // 2
        assert database_hits(owner.key) == []
        assert database_hits(owner.key[len(stored.prefix):]) == [], "not even the part after the display prefix"


def test_the_database_search_does_find_plain_text(tenant):
    """The search used above must be able to fail: a value that is stored plainly is found."""
    marker = "plain-marker-7b1d0c"
    send(tenant.client(), "post", "/v1/vaults", {"display_name": marker}, keep=True)
    assert "platform_app_vault.display_name" in database_hits(marker)

"""Authentication reads the key, its organization and its workspace in one statement, and each
process remembers the answer for AUTH_CACHE_SECONDS. A change saved in this process applies to the
very next request; a change this process did not see (made by another process) applies once the
entry expires — the memo's clock is driven by hand here, nothing waits."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts_app.models import ApiKey, Workspace, hash_key
from accounts_app.services import api_key_revoke, workspace_get_or_create
from core import auth
from tests.conftest import BETA, Tenant

pytestmark = pytest.mark.django_db


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch, settings) -> Clock:
    settings.AUTH_CACHE_SECONDS = 1.0
    clock = Clock()
    monkeypatch.setattr(auth.principals, "clock", clock)
    auth.principals.forget_all()
    yield clock
    auth.principals.forget_all()


def key_statements(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "accounts_app_apikey" in q["sql"]]


def principal(tenant, **headers):
    request = RequestFactory().get("/v1/deployments", HTTP_X_API_KEY=tenant.key, HTTP_ANTHROPIC_BETA=BETA, **headers)
    return auth.resolve_principal(request)


def test_one_statement_reads_the_key_and_a_remembered_key_needs_none(tenant):
    client = tenant.client()
    with CaptureQueriesContext(connection) as first:
        assert client.get("/v1/deployment_runs").status_code == 200
    reads = [sql for sql in key_statements(first) if sql.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and "accounts_app_workspace" in reads[0] and "accounts_app_organization" in reads[0]
    with CaptureQueriesContext(connection) as second:
        assert client.get("/v1/deployment_runs").status_code == 200
    assert key_statements(second) == []


def test_the_memo_is_keyed_by_the_hash_never_the_plain_key(tenant):
    assert tenant.client().get("/v1/deployment_runs").status_code == 200
    keys = list(auth.principals._entries)
    assert keys and all(tenant.key not in part for key in keys for part in key)
    assert (hash_key(tenant.key), "") in keys


def test_revoking_a_key_refuses_it_on_the_next_request_even_when_remembered(tenant):
    client = tenant.client()
    assert client.get("/v1/deployment_runs").status_code == 200
    api_key_revoke(api_key=ApiKey.objects.get(pk=tenant.api_key.pk))
    assert client.get("/v1/deployment_runs").status_code == 401


def test_deleting_a_key_refuses_it_on_the_next_request(tenant):
    client = tenant.client()
    assert client.get("/v1/deployment_runs").status_code == 200
    ApiKey.objects.get(pk=tenant.api_key.pk).delete()
    assert client.get("/v1/deployment_runs").status_code == 401


def test_a_revocation_this_process_did_not_see_applies_within_auth_cache_seconds(tenant, clock):
    client = tenant.client()
    assert client.get("/v1/deployment_runs").status_code == 200
    # As another process would: a write that sends no signal here.
    ApiKey.objects.filter(pk=tenant.api_key.pk).update(revoked_at=timezone.now())
    assert client.get("/v1/deployment_runs").status_code == 200  # remembered, within the bound
    clock.advance(1.0)
    assert client.get("/v1/deployment_runs").status_code == 401


def test_with_auth_cache_seconds_zero_every_request_reads_the_key(tenant, settings):
    settings.AUTH_CACHE_SECONDS = 0
    client = tenant.client()
    assert client.get("/v1/deployment_runs").status_code == 200
    assert auth.principals._entries == {}
    ApiKey.objects.filter(pk=tenant.api_key.pk).update(revoked_at=timezone.now())
    assert client.get("/v1/deployment_runs").status_code == 401


def test_disabling_the_organization_is_seen_by_the_next_request(tenant):
    assert principal(tenant).organization.disabled_at is None
    tenant.organization.disabled_at = timezone.now()
    tenant.organization.save(update_fields=["disabled_at"])
    assert principal(tenant).organization.disabled_at is not None


def test_archiving_the_workspace_is_seen_by_the_next_request(tenant):
    assert principal(tenant).workspace.archived_at is None
    tenant.workspace.archived_at = timezone.now()
    tenant.workspace.save(update_fields=["archived_at"])
    assert principal(tenant).workspace.archived_at is not None


def test_a_new_default_workspace_is_used_by_the_next_request(tenant):
    assert principal(tenant).workspace_id == tenant.workspace.id
    other = workspace_get_or_create(organization=tenant.organization, name="Next")
    Workspace.objects.filter(pk=tenant.workspace.pk).update(is_default=False)
    other.is_default = True
    other.save(update_fields=["is_default"])
    assert principal(tenant).workspace_id == other.id


def test_a_remembered_default_does_not_let_a_bound_key_act_elsewhere(db):
    bound = Tenant("Umbrella", workspace_name="Labs")
    default = bound.organization.workspaces.get(is_default=True)
    assert bound.client().get("/v1/deployment_runs").status_code == 200
    assert bound.client(HTTP_ANTHROPIC_WORKSPACE_ID=default.id).get("/v1/deployment_runs").status_code == 403
    assert bound.client(HTTP_ANTHROPIC_WORKSPACE_ID=bound.workspace.id).get("/v1/deployment_runs").status_code == 200


def test_each_request_gets_its_own_instances(tenant):
    first, second = principal(tenant), principal(tenant)
    assert first.organization is not second.organization and first.workspace is not second.workspace
    assert first.api_key is not second.api_key
    first.organization.name = "changed by one request"
    assert second.organization.name == tenant.organization.name
    with CaptureQueriesContext(connection) as captured:
        assert second.api_key.organization is second.organization
        assert second.workspace.organization is second.organization
    assert captured.captured_queries == []


def test_authentication_does_not_depend_on_the_shared_cache(tenant, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}  # nothing listens on port 1
    settings.API_RATE_LIMIT_PER_MINUTE = 1  # the throttle fails open without its counter
    client = tenant.client()
    assert [client.get("/v1/deployment_runs").status_code for _ in range(3)] == [200, 200, 200]
    api_key_revoke(api_key=ApiKey.objects.get(pk=tenant.api_key.pk))
    assert client.get("/v1/deployment_runs").status_code == 401


def test_last_used_at_is_written_at_most_once_a_minute(tenant, monkeypatch):
    client = tenant.client()
    start = timezone.now()
    assert client.get("/v1/deployment_runs").status_code == 200
    first = ApiKey.objects.get(pk=tenant.api_key.pk).last_used_at
    assert first is not None and first >= start

    def writes() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/v1/deployment_runs").status_code == 200
        return [sql for sql in key_statements(captured) if sql.lstrip().upper().startswith("UPDATE")]

    assert writes() == []
    auth.principals.forget_all()  # read again from the database: still within the minute
    assert writes() == []
    later = first + timedelta(seconds=61)
    monkeypatch.setattr(auth.timezone, "now", lambda: later)
    assert len(writes()) == 1
    assert ApiKey.objects.get(pk=tenant.api_key.pk).last_used_at == later
    assert writes() == []


def test_a_stale_remembered_last_use_does_not_move_a_newer_stored_one(tenant):
    recent = timezone.now()
    ApiKey.objects.filter(pk=tenant.api_key.pk).update(last_used_at=recent)
    stale = ApiKey.objects.get(pk=tenant.api_key.pk)
    stale.last_used_at = recent - timedelta(minutes=5)  # what a process remembered before another wrote
    auth._record_use(stale, recent + timedelta(seconds=30))
    assert ApiKey.objects.get(pk=tenant.api_key.pk).last_used_at == recent


def test_an_unknown_workspace_header_is_refused_without_reaching_the_database(tenant):
    for value in ("wrkspc_" + "x" * 80, "wrkspc_\x00"):
        with CaptureQueriesContext(connection) as captured:
            response = tenant.client(HTTP_ANTHROPIC_WORKSPACE_ID=value).get("/v1/deployment_runs")
        assert response.status_code == 403
        assert all("\x00" not in q["sql"] and "x" * 80 not in q["sql"] for q in captured.captured_queries)

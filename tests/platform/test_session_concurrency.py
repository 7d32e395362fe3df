"""Idempotency and the rate limit under concurrent session creation (real PostgreSQL, threads with
their own connections)."""

import threading

import pytest
from django.db import connection

from platform_app import errors, services
from platform_app.models import Session


def _world(tenant, make_agent, make_environment):
    return {
        "organization": tenant.organization,
        "workspace": tenant.workspace,
        "agent": make_agent().id,
        "environment_id": make_environment().id,
    }


def _race(n: int, call):
    barrier = threading.Barrier(n)
    results, failures = [], []

    def worker():
        try:
            barrier.wait(timeout=10)
            results.append(call())
        except Exception as exc:  # noqa: BLE001 — collected and asserted on below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results, failures


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_with_one_key_make_one_session(tenant, make_agent, make_environment):
    args = _world(tenant, make_agent, make_environment)
    results, failures = _race(8, lambda: services.session_create(**args, idempotency_key="fire_same"))
    assert failures == []
    assert len({session.pk for session, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert Session.objects.filter(idempotency_key="fire_same").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_cannot_exceed_the_rate_limit(tenant, make_agent, make_environment):
    tenant.organization.session_rate_limit_per_minute = 4
    tenant.organization.save()
    args = _world(tenant, make_agent, make_environment)
    results, failures = _race(12, lambda: services.session_create(**args))
    assert len(results) == 4
    assert len(failures) == 8 and all(isinstance(f, errors.SessionRateLimited) for f in failures)
    assert Session.objects.filter(organization=tenant.organization).count() == 4


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_are_not_refused_by_the_rate_limit(tenant, make_agent, make_environment):
    tenant.organization.session_rate_limit_per_minute = 1
    tenant.organization.save()
    args = _world(tenant, make_agent, make_environment)
    results, failures = _race(6, lambda: services.session_create(**args, idempotency_key="fire_x"))
    assert failures == []
    assert len({session.pk for session, _ in results}) == 1
    assert Session.objects.count() == 1


@pytest.mark.django_db
def test_a_unique_key_conflict_returns_the_existing_row(tenant, make_agent, make_environment, monkeypatch):
    """The race the unique constraint settles: the key was not visible at the replay check, the
    insert collides, and the savepoint rollback leaves the caller's transaction usable."""
    args = _world(tenant, make_agent, make_environment)
    existing, _ = services.session_create(**args, idempotency_key="fire_race")
    real_replay = services._replay
    calls = []

    def replay_not_yet_visible(organization, workspace, key):
        calls.append(key)
        return None if len(calls) == 1 else real_replay(organization, workspace, key)

    monkeypatch.setattr(services, "_replay", replay_not_yet_visible)
    session, created = services.session_create(**args, idempotency_key="fire_race")
    assert (session.pk, created) == (existing.pk, False)
    assert len(calls) == 2
    assert Session.objects.count() == 1

import pytest

# Counters are per key and every test makes new keys, so nothing needs clearing between tests.
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def away_from_a_window_boundary():
    """The window is a calendar minute: keep each test's requests inside one."""
    import time

    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.1)


def test_requests_over_the_per_key_limit_get_429_with_retry_after(tenant, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    client = tenant.client()
    statuses = [client.get("/v1/deployment_runs").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/v1/deployment_runs")
    body = response.json()
    assert body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(response["retry-after"]) <= 60


def test_the_limit_is_per_key(tenant, other_tenant, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    assert tenant.client().get("/v1/deployment_runs").status_code == 200
    assert tenant.client().get("/v1/deployment_runs").status_code == 429
    assert other_tenant.client().get("/v1/deployment_runs").status_code == 200


def test_no_limit_by_default(tenant, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = None
    client = tenant.client()
    assert {client.get("/v1/deployment_runs").status_code for _ in range(30)} == {200}


def test_an_unreachable_counter_store_lets_requests_through(tenant, settings, monkeypatch):
    import redis
    from django.core.cache.backends.redis import RedisCache

    from core import throttle

    settings.API_RATE_LIMIT_PER_MINUTE = 1
    unreachable = RedisCache("redis://127.0.0.1:1/0", {})  # nothing listens on port 1
    monkeypatch.setattr(throttle, "cache", unreachable)
    with pytest.raises(redis.exceptions.ConnectionError):
        unreachable.add("probe", 1)
    client = tenant.client()
    assert [client.get("/v1/deployment_runs").status_code for _ in range(3)] == [200, 200, 200]

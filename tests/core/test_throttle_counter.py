"""The rate limit's per-window counter: one pipelined round trip on Redis, the generic cache calls
elsewhere; both count from 1 and let the window's counter expire."""

import uuid

from django.core.cache import caches

from core import throttle


def test_the_redis_counter_counts_and_expires():
    store = caches["default"]
    assert type(store).__name__ == "RedisCache"  # the test settings use Redis
    key = f"throttle:test:{uuid.uuid4().hex}"
    assert [throttle.count_request(key) for _ in range(3)] == [1, 2, 3]
    assert store.get(key) == 3  # readable through the cache API, as the generic path writes it
    ttl = store._cache.get_client(None).ttl(store.make_and_validate_key(key))
    assert 0 < ttl <= 2 * throttle.WINDOW_SECONDS


def test_a_counter_written_by_the_generic_path_is_continued():
    key = f"throttle:test:{uuid.uuid4().hex}"
    assert throttle._count_generic(caches["default"], key) == 1
    assert throttle.count_request(key) == 2


def test_other_cache_backends_use_the_generic_calls(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    key = f"throttle:test:{uuid.uuid4().hex}"
    assert [throttle.count_request(key) for _ in range(3)] == [1, 2, 3]

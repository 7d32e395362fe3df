"""Per-API-key request rate limit (API_RATE_LIMIT_PER_MINUTE): a fixed one-minute window counted
in the shared cache, so every web process sees the same count."""

import logging
import time

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache
from django.utils.connection import ConnectionProxy
from rest_framework.throttling import BaseThrottle

WINDOW_SECONDS = 60
logger = logging.getLogger("core.throttle")


def _count_redis(store: RedisCache, key: str) -> int:
    """Create the window's counter if needed and increment it in one round trip (SET NX EX +
    INCR, pipelined) instead of the generic add/exists/incr, which takes three. The counter is
    stored as Django's Redis cache stores integers (plain), so both paths share it."""
    key = store.make_and_validate_key(key)
    pipeline = store._cache.get_client(key, write=True).pipeline(transaction=False)
    pipeline.set(key, 0, ex=WINDOW_SECONDS * 2, nx=True)
    pipeline.incr(key)
    return pipeline.execute()[1]


def _count_generic(store, key: str) -> int:
    store.add(key, 0, timeout=WINDOW_SECONDS * 2)
    try:
        return store.incr(key)
    except ValueError:  # expired between add and incr
        store.set(key, 1, timeout=WINDOW_SECONDS * 2)
        return 1


def count_request(key: str) -> int:
    """This request's number within its window (the shared counter, incremented)."""
    store = caches[DEFAULT_CACHE_ALIAS] if isinstance(cache, ConnectionProxy) else cache
    if isinstance(store, RedisCache) and hasattr(getattr(store, "_cache", None), "get_client"):
        return _count_redis(store, key)
    return _count_generic(store, key)


class ApiKeyRateThrottle(BaseThrottle):
    def allow_request(self, request, view):
        limit = settings.API_RATE_LIMIT_PER_MINUTE
        api_key = getattr(request, "auth", None)
        if not limit or api_key is None:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        try:
            count = count_request(f"throttle:{api_key.pk}:{window}")
        except Exception as exc:  # noqa: BLE001 — the counter store being down must not fail requests
            # Fail open: an unreachable cache stops rate limiting, never the API itself.
            logger.warning("rate-limit counter unavailable, request allowed: %s", type(exc).__name__)
            return True
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return count <= limit

    def wait(self):
        return max(1.0, getattr(self, "_wait", WINDOW_SECONDS))

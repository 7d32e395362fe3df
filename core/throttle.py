"""Per-API-key request rate limit (API_RATE_LIMIT_PER_MINUTE): a fixed one-minute window counted
in the shared cache, so every web process sees the same count."""

import logging
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

WINDOW_SECONDS = 60
logger = logging.getLogger("core.throttle")


class ApiKeyRateThrottle(BaseThrottle):
    def allow_request(self, request, view):
        limit = settings.API_RATE_LIMIT_PER_MINUTE
        api_key = getattr(request, "auth", None)
        if not limit or api_key is None:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"throttle:{api_key.pk}:{window}"
        try:
            cache.add(key, 0, timeout=WINDOW_SECONDS * 2)
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, timeout=WINDOW_SECONDS * 2)
                count = 1
        except Exception as exc:  # noqa: BLE001 — the counter store being down must not fail requests
            # Fail open: an unreachable cache stops rate limiting, never the API itself.
            logger.warning("rate-limit counter unavailable, request allowed: %s", type(exc).__name__)
            return True
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return count <= limit

    def wait(self):
        return max(1.0, getattr(self, "_wait", WINDOW_SECONDS))

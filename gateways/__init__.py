"""The session gateway in use (SESSION_GATEWAY): local, anthropic, or "package.module:Class"."""

import functools
import importlib

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from gateways.base import (
    RUNNING_SESSION_STATUSES,
    GatewayUnavailable,
    ResolvedReferences,
    SessionGateway,
    SessionOutcome,
    SessionRequest,
)

__all__ = [
    "RUNNING_SESSION_STATUSES", "GatewayUnavailable", "ResolvedReferences", "SessionGateway", "SessionOutcome",
    "SessionRequest", "get_gateway",
]


@functools.lru_cache(maxsize=None)
def _build(name: str) -> SessionGateway:
    if name == "local":
        from gateways.local import LocalGateway

        return LocalGateway()
    if name == "anthropic":
        from gateways.anthropic import AnthropicGateway

        return AnthropicGateway()
    if ":" in name:
        # "package.module:Class" plugs in another backend (tests use it to inject platform faults).
        module_name, _, class_name = name.partition(":")
        try:
            gateway_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ImproperlyConfigured(f"SESSION_GATEWAY {name!r} cannot be imported: {exc}") from exc
        if not (isinstance(gateway_class, type) and issubclass(gateway_class, SessionGateway)):
            raise ImproperlyConfigured(f"SESSION_GATEWAY {name!r} is not a SessionGateway subclass")
        return gateway_class()
    raise ImproperlyConfigured(
        f"SESSION_GATEWAY must be 'local', 'anthropic' or 'package.module:GatewayClass', not {name!r}"
    )


def get_gateway() -> SessionGateway:
    return _build(settings.SESSION_GATEWAY)

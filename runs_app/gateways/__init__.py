import functools

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from runs_app.gateways.base import GatewayUnavailable, SessionGateway, SessionOutcome, SessionRequest

__all__ = ["GatewayUnavailable", "SessionGateway", "SessionOutcome", "SessionRequest", "get_gateway"]


@functools.lru_cache(maxsize=None)
def _build(name: str) -> SessionGateway:
    if name == "local":
        from runs_app.gateways.local import LocalGateway

        return LocalGateway()
    if name == "anthropic":
        from runs_app.gateways.anthropic import AnthropicGateway

        return AnthropicGateway()
    raise ImproperlyConfigured(f"SESSION_GATEWAY must be 'local' or 'anthropic', not {name!r}")


def get_gateway() -> SessionGateway:
    return _build(settings.SESSION_GATEWAY)

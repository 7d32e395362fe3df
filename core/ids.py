"""Prefixed, time-sortable, unguessable ids: `<prefix>_` + a ULID (48-bit ms time, 80 random bits)."""

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_ULID_LENGTH = 26

PREFIXES = {
    "deployment": "depl",
    "deployment_run": "drun",
    "fire": "fire",
    "agent": "agent",
    "environment": "env",
    "vault": "vlt",
    "session": "sesn",
    "workspace": "wrkspc",
    "organization": "org",
    "api_key": "apikey",
    "request": "req",
    "webhook_endpoint": "whep",
    "event": "evt",
}


def ulid(timestamp_ms: int | None = None) -> str:
    if timestamp_ms is None:
        timestamp_ms = time.time_ns() // 1_000_000
    value = (timestamp_ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(_ULID_LENGTH):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(kind: str) -> str:
    return f"{PREFIXES[kind]}_{ulid()}"


def id_factory(kind: str):
    """A callable for a model field default (migrations need a named, importable callable)."""
    return _FACTORIES[kind]


def looks_like(kind: str, value: object) -> bool:
    prefix = PREFIXES[kind] + "_"
    return isinstance(value, str) and value.startswith(prefix) and 0 < len(value) <= 64


def _make(kind):
    def factory():
        return new_id(kind)

    factory.__name__ = f"new_{kind}_id"
    factory.__qualname__ = factory.__name__
    return factory


_FACTORIES = {kind: _make(kind) for kind in PREFIXES}
for _kind, _factory in _FACTORIES.items():
    globals()[_factory.__name__] = _factory

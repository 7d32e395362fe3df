"""Query-string parsing with errors that name the parameter."""

from datetime import datetime, timezone

from core.errors import InvalidRequest


def parse_bool(name: str, raw: str | None) -> bool | None:
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidRequest(f"{name}: must be true or false")


def parse_datetime(name: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    text = raw.strip()
    try:
        if len(text) > 64:
            raise ValueError
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name}: must be an RFC 3339 timestamp, e.g. 2026-05-09T00:00:00Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    # Python accepts offsets up to ±23:59, PostgreSQL only up to ±15:59: hand the database UTC.
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidRequest(f"{name}: must be an RFC 3339 timestamp, e.g. 2026-05-09T00:00:00Z")


def parse_choice(name: str, raw: str | None, choices) -> str | None:
    if raw is None:
        return None
    if raw not in choices:
        raise InvalidRequest(f"{name}: must be one of {', '.join(choices)} (got {raw[:50]!r})")
    return raw


def parse_created_filters(query, ops=("gt", "gte", "lt", "lte")) -> dict[str, datetime]:
    filters = {}
    for op in ops:
        name = f"created_at[{op}]"
        value = parse_datetime(name, query.get(name))
        if value is not None:
            filters[op] = value
    return filters


def parse_id(name: str, raw: str | None, max_length: int = 64) -> str | None:
    if raw is None:
        return None
    if not raw or len(raw) > max_length:
        raise InvalidRequest(f"{name}: must be an id of at most {max_length} characters")
    return raw

"""Small helpers shared by every app's output serializers."""

from datetime import datetime, timezone


def iso(dt: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z` suffix; fractional seconds are kept when present."""
    return None if dt is None else dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

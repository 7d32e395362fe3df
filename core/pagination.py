"""Keyset cursor pagination: `{"data": [...], "next_page": "<opaque>" | null}`, newest first.

The cursor names the last row seen by (created_at, id) and the list it belongs to, and is signed,
so it is stable under concurrent inserts and a forged or foreign cursor is a 400.
"""

from datetime import datetime, timezone

from django.core import signing
from django.db.models import Q

from core.errors import InvalidRequest

DEFAULT_LIMIT = 20
_SALT = "core.pagination.cursor"


def parse_limit(raw, *, maximum: int = 100, default: int = DEFAULT_LIMIT) -> int:
    if raw is None or raw == "":
        return default
    text = str(raw).strip()
    # int() also reads "١٠" and "５"; a limit is plain ASCII digits, as the SDK sends it.
    if not text.isascii():
        raise InvalidRequest(f"limit: must be an integer between 1 and {maximum}")
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise InvalidRequest(f"limit: must be an integer between 1 and {maximum}")
    if value < 1 or value > maximum:
        raise InvalidRequest(f"limit: must be between 1 and {maximum} (got {value})")
    return value


def encode_cursor(kind: str, created_at: datetime, pk: str) -> str:
    return signing.dumps({"k": kind, "t": created_at.isoformat(), "i": pk}, salt=_SALT, compress=True)


def decode_cursor(kind: str, token: str) -> tuple[datetime, str]:
    try:
        if len(token) > 512:
            raise signing.BadSignature("too long")
        payload = signing.loads(token, salt=_SALT)
        if payload.get("k") != kind:
            raise signing.BadSignature("foreign cursor")
        created_at, pk = datetime.fromisoformat(payload["t"]), str(payload["i"])
        # Only this server signs cursors, but keep what reaches the database to what it writes.
        if created_at.tzinfo is None or "\x00" in pk or len(pk) > 64:
            raise ValueError("not a cursor this server wrote")
        return created_at.astimezone(timezone.utc), pk
    except (signing.BadSignature, KeyError, TypeError, ValueError, AttributeError, OverflowError):
        raise InvalidRequest("page: invalid or expired pagination cursor")


def paginate(queryset, *, kind: str, page: str | None, limit: int):
    """Return (rows, next_page). Rows are newest first by (created_at, id)."""
    queryset = queryset.order_by("-created_at", "-id")
    if page:
        created_at, pk = decode_cursor(kind, page)
        queryset = queryset.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=pk))
    rows = list(queryset[: limit + 1])
    next_page = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_page = encode_cursor(kind, last.created_at, last.pk)
    return rows, next_page


def page_response(data: list, next_page: str | None) -> dict:
    return {"data": data, "next_page": next_page}

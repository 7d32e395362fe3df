import json

from django.conf import settings
from rest_framework.parsers import BaseParser

from core.errors import InvalidRequest, RequestTooLarge


# Deeper than any request the API defines (tool input schemas included), and shallow enough that
# validating, storing (json.dumps in the database adapter) and rendering it never hit Python's
# recursion limit.
MAX_DEPTH = 100


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _depth(data) -> int:
    """Nesting depth of parsed JSON (an object or array counts one level), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


class StrictJSONParser(BaseParser):
    """JSON bodies only: size-limited (413), strict (no NaN/Infinity), an object at the top."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_BODY_BYTES
        request = parser_context.get("request") if parser_context else None
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        try:
            if length and int(length) > limit:
                raise RequestTooLarge(f"request body is {int(length)} bytes; the limit is {limit} bytes")
        except ValueError:
            raise InvalidRequest("invalid Content-Length header")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise InvalidRequest("request body is not valid UTF-8")
        except RecursionError:
            raise InvalidRequest(f"request body is nested too deeply (at most {MAX_DEPTH} levels)")
        except ValueError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}")
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        if _depth(data) > MAX_DEPTH:
            raise InvalidRequest(f"request body is nested too deeply (at most {MAX_DEPTH} levels)")
        return data

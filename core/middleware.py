import logging

from django.conf import settings

from core import ids
from core.errors import envelope
from core.logging import log_context

logger = logging.getLogger("core.request")


NUL = "\x00"


def _shown(name: str) -> str:
    return name.replace(NUL, "\\u0000")[:64]


class RequestIdMiddleware:
    """Gives every request an id (header `request-id`, log context) and, under /v1/, turns any
    escaped exception into the API's error envelope instead of an HTML page. Before any /v1/ view
    runs, it refuses a declared body over API_MAX_BODY_BYTES (413, also for views that never read
    their body) and NUL characters in the path (404: no row can have such an id) and the query (400)
    — PostgreSQL text cannot hold U+0000, so a lookup by such a value would fail in the database
    instead of being a 4xx."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = ids.new_id("request")
        with log_context(request_id=request.request_id):
            response = self.get_response(request)
        response["request-id"] = request.request_id
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.path.startswith("/v1/"):
            return None
        # Refused before any view runs, including the ones that never read their body.
        declared = (request.META.get("CONTENT_LENGTH") or "0").strip()
        limit = settings.API_MAX_BODY_BYTES
        if not (declared.isascii() and declared.isdigit()):
            return envelope(request, "invalid_request_error", "Content-Length: must be a whole number of bytes")
        if int(declared) > limit:
            message = f"request body is {int(declared)} bytes; the limit is {limit} bytes"
            return envelope(request, "request_too_large", message)
        if NUL in request.path:
            return envelope(request, "not_found_error", "path: no resource has an id containing NUL (U+0000)")
        for name, values in request.GET.lists():
            if NUL in name or any(NUL in value for value in values):
                message = f"{_shown(name)}: must not contain NUL (U+0000) characters"
                return envelope(request, "invalid_request_error", message)
        return None

    def process_exception(self, request, exception):
        if not request.path.startswith("/v1/"):
            return None
        from django.core.exceptions import RequestDataTooBig

        if isinstance(exception, RequestDataTooBig):
            return envelope(request, "request_too_large", "request body is too large")
        logger.exception("unhandled error", extra={"path": request.path})
        return envelope(request, "api_error", "internal server error")

import logging

from core import ids
from core.errors import envelope
from core.logging import log_context

logger = logging.getLogger("core.request")


class RequestIdMiddleware:
    """Gives every request an id (header `request-id`, log context) and, under /v1/, turns any
    escaped exception into the API's error envelope instead of an HTML page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = ids.new_id("request")
        with log_context(request_id=request.request_id):
            response = self.get_response(request)
        response["request-id"] = request.request_id
        return response

    def process_exception(self, request, exception):
        if not request.path.startswith("/v1/"):
            return None
        from django.core.exceptions import RequestDataTooBig

        if isinstance(exception, RequestDataTooBig):
            return envelope(request, "request_too_large", "request body is too large")
        logger.exception("unhandled error", extra={"path": request.path})
        return envelope(request, "api_error", "internal server error")

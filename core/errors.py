"""The API's error envelope, and the one place every error is mapped to it.

`{"type": "error", "error": {"type": T, "message": M}, "request_id": R}`
"""

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions

logger = logging.getLogger("core.errors")

STATUS_FOR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class ApiError(Exception):
    """A domain error that reaches the client as the error envelope."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, *, error_type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if error_type:
            self.error_type = error_type
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS_FOR_TYPE[self.error_type]


class InvalidRequest(ApiError):
    error_type = "invalid_request_error"


class NotFound(ApiError):
    error_type = "not_found_error"


class AuthenticationFailed(ApiError):
    error_type = "authentication_error"


class PermissionDeniedError(ApiError):
    error_type = "permission_error"


class RateLimited(ApiError):
    error_type = "rate_limit_error"


class RequestTooLarge(ApiError):
    error_type = "request_too_large"


def current_request_id(request) -> str:
    return getattr(request, "request_id", None) or getattr(getattr(request, "_request", None), "request_id", "")


def envelope(request, error_type: str, message: str, status: int | None = None, headers: dict | None = None):
    response = JsonResponse(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": current_request_id(request)},
        status=status or STATUS_FOR_TYPE[error_type],
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def format_validation_detail(detail, path: str = "") -> list[str]:
    """Flatten DRF's nested error detail into `field.sub[2].x: message` strings."""
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            if key in ("non_field_errors",):
                sub = path
            elif isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                sub = f"{path}[{key}]"
            else:
                sub = f"{path}.{key}" if path else str(key)
            out.extend(format_validation_detail(value, sub))
        return out
    if isinstance(detail, list):
        out = []
        if all(not isinstance(item, (dict, list)) for item in detail):
            for item in detail:
                out.append(f"{path}: {item}" if path else str(item))
            return out
        for index, item in enumerate(detail):
            if item in ({}, [], None, ""):
                continue
            out.extend(format_validation_detail(item, f"{path}[{index}]"))
        return out
    return [f"{path}: {detail}" if path else str(detail)]


def exception_handler(exc, context):
    request = context.get("request")
    if isinstance(exc, ApiError):
        return envelope(request, exc.error_type, exc.message, headers=exc.headers)
    if isinstance(exc, drf_exceptions.ValidationError):
        messages = format_validation_detail(exc.detail)
        return envelope(request, "invalid_request_error", "; ".join(messages) or "invalid request")
    if isinstance(exc, drf_exceptions.ParseError):
        return envelope(request, "invalid_request_error", str(exc.detail))
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return envelope(request, "invalid_request_error", str(exc.detail))
    if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
        return envelope(request, "authentication_error", str(exc.detail))
    if isinstance(exc, (drf_exceptions.PermissionDenied, PermissionDenied)):
        return envelope(request, "permission_error", "permission denied")
    if isinstance(exc, (drf_exceptions.NotFound, Http404)):
        return envelope(request, "not_found_error", "not found")
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return envelope(request, "invalid_request_error", str(exc.detail), status=405)
    if isinstance(exc, drf_exceptions.NotAcceptable):
        return envelope(request, "invalid_request_error", str(exc.detail), status=406)
    if isinstance(exc, drf_exceptions.Throttled):
        return envelope(request, "rate_limit_error", "rate limit exceeded", headers={"retry-after": str(int(exc.wait or 1))})
    if isinstance(exc, RequestDataTooBig):
        return envelope(request, "request_too_large", "request body is too large")
    if isinstance(exc, drf_exceptions.APIException):
        return envelope(request, "api_error", str(exc.detail), status=exc.status_code)
    logger.exception("unhandled error", extra={"request_id": current_request_id(request)})
    return envelope(request, "api_error", "internal server error")


def shorten(value: str, limit: int = 80) -> str:
    """An echoed value, cut to `limit` characters: error messages name what was sent without
    repeating a pasted document (or a credential) whole."""
    return value if len(value) <= limit else value[: limit - 1] + "…"

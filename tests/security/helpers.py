"""Helpers shared by the security tests."""

import copy
import json

from django.db import transaction


def envelope_message(response, status: int, error_type: str | None = None) -> str:
    """Check a response is the API's error envelope with this status, and return its message."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    data = response.json()
    assert data["type"] == "error", data
    expected = error_type or {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
    }[status]
    assert data["error"]["type"] == expected, data
    assert data["request_id"] and response["request-id"] == data["request_id"]
    return data["error"]["message"]


def send(client, method: str, path: str, body=None, *, raw: str | bytes | None = None, keep: bool = False,
         **extra):
    """One request inside a savepoint: a request that fails in the database (the bug some of
    these tests look for) must not abort the test's transaction for the requests after it.
    Its changes are rolled back unless `keep` (and it did not fail)."""
    savepoint = transaction.savepoint()
    response = None
    try:
        if raw is not None:
            response = client.generic(method.upper(), path, raw, content_type="application/json", **extra)
        elif body is None:
            response = getattr(client, method)(path, **extra)
        else:
            response = getattr(client, method)(path, json.dumps(body), content_type="application/json", **extra)
        return response
    finally:
        if keep and response is not None and response.status_code < 500:
            transaction.savepoint_commit(savepoint)
        else:
            transaction.savepoint_rollback(savepoint)


def with_value(body: dict, path: tuple, value) -> dict:
    """A deep copy of `body` with the value at `path` (keys and list indexes) replaced."""
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def dotted(path: tuple) -> str:
    """The field path as the API's messages name it: `initial_events[0].content[0].text`."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out

"""JSON log lines carrying the request, organization, deployment, run and fire ids in scope."""

import contextlib
import contextvars
import json
import logging
from datetime import datetime, timezone

_CONTEXT: contextvars.ContextVar[dict] = contextvars.ContextVar("log_context", default={})
CONTEXT_KEYS = ("request_id", "organization_id", "workspace_id", "deployment_id", "run_id", "fire_id", "session_id")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@contextlib.contextmanager
def log_context(**values):
    """Attach ids to every log line emitted inside the block (thread- and task-local)."""
    merged = {**_CONTEXT.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield merged
    finally:
        _CONTEXT.reset(token)


def bind(**values) -> None:
    _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in values.items() if v is not None}})


def current() -> dict:
    return dict(_CONTEXT.get())


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)

"""Gunicorn settings for the `web` service (`gunicorn -c config/gunicorn.py config.wsgi:application`).

Gunicorn's own lines come out as JSON like the application's, and there is no separate access log:
the application writes one JSON line per request (core.metrics.HttpMetricsMiddleware)."""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, not sync workers: in remote mode a session's event stream is relayed for as long as it
# lasts, and a sync worker would be killed by its 30 s timeout (and serve nobody else meanwhile).
# Each thread may hold a database connection: workers × threads of them.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "core.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


def child_exit(server, worker):
    """A web worker is gone: drop its live gauge files from the shared metrics directory."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        from core.metrics import process_identifier

        multiprocess.mark_process_dead(process_identifier(worker.pid), directory)

"""Prometheus metrics.

With PROMETHEUS_MULTIPROC_DIR set (web, workers and scheduler share it) every process writes its
samples to files there and /metrics adds them up with prometheus_client's MultiProcessCollector,
so counters stay right with any number of processes. The variable must be set before this module
is imported: prometheus_client picks the storage when a metric is created.

Gauges about the queue (open and overdue fires) are not kept by any process: they are read from
the database at scrape time by `DatabaseCollector`, so they are right whichever process answers.
"""

import logging
import os
import socket

from prometheus_client import Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily

_HOST = socket.gethostname().replace("_", "-")  # "_" separates the parts of a metric file's name


def process_identifier(pid: int | None = None) -> str:
    """The name under which a process writes its metric files (pass it to mark_process_dead).

    Containers sharing one directory (docker compose mounts a volume into web, worker and
    scheduler) can reuse PIDs, so the PID is qualified with the host name."""
    return f"{_HOST}-{os.getpid() if pid is None else pid}"


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)


# --- scheduler -----------------------------------------------------------------------------------
FIRES_SCHEDULED = Counter("sd_fires_scheduled_total", "Fires written by the scheduler")
FIRES_MISSED = Counter(
    "sd_fires_missed_total", "Fires older than the catch-up window when the scheduler saw them: skipped and counted"
)
FIRES_REPUBLISHED = Counter(
    "sd_fires_republished_total", "Fires re-published by the recovery sweep, by the state they were stuck in", ["state"]
)
SCHEDULER_TICK = Histogram(
    "sd_scheduler_tick_seconds", "Duration of one scheduler tick",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

# --- workers -------------------------------------------------------------------------------------
FIRES_SKIPPED = Counter(
    "sd_fires_skipped_total", "Fires not run because the deployment changed since they were scheduled", ["reason"]
)
FIRES_LIMITED = Counter(
    "sd_fires_limited_total",
    "Fires a deployment's scheduling policy held back or changed, by reason: overlap_skipped (recorded as a "
    "previous_run_active_error run), previous_cancelled (the previous session was stopped first), max_runs (an "
    "occurrence beyond the run limit, not run), outside_window (an occurrence outside the active window, not run)",
    ["reason"],
)
RUNS = Counter(
    "sd_runs_total", "Deployment runs recorded, by trigger type (schedule, manual), outcome (success, error) "
    "and error type (empty on success)", ["trigger_type", "outcome", "error_type"],
)
FIRE_LATENESS = Histogram(
    "sd_fire_lateness_seconds",
    "Run start minus due time (nominal time plus the deployment's jitter), scheduled fires only",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
DEPLOYMENTS_AUTO_ARCHIVED = Counter(
    "sd_deployments_auto_archived_total", "Deployments archived because their agent was archived or deleted"
)
DEPLOYMENTS_AUTO_PAUSED = Counter(
    "sd_deployments_auto_paused_total", "Deployments paused by an error that recurs until someone fixes it", ["error_type"]
)
GATEWAY_CALLS = Counter("sd_gateway_calls_total", "Session gateway calls, by gateway and result", ["gateway", "result"])

# --- webhooks ------------------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "sd_webhook_deliveries_total",
    "Outgoing webhook delivery attempts, by result (success, failure, timeout, refused: the target is not allowed), "
    "and deliveries given up after their retry window (gave_up)",
    ["result"],
)
WEBHOOKS_DISABLED = Counter(
    "sd_webhooks_disabled_total", "Webhook endpoints disabled because every delivery failed for too long"
)

# --- HTTP ----------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "sd_http_requests_total", "HTTP requests, by method, URL pattern and status code", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "sd_http_request_duration_seconds", "HTTP request duration, by method and URL pattern", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class DatabaseCollector:
    """Queue depth, read from PostgreSQL (the source of truth) when Prometheus scrapes."""

    def collect(self):
        from django.db.models import Count, Q
        from django.utils import timezone

        from runs_app.models import Fire

        now = timezone.now()
        up = GaugeMetricFamily("sd_database_up", "1 if /metrics could read the database at this scrape, else 0")
        try:
            counts = {
                row["status"]: row
                for row in Fire.objects.filter(status__in=[Fire.Status.PENDING, Fire.Status.CLAIMED])
                .values("status")
                .annotate(total=Count("id"), late=Count("id", filter=Q(due_at__lt=now)))
            }
        except Exception:  # noqa: BLE001 — a scrape must still show the processes' metrics
            logging.getLogger("core.metrics").warning("queue gauges unavailable: database unreachable", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        open_fires = GaugeMetricFamily("sd_fires_open", "Fires not finished yet, by state", labels=["state"])
        overdue = GaugeMetricFamily(
            "sd_fires_overdue", "Open fires whose due time has passed, by state (the queue's backlog)", labels=["state"]
        )
        for state in (Fire.Status.PENDING, Fire.Status.CLAIMED):
            row = counts.get(state, {})
            open_fires.add_metric([state], row.get("total", 0))
            overdue.add_metric([state], row.get("late", 0))
        yield open_fires
        yield overdue


# --- exposition and HTTP instrumentation ------------------------------------------------------------


def exposition() -> bytes:
    """Everything /metrics shows: every process's samples (from PROMETHEUS_MULTIPROC_DIR when set,
    else this process's) plus the queue gauges read from the database."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    database = CollectorRegistry()
    database.register(DatabaseCollector())
    return generate_latest(registry) + generate_latest(database)


# Probes and scrapes are counted but not logged: one line per scrape would drown the access log.
_QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def _route(request) -> str:
    """The URL pattern that served the request, never the raw path (bounded label values)."""
    match = getattr(request, "resolver_match", None)
    if match is not None and match.route:
        return "/" + match.route
    from django.conf import settings

    if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


class HttpMetricsMiddleware:
    """Counts and times every request by method, URL pattern and status, and writes one access
    log line per request (inside the request's log context, so it carries the request id and,
    for API calls, the organization)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.logger = logging.getLogger("core.access")

    def __call__(self, request):
        import time

        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        route = _route(request)
        method = request.method if request.method in _METHODS else "other"
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        HTTP_LATENCY.labels(method, route).observe(elapsed)
        if request.path not in _QUIET_PATHS:
            self.logger.info(
                "%s %s %s", method, request.path[:200], response.status_code,
                extra={"method": method, "route": route, "status": response.status_code,
                       "duration_ms": round(elapsed * 1000, 1)},
            )
        return response


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

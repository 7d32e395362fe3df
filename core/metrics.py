"""Prometheus metrics. With PROMETHEUS_MULTIPROC_DIR set (web, workers and scheduler share it),
prometheus_client aggregates across processes."""

from prometheus_client import Counter, Gauge, Histogram

FIRES_SCHEDULED = Counter("sd_fires_scheduled_total", "Fires written by the scheduler")
FIRES_MISSED = Counter("sd_fires_missed_total", "Fires older than the catch-up window, skipped and counted")
FIRES_SKIPPED = Counter("sd_fires_skipped_total", "Fires not run because the deployment changed", ["reason"])
FIRES_REPUBLISHED = Counter("sd_fires_republished_total", "Fires re-published by the recovery sweep", ["state"])
RUNS = Counter("sd_runs_total", "Deployment runs recorded", ["trigger_type", "outcome", "error_type"])
DEPLOYMENTS_AUTO_ARCHIVED = Counter("sd_deployments_auto_archived_total", "Deployments archived because their agent is gone")
DEPLOYMENTS_AUTO_PAUSED = Counter("sd_deployments_auto_paused_total", "Deployments paused by a recurring error", ["error_type"])
FIRE_LATENESS = Histogram(
    "sd_fire_lateness_seconds",
    "Run start minus due time (nominal time plus jitter)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
GATEWAY_CALLS = Counter("sd_gateway_calls_total", "Session gateway calls", ["gateway", "result"])
SCHEDULER_TICK = Histogram(
    "sd_scheduler_tick_seconds", "Duration of one scheduler tick",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
OPEN_FIRES = Gauge("sd_fires_open", "Fires not yet finished, by state", ["state"], multiprocess_mode="livemax")

"""/metrics: Prometheus text, no API key, HTTP metrics by URL pattern, queue gauges from the
database, and — with real worker and scheduler processes sharing PROMETHEUS_MULTIPROC_DIR —
counters and the lateness histogram that move as fires happen."""

from datetime import timedelta

import pytest
from django.utils import timezone

from runs_app.models import Fire
from tests.e2e.procs import Processes
from tests.factories import make_agent, make_deployment, make_environment
from tests.ops.helpers import make_due_now, sample, wait_for, wait_for_run


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


@pytest.mark.django_db
def test_metrics_need_no_api_key_and_list_every_family(client):
    text = scrape(client)
    for family in ("sd_fires_scheduled_total", "sd_fires_missed_total", "sd_runs_total", "sd_fire_lateness_seconds",
                   "sd_scheduler_tick_seconds", "sd_fires_open", "sd_fires_overdue", "sd_webhook_deliveries_total",
                   "sd_http_requests_total", "sd_http_request_duration_seconds"):
        assert f"# TYPE {family} " in text, family


@pytest.mark.django_db
def test_http_requests_are_counted_by_url_pattern_not_raw_path(client, api):
    before = scrape(client)
    route = "/v1/deployments/<str:deployment_id>"
    counted = sample(before, "sd_http_requests_total", method="GET", route=route, status="404")
    api.get("/v1/deployments/depl_doesnotexist1")
    api.get("/v1/deployments/depl_doesnotexist2")
    after = scrape(client)
    assert sample(after, "sd_http_requests_total", method="GET", route=route, status="404") == counted + 2
    assert sample(after, "sd_http_request_duration_seconds_count", method="GET", route=route) >= 2
    assert "depl_doesnotexist" not in after


@pytest.mark.django_db
def test_queue_gauges_are_read_from_the_database(client, tenant):
    deployment = make_deployment(tenant, agent=make_agent(tenant), environment=make_environment(tenant))
    now = timezone.now()
    for minutes, status in ((-3, "pending"), (-2, "pending"), (5, "pending"), (-1, "claimed"), (-4, "done")):
        at = now.replace(second=0, microsecond=0) + timedelta(minutes=minutes)
        Fire.objects.create(deployment=deployment, scheduled_at=at, due_at=at, status=status)
    text = scrape(client)
    assert sample(text, "sd_fires_open", state="pending") == 3
    assert sample(text, "sd_fires_open", state="claimed") == 1
    assert sample(text, "sd_fires_overdue", state="pending") == 2
    assert sample(text, "sd_fires_overdue", state="claimed") == 1


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_fires_of_real_processes_move_the_shared_counters(client, tenant, tmp_path, monkeypatch):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    procs = Processes(PROMETHEUS_MULTIPROC_DIR=metrics_dir, SCHEDULER_MAX_JITTER_SECONDS=0)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    try:
        procs.start_worker(concurrency=2)
        procs.wait_for_log("worker", "ready")
        before = scrape(client)
        deployment = make_due_now(make_deployment(
            tenant, agent=make_agent(tenant), environment=make_environment(tenant), jitter_fraction=0.0,
        ))
        procs.start_scheduler()
        run = wait_for_run(deployment_id=deployment.pk, trigger_type="schedule")
        assert run.session_id is not None
        after = wait_for(lambda: (t := scrape(client)) and sample(t, "sd_runs_total") > sample(before, "sd_runs_total") and t)
    finally:
        procs.stop_all()

    labels = {"trigger_type": "schedule", "outcome": "success", "error_type": ""}
    assert sample(after, "sd_runs_total", **labels) == sample(before, "sd_runs_total", **labels) + 1
    assert sample(after, "sd_fire_lateness_seconds_count") == sample(before, "sd_fire_lateness_seconds_count") + 1
    lateness = sample(after, "sd_fire_lateness_seconds_sum") - sample(before, "sd_fire_lateness_seconds_sum")
    assert 0 <= lateness < 60
    assert sample(after, "sd_fires_scheduled_total") >= sample(before, "sd_fires_scheduled_total") + 1
    assert sample(after, "sd_scheduler_tick_seconds_count") >= 1
    # Samples were written by the worker's pool processes and the scheduler, not by this process.
    files = sorted(path.name for path in metrics_dir.iterdir())
    assert any(name.startswith("counter_") for name in files) and any(name.startswith("histogram_") for name in files)

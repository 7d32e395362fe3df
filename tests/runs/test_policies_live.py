"""The policies with real processes: a live web server driven through the SDK, a scheduler and a
worker on the broker. A fire skipped for overlap is still exactly one run; a backfill made through
the API is run by the worker, each occurrence once."""

import socket
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone as dj_timezone

from platform_app.models import Session
from runs_app.models import DeploymentRun, Fire
from tests.e2e.procs import Processes
from tests.factories import USER_MESSAGE, make_agent, make_environment

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
JITTER = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def procs():
    processes = Processes(SCHEDULER_MAX_JITTER_SECONDS=JITTER)
    yield processes
    processes.stop_all()


def test_overlap_skip_and_backfill_with_real_processes(tenant, procs):
    agent, environment = make_agent(tenant), make_environment(tenant)
    port = free_port()
    procs.start_web(port=port, SCHEDULER_MAX_JITTER_SECONDS=JITTER)
    procs.start_worker(concurrency=2)
    procs.start_scheduler()
    sdk = tenant.sdk(f"http://127.0.0.1:{port}")
    try:
        common = {"agent": agent.id, "environment_id": environment.id, "initial_events": [USER_MESSAGE]}
        skipping = sdk.beta.deployments.create(
            name="every minute", schedule={"type": "cron", "expression": "* * * * *", "timezone": "UTC"},
            extra_body={"policy": {"overlap": "skip"}}, **common)
        daily = sdk.beta.deployments.create(
            name="daily", schedule={"type": "cron", "expression": "0 9 * * *", "timezone": "UTC"}, **common)
        sdk.beta.deployments.pause(daily.id)

        # The first fire starts a session; it goes on running.
        assert wait_for(lambda: DeploymentRun.objects.filter(deployment_id=skipping.id).exists(), 75)
        first = DeploymentRun.objects.get(deployment_id=skipping.id)
        Session.objects.filter(pk=first.session_id).update(status="running")

        today = dj_timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
        answer = sdk.post(f"/v1/deployments/{daily.id}/backfill", cast_to=object,
                          body={"start": (today - timedelta(days=2)).isoformat(), "end": today.isoformat()},
                          options={"headers": {"anthropic-beta": "managed-agents-2026-04-01"}})
        promised = [run["id"] for run in answer["data"]]
        assert len(promised) == 2

        # The next minute's fire is skipped: one run, no session.
        next_minute = first.scheduled_at + timedelta(minutes=1)
        assert wait_for(lambda: DeploymentRun.objects.filter(deployment_id=skipping.id,
                                                              scheduled_at=next_minute).exists(), 75)
        assert wait_for(lambda: DeploymentRun.objects.filter(pk__in=promised).count() == 2, 60)
        time.sleep(JITTER + 2)  # let any duplicate delivery of those messages come and go
    finally:
        sdk.close()
        procs.stop_all()

    runs = DeploymentRun.objects.filter(deployment_id=skipping.id, scheduled_at__lte=next_minute)
    assert max(Counter(runs.values_list("scheduled_at", flat=True)).values()) == 1
    skipped = runs.get(scheduled_at=next_minute)
    assert skipped.session_id is None and skipped.error_type == "previous_run_active_error"
    assert first.session_id in skipped.error_message
    assert Session.objects.filter(deployment_run_id__in=runs.values("id")).count() == 1
    assert set(Fire.objects.filter(deployment_id=skipping.id, scheduled_at__lte=next_minute)
               .values_list("status", flat=True)) == {"done"}

    backfilled = DeploymentRun.objects.filter(deployment_id=daily.id)
    assert sorted(backfilled.values_list("id", flat=True)) == sorted(promised)
    assert all(run.backfill and run.session_id and run.scheduled_at.hour == 9 for run in backfilled)
    assert len({run.scheduled_at for run in backfilled}) == 2

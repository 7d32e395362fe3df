"""Real scheduler and worker processes against PostgreSQL and Redis, in real time."""

import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.utils import timezone as dj_timezone

from deployments_app.models import Deployment
from deployments_app.services import deployment_archive, deployment_pause, deployment_unpause
from platform_app.models import Session
from runs_app.firing import run_manually
from runs_app.models import DeploymentRun, Fire
from tests.e2e.procs import Processes
from tests.factories import make_agent, make_deployment, make_environment

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MAX_JITTER = 10


def minute_floor(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def wait_until(moment: datetime) -> None:
    delay = (moment - dj_timezone.now()).total_seconds()
    if delay > 0:
        time.sleep(delay)


def wait_for_runs(count: int, timeout: float, **filters) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if DeploymentRun.objects.filter(**filters).count() >= count:
            return
        time.sleep(0.25)


@pytest.fixture
def procs():
    processes = Processes(SCHEDULER_MAX_JITTER_SECONDS=MAX_JITTER)
    yield processes
    processes.stop_all()


def test_fifty_deployments_fire_every_minute_exactly_once(tenant, procs):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    # Start far enough from a minute boundary that processes are up before the first fire.
    start = dj_timezone.now()
    if start.second > 40:
        wait_until(minute_floor(start) + timedelta(minutes=1, seconds=1))
    deployments = [
        make_deployment(tenant, agent=agent, environment=environment, name=f"every minute {i}") for i in range(50)
    ]
    first_minute = deployments[0].next_fire_at
    minutes = [first_minute + timedelta(minutes=i) for i in range(3)]
    paused, archived = deployments[0], deployments[1]

    procs.start_worker(concurrency=2)
    procs.start_scheduler()

    # Minute 1: everyone fires. Then pause one, archive another, and run the paused one by hand.
    wait_for_runs(50, timeout=(minutes[0] - dj_timezone.now()).total_seconds() + MAX_JITTER + 20, scheduled_at=minutes[0])
    assert DeploymentRun.objects.filter(scheduled_at=minutes[0]).count() == 50
    deployment_pause(deployment=Deployment.objects.get(pk=paused.pk))
    deployment_archive(deployment=Deployment.objects.get(pk=archived.pk))
    manual = run_manually(deployment=Deployment.objects.get(pk=paused.pk)).run
    assert manual.session_id and manual.trigger_type == "manual"

    # Minute 2: 48 fire (paused and archived do not). Then unpause: no backfill of minute 2.
    wait_for_runs(48, timeout=(minutes[1] - dj_timezone.now()).total_seconds() + MAX_JITTER + 20, scheduled_at=minutes[1])
    wait_until(minutes[1] + timedelta(seconds=MAX_JITTER + 3))
    deployment_unpause(deployment=Deployment.objects.get(pk=paused.pk))
    assert Deployment.objects.get(pk=paused.pk).next_fire_at == minutes[2]

    # Minute 3: 49 fire (the unpaused one again, the archived one never).
    wait_for_runs(49, timeout=(minutes[2] - dj_timezone.now()).total_seconds() + MAX_JITTER + 20, scheduled_at=minutes[2])
    wait_until(minutes[2] + timedelta(seconds=MAX_JITTER + 3))
    procs.stop_all()

    scheduled = DeploymentRun.objects.filter(trigger_type="schedule", scheduled_at__in=minutes)
    per_minute = Counter(scheduled.values_list("scheduled_at", flat=True))
    assert per_minute == {minutes[0]: 50, minutes[1]: 48, minutes[2]: 49}
    pairs = Counter(scheduled.values_list("deployment_id", "scheduled_at"))
    assert max(pairs.values()) == 1, "duplicate run for a (deployment, scheduled_at)"
    assert not scheduled.filter(deployment_id=paused.pk, scheduled_at=minutes[1]).exists()
    assert scheduled.filter(deployment_id=paused.pk).count() == 2
    assert scheduled.filter(deployment_id=archived.pk).count() == 1

    # One session per run, none without a run.
    runs = DeploymentRun.objects.all()
    assert runs.filter(session_id__isnull=True).count() == 0
    session_ids = list(runs.values_list("session_id", flat=True))
    assert len(session_ids) == len(set(session_ids)) == Session.objects.count()

    # On time: scheduled_at on the minute, start within jitter + 2 s of it.
    for run in scheduled.select_related("fire"):
        assert run.scheduled_at.second == 0 and run.scheduled_at.microsecond == 0
        lateness = (run.started_at - run.scheduled_at).total_seconds()
        assert 0 <= lateness <= MAX_JITTER + 2, (run.id, lateness)
        assert run.started_at >= run.fire.due_at
    assert Fire.objects.filter(status__in=["pending", "claimed"], scheduled_at__in=minutes).count() == 0

    # A fire's life can be followed by its id through the scheduler's and the worker's logs.
    some_fire = Fire.objects.filter(scheduled_at=minutes[0]).first()
    assert some_fire.id in procs.log_text("worker")

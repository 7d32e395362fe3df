"""Shared helpers of the operations tests."""

import time
from datetime import timedelta

from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from deployments_app.models import Deployment
from runs_app.models import DeploymentRun


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text (0 when absent: a counter never incremented)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def make_due_now(deployment: Deployment) -> Deployment:
    """Move a `* * * * *` deployment's next fire to the current minute (already due, inside the
    catch-up window), so a scheduler fires it at its first tick instead of at the next minute."""
    due = timezone.now().replace(second=0, microsecond=0)
    Deployment.objects.filter(pk=deployment.pk).update(next_fire_at=due)
    deployment.refresh_from_db()
    return deployment


def wait_for_run(timeout: float = 60, **filters) -> DeploymentRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = DeploymentRun.objects.filter(**filters).first()
        if run is not None:
            return run
        time.sleep(0.25)
    raise TimeoutError(f"no run matching {filters} within {timeout}s")


def wait_for(predicate, timeout: float = 30, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


def minute(dt):
    return dt.replace(second=0, microsecond=0) + timedelta(0)

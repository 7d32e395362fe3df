"""The recovery sweep re-publishes a stuck fire with a growing interval (found by the fault
scenarios: under a backlog every pending fire was re-published each grace period)."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from runs_app import scheduler
from runs_app.models import Fire
from tests.factories import make_agent, make_deployment, make_environment

GRACE = 5


@pytest.fixture
def published(monkeypatch):
    sent = []
    monkeypatch.setattr(
        scheduler, "publish", lambda fires, now=None: sent.extend(fire_id for fire_id, _, _ in fires)
    )
    return sent


@pytest.fixture
def stuck_fire(tenant):
    deployment = make_deployment(tenant, agent=make_agent(tenant), environment=make_environment(tenant))
    due = timezone.now().replace(microsecond=0) - timedelta(minutes=10)
    claimed_at = due - timedelta(seconds=3)
    return Fire.objects.create(deployment=deployment, scheduled_at=due, due_at=due, published_at=claimed_at)


@override_settings(FIRE_RECOVERY_GRACE_SECONDS=GRACE)
def test_pending_fire_is_republished_after_grace_then_with_doubling_waits_up_to_the_cap(stuck_fire, published):
    due = stuck_fire.due_at
    moments = [due + timedelta(seconds=s) for s in range(0, 80)]
    republished_at = []
    for moment in moments:
        before = len(published)
        scheduler.recover(moment)
        if len(published) > before:
            republished_at.append(int((moment - due).total_seconds()))
    # First after the grace, then each wait as long as the fire was late when last published
    # (6 → wait 6, 13 → wait 13), then at most every 4 graces.
    assert republished_at == [6, 13, 27, 48, 69]
    assert set(published) == {stuck_fire.id}


@override_settings(FIRE_RECOVERY_GRACE_SECONDS=GRACE, FIRE_LEASE_SECONDS=8)
def test_expired_claim_is_republished_once_its_lease_is_over(stuck_fire, published):
    due = stuck_fire.due_at
    lease_end = due + timedelta(seconds=8)
    Fire.objects.filter(pk=stuck_fire.pk).update(status=Fire.Status.CLAIMED, lease_expires_at=lease_end)
    assert scheduler.recover(due + timedelta(seconds=7)) == 0
    assert scheduler.recover(due + timedelta(seconds=9)) == 1
    assert scheduler.recover(due + timedelta(seconds=15)) == 0
    assert scheduler.recover(due + timedelta(seconds=19)) == 1
    assert published == [stuck_fire.id, stuck_fire.id]

"""Each scheduling policy driven through the official SDK against a live server (`extra_body` for
`policy`, extra keys inside `schedule`), the fires run in-process, the results read back through
the SDK's own models."""

from datetime import datetime, timedelta, timezone

import pytest
from anthropic.types.beta import BetaManagedAgentsDeployment, BetaManagedAgentsDeploymentRun
from django.utils import timezone as dj_timezone

from deployments_app import schedule
from deployments_app.models import Deployment
from platform_app.models import Session
from platform_app.services import session_status_set
from runs_app import firing, scheduler
from runs_app.models import Fire
from tests.factories import USER_MESSAGE, make_agent, make_environment

UTC = timezone.utc
EVERY_MINUTE = {"type": "cron", "expression": "* * * * *", "timezone": "UTC"}


@pytest.fixture(autouse=True)
def no_broker(monkeypatch, settings):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0
    monkeypatch.setattr(scheduler, "publish", lambda fires, now=None: None)
    monkeypatch.setattr(firing, "_publish", lambda fires: None)


@pytest.fixture
def refs(tenant):
    return make_agent(tenant), make_environment(tenant)


def create(sdk, refs, *, schedule=EVERY_MINUTE, **extra) -> BetaManagedAgentsDeployment:
    agent, environment = refs
    return sdk.beta.deployments.create(
        name="policy", agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE],
        schedule=schedule, extra_body=extra or None,
    )


def fire(deployment_id: str, minutes_ago: int):
    """Execute the fire of the occurrence `minutes_ago` minutes before this minute."""
    at = dj_timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    Deployment.objects.filter(pk=deployment_id).update(next_fire_at=at)
    [(fire_id, _, _)] = scheduler.claim_due(at).fires
    return firing.execute_fire(fire_id)


def test_overlap_skip_through_the_sdk(sdk, refs):
    deployment = create(sdk, refs, policy={"overlap": "skip"})
    assert deployment.policy == {"overlap": "skip", "pause_after_failures": None}
    first = sdk.beta.deployment_runs.retrieve(fire(deployment.id, 3).run_id)
    session_status_set(session=Session.objects.get(pk=first.session_id), status="running")

    skipped = sdk.beta.deployment_runs.retrieve(fire(deployment.id, 2).run_id)
    assert isinstance(skipped, BetaManagedAgentsDeploymentRun)
    assert skipped.session_id is None
    assert skipped.error.type == "previous_run_active_error"
    assert first.session_id in skipped.error.message and first.id in skipped.error.message
    assert skipped.trigger_context.type == "schedule"
    failed = list(sdk.beta.deployment_runs.list(deployment_id=deployment.id, has_error=True))
    assert [run.id for run in failed] == [skipped.id]  # exactly one run for the skipped fire
    assert Session.objects.count() == 1


def test_overlap_cancel_previous_through_the_sdk(sdk, refs):
    deployment = create(sdk, refs, policy={"overlap": "cancel_previous"})
    first = sdk.beta.deployment_runs.retrieve(fire(deployment.id, 3).run_id)
    session_status_set(session=Session.objects.get(pk=first.session_id), status="running")
    second = sdk.beta.deployment_runs.retrieve(fire(deployment.id, 2).run_id)
    assert second.session_id and second.session_id != first.session_id
    assert sdk.beta.sessions.retrieve(first.session_id).status == "terminated"
    assert sdk.beta.sessions.retrieve(second.session_id).status == "idle"


def test_max_runs_through_the_sdk(sdk, refs):
    deployment = create(sdk, refs, schedule={**EVERY_MINUTE, "max_runs": 2})
    assert (deployment.schedule.max_runs, deployment.schedule.runs_remaining) == (2, 2)
    assert len(deployment.schedule.upcoming_runs_at) == 2
    fire(deployment.id, 3)
    after_one = sdk.beta.deployments.retrieve(deployment.id)
    assert after_one.schedule.runs_remaining == 1 and len(after_one.schedule.upcoming_runs_at) == 1
    fire(deployment.id, 2)
    done = sdk.beta.deployments.retrieve(deployment.id)
    assert done.archived_at is not None and done.status == "active"
    assert done.schedule.runs_remaining == 0 and done.schedule.upcoming_runs_at == []
    assert [d.id for d in sdk.beta.deployments.list()] == []


def test_active_window_through_the_sdk(sdk, refs):
    start = (dj_timezone.now() + timedelta(days=7)).replace(second=0, microsecond=0)
    deployment = create(sdk, refs, schedule={**EVERY_MINUTE, "start_at": start.isoformat(),
                                             "end_at": (start + timedelta(minutes=2)).isoformat()})
    assert deployment.schedule.upcoming_runs_at == [start + timedelta(minutes=i) for i in range(3)]
    assert Deployment.objects.get(pk=deployment.id).next_fire_at == start
    # Until the window opens, nothing is due.
    assert scheduler.claim_due(start - timedelta(seconds=1)).fires == []


def test_pause_after_failures_through_the_sdk(sdk, refs, tenant):
    from platform_app.models import Environment

    deployment = create(sdk, refs, policy={"pause_after_failures": 2})
    # The built-in platform refuses sessions for the organization (rate limit 0 per minute): a
    # failure that does not pause by itself.
    tenant.organization.session_rate_limit_per_minute = 0
    tenant.organization.save(update_fields=["session_rate_limit_per_minute"])
    assert Environment.objects.exists()
    first = sdk.beta.deployment_runs.retrieve(fire(deployment.id, 3).run_id)
    assert first.error.type == "session_rate_limited_error"
    assert sdk.beta.deployments.retrieve(deployment.id).status == "active"
    fire(deployment.id, 2)
    paused = sdk.beta.deployments.retrieve(deployment.id)
    assert paused.status == "paused"
    assert paused.paused_reason.type == "error"
    assert paused.paused_reason.error.type == "session_rate_limited_error"
    assert paused.paused_reason.consecutive_failures == 2
    resumed = sdk.beta.deployments.unpause(deployment.id)
    assert resumed.status == "active" and resumed.paused_reason is None


def test_dst_fold_through_the_sdk(sdk, refs):
    fall_back = {"type": "cron", "expression": "30 1 * * *", "timezone": "America/New_York"}
    plain = create(sdk, refs, schedule=fall_back)
    assert not hasattr(plain.schedule, "dst_fold")
    for fold in ("first", "last"):
        before = dj_timezone.now()
        created = create(sdk, refs, schedule={**fall_back, "dst_fold": fold})
        assert created.schedule.dst_fold == fold
        assert created.schedule.upcoming_runs_at in (
            schedule.next_fires("30 1 * * *", "America/New_York", before, 5, dst_fold=fold),
            schedule.next_fires("30 1 * * *", "America/New_York", dj_timezone.now(), 5, dst_fold=fold),
        )
        row = Deployment.objects.get(pk=created.id)
        assert row.next_fire_at == created.schedule.upcoming_runs_at[0]


def test_backfill_through_the_sdk(sdk, refs):
    deployment = create(sdk, refs, schedule={"type": "cron", "expression": "0 9 * * *", "timezone": "UTC"})
    sdk.beta.deployments.pause(deployment.id)
    today = dj_timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=2), today
    response = sdk.post(
        f"/v1/deployments/{deployment.id}/backfill",
        body={"start": start.isoformat(), "end": end.isoformat()},
        options={"headers": {"anthropic-beta": "managed-agents-2026-04-01"}},
        cast_to=object,
    )
    runs = [BetaManagedAgentsDeploymentRun.construct(**run) for run in response["data"]]
    assert response["next_page"] is None and len(runs) == 2
    firing.execute_fires(list(Fire.objects.filter(status="pending").values_list("pk", flat=True)))
    for promised in runs:
        run = sdk.beta.deployment_runs.retrieve(promised.id)
        assert run.trigger_context.type == "schedule" and run.trigger_context.backfill is True
        assert run.trigger_context.scheduled_at.hour == 9 and start <= run.trigger_context.scheduled_at < end
        assert run.session_id
    assert sdk.beta.deployments.retrieve(deployment.id).status == "paused"
    listed = sorted(run.trigger_context.scheduled_at for run in sdk.beta.deployment_runs.list(deployment_id=deployment.id))
    assert listed == [datetime(today.year, today.month, today.day, 9, tzinfo=UTC) - timedelta(days=days)
                      for days in (2, 1)]

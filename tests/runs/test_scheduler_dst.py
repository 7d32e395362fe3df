"""The scheduler, driven by an injected clock across DST transitions, fires per the engine."""

from datetime import datetime, timedelta, timezone

import pytest

from deployments_app import schedule
from runs_app import scheduler
from runs_app.models import Fire
from tests.factories import make_agent, make_deployment, make_environment

pytestmark = pytest.mark.django_db
UTC = timezone.utc


def run_clock(start: datetime, end: datetime, step=timedelta(minutes=2)) -> None:
    now = start
    while now <= end:
        scheduler.claim_due(now)
        now += step


def fired(deployment) -> list[datetime]:
    return sorted(Fire.objects.filter(deployment=deployment).values_list("scheduled_at", flat=True))


@pytest.mark.parametrize(
    ("expression", "tz", "start", "end", "expected"),
    [
        # New York falls back on 2026-11-01: 01:30 happens twice (EDT then EST).
        ("30 1 * * *", "America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC),
         [datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
          datetime(2026, 11, 2, 6, 30, tzinfo=UTC)]),
        # New York springs forward on 2027-03-14: 02:30 does not exist that day.
        ("30 2 * * *", "America/New_York", datetime(2027, 3, 13, 0, tzinfo=UTC), datetime(2027, 3, 16, 0, tzinfo=UTC),
         [datetime(2027, 3, 13, 7, 30, tzinfo=UTC), datetime(2027, 3, 15, 6, 30, tzinfo=UTC)]),
        # Lord Howe moves 30 minutes: 02:15 is skipped on 2026-10-04.
        ("15 2 * * *", "Australia/Lord_Howe", datetime(2026, 10, 2, 12, tzinfo=UTC), datetime(2026, 10, 5, 12, tzinfo=UTC),
         None),
    ],
)
def test_scheduler_fires_per_the_engine_across_transitions(tenant, expression, tz, start, end, expected):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    deployment = make_deployment(
        tenant, agent=agent, environment=environment, expression=expression, timezone_name=tz, now=start
    )
    run_clock(start, end)
    engine = [t for t in schedule.next_fires(expression, tz, start, n=10) if t <= end]
    assert fired(deployment) == engine
    if expected is not None:
        assert engine == expected
    assert len(set(fired(deployment))) == len(fired(deployment))

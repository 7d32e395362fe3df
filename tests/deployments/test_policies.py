"""The scheduling-policy extensions on the wire: `schedule.start_at/end_at/max_runs/dst_fold`,
`policy: {overlap, pause_after_failures}`, their validation, their defaults and the previews that
obey them — through the official SDK with `extra_body` and through the plain API."""

from datetime import datetime, timedelta, timezone

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsDeployment
from django.utils import timezone as dj_timezone

from deployments_app import schedule
from deployments_app.models import Deployment
from tests.deployments.helpers import USER_MESSAGE, WEEKLY, create, error, ok, update

pytestmark = pytest.mark.django_db
UTC = timezone.utc
HOURLY = {"type": "cron", "expression": "0 * * * *", "timezone": "UTC"}
FALL_BACK = {"type": "cron", "expression": "30 1 * * *", "timezone": "America/New_York"}


def z(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- through the SDK -----------------------------------------------------------------------------------


def test_sdk_sends_the_extensions_and_reads_them_back_as_extra_attributes(sdk, agent, environment):
    start = (dj_timezone.now() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=10)
    created = sdk.beta.deployments.create(
        name="Quarter triage", agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE],
        schedule={**HOURLY, "start_at": z(start), "end_at": z(end), "max_runs": 3, "dst_fold": "first"},
        extra_body={"policy": {"overlap": "skip", "pause_after_failures": 2}},
    )
    assert isinstance(created, BetaManagedAgentsDeployment)
    assert created.schedule.start_at == z(start) and created.schedule.end_at == z(end)
    assert (created.schedule.max_runs, created.schedule.runs_remaining, created.schedule.dst_fold) == (3, 3, "first")
    assert created.policy == {"overlap": "skip", "pause_after_failures": 2}
    # The window opens at `start` and the run limit leaves room for 3 fires.
    assert created.schedule.upcoming_runs_at == [start, start + timedelta(hours=1), start + timedelta(hours=2)]
    row = Deployment.objects.get(pk=created.id)
    assert row.next_fire_at == start
    assert (row.policy_overlap, row.policy_pause_after_failures) == ("skip", 2)

    retrieved = sdk.beta.deployments.retrieve(created.id)
    assert retrieved.policy == created.policy and retrieved.schedule.max_runs == 3

    updated = sdk.beta.deployments.update(created.id, extra_body={"policy": {"overlap": "cancel_previous"}})
    assert updated.policy == {"overlap": "cancel_previous", "pause_after_failures": None}
    assert updated.schedule.max_runs == 3  # the schedule was not sent: kept

    plain = sdk.beta.deployments.update(created.id, schedule=HOURLY, extra_body={"policy": None})
    raw = sdk.beta.deployments.with_raw_response.retrieve(plain.id).http_response.json()
    assert "policy" not in raw
    assert set(raw["schedule"]) == {"type", "expression", "timezone", "last_run_at", "upcoming_runs_at"}
    assert Deployment.objects.get(pk=created.id).schedule_dst_fold == "both"


def test_sdk_refusals_name_the_field(sdk, agent, environment):
    def refused(**kwargs) -> str:
        with pytest.raises(anthropic.BadRequestError) as raised:
            sdk.beta.deployments.create(name="x", agent=agent.id, environment_id=environment.id,
                                        initial_events=[USER_MESSAGE], **kwargs)
        assert raised.value.body["error"]["type"] == "invalid_request_error"
        return raised.value.body["error"]["message"]

    assert refused(schedule={**HOURLY, "start_at": "2027-01-02T00:00:00Z", "end_at": "2027-01-01T00:00:00Z"}) == (
        "schedule.end_at: must be after schedule.start_at")
    assert refused(extra_body={"policy": {"overlap": "queue"}}) == (
        'policy.overlap: must be one of: "allow", "skip", "cancel_previous"')
    assert refused(extra_body={"policy": {"overlap": "skip", "catch_up": True}}) == "policy.catch_up: unknown field"
    assert refused(schedule={**HOURLY, "jitter": 3}) == "schedule.jitter: unknown field"
    assert Deployment.objects.count() == 0


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"schedule": {**HOURLY, "start_at": "2027-01-01T00:00:00Z", "end_at": "2027-01-01T00:00:00Z"}},
     "schedule.end_at: must be after schedule.start_at"),
    ({"schedule": {**HOURLY, "start_at": "tomorrow"}},
     "schedule.start_at: must be an RFC 3339 timestamp with a time zone, e.g. 2026-05-09T00:00:00Z"),
    ({"schedule": {**HOURLY, "end_at": "2027-01-01T00:00:00"}},
     "schedule.end_at: must be an RFC 3339 timestamp with a time zone, e.g. 2026-05-09T00:00:00Z"),
    ({"schedule": {**HOURLY, "end_at": 1798761600}}, "schedule.end_at: must be a string"),
    ({"schedule": {**HOURLY, "max_runs": 0}}, "schedule.max_runs: must be between 1 and 2147483647"),
    ({"schedule": {**HOURLY, "max_runs": "3"}}, "schedule.max_runs: must be an integer"),
    ({"schedule": {**HOURLY, "max_runs": True}}, "schedule.max_runs: must be an integer"),
    ({"schedule": {**HOURLY, "max_runs": 2.5}}, "schedule.max_runs: must be an integer"),
    ({"schedule": {**HOURLY, "dst_fold": "second"}}, 'schedule.dst_fold: must be one of: "both", "first", "last"'),
    ({"schedule": {**HOURLY, "dst_fold": None}}, "schedule.dst_fold: must not be null"),
    ({"schedule": {**HOURLY, "runs_remaining": 3}}, "schedule.runs_remaining: unknown field"),
    ({"policy": "skip"}, "policy: must be an object"),
    ({"policy": {"overlap": "SKIP"}}, 'policy.overlap: must be one of: "allow", "skip", "cancel_previous"'),
    ({"policy": {"overlap": None}}, "policy.overlap: must not be null"),
    ({"policy": {"pause_after_failures": 0}}, "policy.pause_after_failures: must be between 1 and 1000"),
    ({"policy": {"pause_after_failures": 1001}}, "policy.pause_after_failures: must be between 1 and 1000"),
    ({"policy": {"pause_after_failures": False}}, "policy.pause_after_failures: must be an integer"),
    ({"policy": {"overlap": "skip", "max_concurrency": 2}}, "policy.max_concurrency: unknown field"),
])
def test_invalid_extensions_are_400_naming_the_field(api, body, changes, message):
    assert error(api.post("/v1/deployments", {**body, **changes}, format="json"), 400) == message
    assert Deployment.objects.count() == 0


def test_update_validates_the_extensions_the_same_way(api, body):
    created = create(api, body, schedule=WEEKLY)
    assert error(update(api, created["id"], {"policy": {"overlap": "never"}}), 400) == (
        'policy.overlap: must be one of: "allow", "skip", "cancel_previous"')
    assert error(update(api, created["id"], {"schedule": {**WEEKLY, "start_at": "2027-02-01T00:00:00+01:00",
                                                          "end_at": "2027-01-31T23:00:00Z"}}), 400) == (
        "schedule.end_at: must be after schedule.start_at")  # the same instant is not after it
    assert Deployment.objects.get(pk=created["id"]).schedule_start_at is None


def test_offsets_are_stored_and_returned_in_utc(api, body):
    data = create(api, body, schedule={**WEEKLY, "start_at": "2030-01-01T09:30:00+05:30",
                                       "end_at": "2030-06-01T00:00:00.250-04:00"})
    assert data["schedule"]["start_at"] == "2030-01-01T04:00:00Z"
    assert data["schedule"]["end_at"] == "2030-06-01T04:00:00.250000Z"


# --- defaults and what is returned ------------------------------------------------------------------------------


def test_without_extensions_the_object_is_the_hosted_apis(api, body):
    data = create(api, body, schedule=WEEKLY)
    assert "policy" not in data
    assert set(data["schedule"]) == {"type", "expression", "timezone", "last_run_at", "upcoming_runs_at"}
    row = Deployment.objects.get(pk=data["id"])
    assert (row.policy_overlap, row.policy_pause_after_failures, row.schedule_dst_fold) == ("allow", None, "both")
    assert row.schedule_options == {}


def test_explicit_defaults_are_accepted_and_not_shown(api, body):
    data = create(api, body, schedule={**WEEKLY, "dst_fold": "both", "start_at": None, "end_at": None,
                                       "max_runs": None}, policy={"overlap": "allow", "pause_after_failures": None})
    assert "policy" not in data and "dst_fold" not in data["schedule"]


def test_any_extension_shows_all_of_them(api, body):
    data = create(api, body, schedule={**WEEKLY, "dst_fold": "last"}, policy={"pause_after_failures": 3})
    assert data["schedule"]["dst_fold"] == "last"
    assert (data["schedule"]["start_at"], data["schedule"]["end_at"], data["schedule"]["max_runs"]) == (None, None, None)
    assert "runs_remaining" not in data["schedule"]
    assert data["policy"] == {"overlap": "allow", "pause_after_failures": 3}


# --- previews obey the policies --------------------------------------------------------------------------------


def test_upcoming_runs_obey_the_fold_policy(api, body):
    now = dj_timezone.now()
    for fold in schedule.DST_FOLDS:
        data = create(api, body, schedule={**FALL_BACK, "dst_fold": fold})
        expected = [z(at) for at in schedule.next_fires(FALL_BACK["expression"], FALL_BACK["timezone"], now, 5,
                                                        dst_fold=fold)]
        later = [z(at) for at in schedule.next_fires(FALL_BACK["expression"], FALL_BACK["timezone"],
                                                     dj_timezone.now(), 5, dst_fold=fold)]
        assert data["schedule"]["upcoming_runs_at"] in (expected, later)
        row = Deployment.objects.get(pk=data["id"])
        assert z(row.next_fire_at) == data["schedule"]["upcoming_runs_at"][0]


def test_upcoming_runs_stop_at_the_end_of_the_window_and_the_run_limit(api, body):
    start = (dj_timezone.now() + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    windowed = create(api, body, schedule={**HOURLY, "start_at": z(start), "end_at": z(start + timedelta(hours=1))})
    assert windowed["schedule"]["upcoming_runs_at"] == [z(start), z(start + timedelta(hours=1))]
    limited = create(api, body, schedule={**HOURLY, "max_runs": 2})
    assert len(limited["schedule"]["upcoming_runs_at"]) == 2 and limited["schedule"]["runs_remaining"] == 2
    Deployment.objects.filter(pk=limited["id"]).update(runs_counted=1)
    again = ok(api.get(f"/v1/deployments/{limited['id']}"))
    assert len(again["schedule"]["upcoming_runs_at"]) == 1 and again["schedule"]["runs_remaining"] == 1


def test_a_window_that_ended_has_no_next_fire(api, body):
    data = create(api, body, schedule={**HOURLY, "end_at": "2020-01-01T00:00:00Z"})
    assert data["schedule"]["upcoming_runs_at"] == []
    assert data["status"] == "active"
    assert Deployment.objects.get(pk=data["id"]).next_fire_at is None


def test_preview_accepts_the_extensions_and_says_what_fires(api):
    url = "/v1/deployments/schedule_preview"
    now = dj_timezone.now()
    data = ok(api.post(url, {"expression": "30 1 * * *", "timezone": "America/New_York", "dst_fold": "last",
                             "max_runs": 2, "count": 5}, format="json"))
    assert len(data["upcoming_runs_at"]) == 2
    repeated = next(note for note in data["dst_notes"] if note["kind"] == "repeated")
    assert repeated["fires"] == repeated["instants"][1:]
    plain = ok(api.post(url, {"expression": "30 1 * * *", "timezone": "America/New_York"}, format="json"))
    assert all("fires" not in note for note in plain["dst_notes"])
    notes = schedule.dst_notes("30 1 * * *", "America/New_York", now, dst_fold="last")
    assert data["dst_notes"] == [note.as_dict() for note in notes]
    assert error(api.post(url, {"expression": "0 0 * * *", "timezone": "UTC", "start_at": "2030-01-02T00:00:00Z",
                                "end_at": "2030-01-01T00:00:00Z"}, format="json"), 400) == (
        "end_at: must be after start_at")


# --- update semantics ----------------------------------------------------------------------------------------


def test_changing_max_runs_starts_the_count_again_and_keeping_it_does_not(api, body):
    data = create(api, body, schedule={**HOURLY, "max_runs": 5})
    Deployment.objects.filter(pk=data["id"]).update(runs_counted=3)
    kept = ok(update(api, data["id"], {"schedule": {**HOURLY, "expression": "30 * * * *", "max_runs": 5}}))
    assert kept["schedule"]["runs_remaining"] == 2
    changed = ok(update(api, data["id"], {"schedule": {**HOURLY, "max_runs": 4}}))
    assert changed["schedule"]["runs_remaining"] == 4
    cleared = ok(update(api, data["id"], {"schedule": HOURLY}))
    assert "runs_remaining" not in cleared["schedule"]
    assert Deployment.objects.get(pk=data["id"]).runs_counted == 0


def test_changing_the_failure_threshold_starts_its_count_again(api, body):
    data = create(api, body, schedule=HOURLY, policy={"pause_after_failures": 3})
    Deployment.objects.filter(pk=data["id"]).update(consecutive_failures=2)
    ok(update(api, data["id"], {"policy": {"pause_after_failures": 3, "overlap": "skip"}}))
    assert Deployment.objects.get(pk=data["id"]).consecutive_failures == 2
    ok(update(api, data["id"], {"policy": {"pause_after_failures": 4}}))
    assert Deployment.objects.get(pk=data["id"]).consecutive_failures == 0


def test_a_window_change_moves_the_next_fire(api, body):
    data = create(api, body, schedule=HOURLY)
    start = (dj_timezone.now() + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    moved = ok(update(api, data["id"], {"schedule": {**HOURLY, "start_at": z(start)}}))
    assert moved["schedule"]["upcoming_runs_at"][0] == z(start)
    assert Deployment.objects.get(pk=data["id"]).next_fire_at == start


def test_unpausing_forgets_earlier_failures(api, body):
    data = create(api, body, schedule=HOURLY, policy={"pause_after_failures": 2})
    ok(api.post(f"/v1/deployments/{data['id']}/pause"))
    Deployment.objects.filter(pk=data["id"]).update(consecutive_failures=2)
    ok(api.post(f"/v1/deployments/{data['id']}/unpause"))
    assert Deployment.objects.get(pk=data["id"]).consecutive_failures == 0

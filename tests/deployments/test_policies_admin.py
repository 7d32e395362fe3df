"""The scheduling policies in the admin: shown on a deployment's page (next fires and DST notes
under the policies), edited on a page of their own through the same update as the API, backfill
as a page and a changelist action; the built-in platform's sessions get a status an operator sets."""

from datetime import timedelta, timezone

import pytest
from django.utils import timezone as dj_timezone

from deployments_app import schedule as cron
from deployments_app.models import Deployment
from platform_app.models import Session
from runs_app import scheduler
from runs_app.firing import run_manually
from runs_app.models import Fire
from tests.factories import make_agent, make_deployment, make_environment

pytestmark = pytest.mark.django_db
UTC = timezone.utc
CHANGELIST = "/admin/deployments_app/deployment/"


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr(scheduler, "publish", lambda fires, now=None: None)


@pytest.fixture
def refs(tenant):
    return make_agent(tenant), make_environment(tenant)


@pytest.fixture
def fall_back(tenant, refs):
    agent, environment = refs
    return make_deployment(tenant, agent=agent, environment=environment, expression="30 1 * * *",
                           timezone_name="America/New_York", name="Night owl")


def page(admin_client, url: str) -> str:
    response = admin_client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_the_detail_page_shows_the_policies_and_previews_under_them(admin_client, fall_back):
    Deployment.objects.filter(pk=fall_back.pk).update(
        schedule_dst_fold="last", schedule_max_runs=3, runs_counted=1, policy_overlap="skip",
        policy_pause_after_failures=4, consecutive_failures=2)
    html = page(admin_client, f"{CHANGELIST}{fall_back.pk}/change/")
    assert "Scheduling policies" in html
    assert "3 scheduled runs, 1 counted, 2 left" in html
    assert "last: a local time that happens twice fires once, at its last instant" in html
    assert "skip: while the previous run&#x27;s session still runs" in html
    assert "pause after 4 failed scheduled runs in a row (2 so far)" in html
    now = dj_timezone.now()
    fires = cron.next_fires("30 1 * * *", "America/New_York", now, 2, dst_fold="last")
    for instant in fires:
        assert f"({instant:%H:%M} UTC)" in html
    assert "then the run limit is reached and the deployment archives itself" in html
    [note] = [n for n in cron.dst_notes("30 1 * * *", "America/New_York", now, dst_fold="last") if n.kind == "repeated"]
    first, second = (f"{at:%H:%M} UTC" for at in note.instants)
    assert (f"{note.date:%a %d %b %Y} 01:30: happens twice (clocks fall back) — fires once, at {second} "
            f"[dst_fold last; with both: {first} and {second}, with first: {first} only, with last: {second} only]") in html
    listed = page(admin_client, CHANGELIST)
    assert "2 of 3 runs left · DST: last · overlap: skip · pause after 4 failures" in listed


def test_policies_are_edited_through_the_update_service(admin_client, fall_back):
    url = f"{CHANGELIST}{fall_back.pk}/policies/"
    form = page(admin_client, url)
    assert 'name="start_at"' in form and 'name="overlap"' in form
    start = (dj_timezone.now() + timedelta(days=10)).replace(microsecond=0)
    response = admin_client.post(url, {
        "start_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end_at": "", "max_runs": "5", "dst_fold": "first",
        "overlap": "cancel_previous", "pause_after_failures": "3"}, follow=True)
    assert "Scheduling policies saved." in messages_of(response)
    fall_back.refresh_from_db()
    assert (fall_back.schedule_start_at, fall_back.schedule_end_at, fall_back.schedule_max_runs) == (start, None, 5)
    assert (fall_back.schedule_dst_fold, fall_back.policy_overlap, fall_back.policy_pause_after_failures) == (
        "first", "cancel_previous", 3)
    assert (fall_back.schedule_expression, fall_back.schedule_timezone) == ("30 1 * * *", "America/New_York")
    assert fall_back.next_fire_at == cron.next_fires("30 1 * * *", "America/New_York", dj_timezone.now(), 1,
                                                     dst_fold="first", start_at=start)[0]


def test_the_policies_page_refuses_what_the_api_refuses(admin_client, fall_back):
    url = f"{CHANGELIST}{fall_back.pk}/policies/"
    response = admin_client.post(url, {"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z",
                                       "dst_fold": "both", "overlap": "allow"})
    assert response.status_code == 200
    assert "schedule.end_at: must be after schedule.start_at" in response.content.decode()
    response = admin_client.post(url, {"start_at": "next monday", "dst_fold": "both", "overlap": "allow"})
    assert "schedule.start_at: must be an RFC 3339 timestamp" in response.content.decode()
    fall_back.refresh_from_db()
    assert fall_back.schedule_start_at is None and fall_back.schedule_end_at is None


def test_the_admins_quoted_ids_reach_the_policy_pages(admin_client, fall_back):
    from django.contrib.admin.utils import quote

    assert quote(fall_back.pk) != fall_back.pk  # "_" is quoted in the admin's own links
    assert 'name="overlap"' in page(admin_client, f"{CHANGELIST}{quote(fall_back.pk)}/policies/")
    assert 'name="start"' in page(admin_client, f"{CHANGELIST}{quote(fall_back.pk)}/backfill/")


def test_a_manual_only_deployment_has_only_its_policy(admin_client, tenant, refs):
    agent, environment = refs
    manual = make_deployment(tenant, agent=agent, environment=environment, expression=None)
    url = f"{CHANGELIST}{manual.pk}/policies/"
    assert 'name="start_at"' not in page(admin_client, url)
    admin_client.post(url, {"overlap": "skip", "pause_after_failures": ""})
    manual.refresh_from_db()
    assert (manual.policy_overlap, manual.schedule_expression) == ("skip", None)


def test_backfill_from_a_deployments_page(admin_client, tenant, refs):
    agent, environment = refs
    daily = make_deployment(tenant, agent=agent, environment=environment, expression="0 9 * * *", name="Daily")
    today = dj_timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    url = f"{CHANGELIST}{daily.pk}/backfill/"
    assert 'name="start"' in page(admin_client, url)
    assert "Backfill…" in page(admin_client, f"{CHANGELIST}{daily.pk}/change/")
    response = admin_client.post(url, {"start": (today - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                       "end": today.strftime("%Y-%m-%dT%H:%M:%SZ"), "post": "yes"}, follow=True)
    assert any("backfill of 2 occurrence(s) scheduled" in m for m in messages_of(response))
    assert Fire.objects.filter(deployment=daily, backfill=True, status="pending").count() == 2
    refused = admin_client.post(url, {"start": today.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      "end": (today - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      "post": "yes"}, follow=True)
    assert any("end: must be after start" in m for m in messages_of(refused))
    bad = admin_client.post(url, {"start": "yesterday", "end": "today", "post": "yes"})
    assert "start: must be an RFC 3339 timestamp" in bad.content.decode()
    assert Fire.objects.count() == 2


def test_backfill_as_a_changelist_action(admin_client, tenant, refs):
    agent, environment = refs
    daily = [make_deployment(tenant, agent=agent, environment=environment, expression="0 9 * * *", name=f"d{i}")
             for i in range(2)]
    selected = {"action": "backfill", "_selected_action": [d.pk for d in daily]}
    asked = admin_client.post(CHANGELIST, selected)
    assert asked.status_code == 200 and 'name="start"' in asked.content.decode()
    today = dj_timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    done = admin_client.post(CHANGELIST, {**selected, "post": "yes", "end": today.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                          "start": (today - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")},
                             follow=True)
    assert sum("backfill of 1 occurrence(s) scheduled" in m for m in messages_of(done)) == 2
    assert sorted(Fire.objects.values_list("deployment_id", flat=True)) == sorted(d.pk for d in daily)


def test_policy_pages_need_the_change_permission_and_an_unarchived_deployment(client, admin_client,
                                                                              django_user_model, fall_back):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    client.force_login(viewer)
    assert client.get(f"{CHANGELIST}{fall_back.pk}/policies/").status_code == 403
    assert client.post(f"{CHANGELIST}{fall_back.pk}/backfill/", {"start": "x", "end": "y"}).status_code == 403
    Deployment.objects.filter(pk=fall_back.pk).update(archived_at=dj_timezone.now())
    response = admin_client.get(f"{CHANGELIST}{fall_back.pk}/policies/", follow=True)
    assert any("is archived" in m for m in messages_of(response))
    assert "/policies/" not in page(admin_client, f"{CHANGELIST}{fall_back.pk}/change/")


def test_an_operator_sets_a_local_sessions_status(admin_client, fall_back):
    session_id = run_manually(deployment=fall_back).run.session_id
    url = "/admin/platform_app/session/"
    admin_client.post(url, {"action": "mark_running", "_selected_action": [session_id]})
    assert Session.objects.get(pk=session_id).status == "running"
    admin_client.post(url, {"action": "mark_idle", "_selected_action": [session_id]})
    assert Session.objects.get(pk=session_id).status == "idle"

"""The operator's admin: deployments (list, filters, detail, actions through the services, with
the API's rules), runs and fires — and never a secret on any page."""

import random
import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from accounts_app.services import organization_get_or_create
from deployments_app import schedule as cron
from deployments_app.models import Deployment
from runs_app.models import DeploymentRun, Fire
from tests.factories import USER_MESSAGE, make_agent, make_deployment, make_environment

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/deployments_app/deployment/"
TOKEN = "ghp_AdminPagesMustNeverShowThis0123456789"


def change_url(deployment_id: str) -> str:
    return f"{CHANGELIST}{deployment_id}/change/"


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def world(tenant):
    return make_agent(tenant, name="Nightly triage agent"), make_environment(tenant)


@pytest.fixture
def scheduled(tenant, world, api):
    """A deployment made through the API, with a DST-affected schedule and a GitHub token."""
    agent, environment = world
    body = {
        "name": "Nightly triage", "agent": agent.id, "environment_id": environment.id,
        "initial_events": [
            {"type": "user.message", "content": [{"type": "text", "text": "Triage the new issues, please."}]},
            {"type": "user.define_outcome", "description": "Every issue labelled", "max_iterations": 3,
             "rubric": {"type": "text", "content": "All open issues have a label."}},
        ],
        "resources": [{"type": "github_repository", "url": "https://github.com/acme/app", "authorization_token": TOKEN}],
        "schedule": {"type": "cron", "expression": "30 2 * * *", "timezone": "America/New_York"},
    }
    response = api.post("/v1/deployments", body, format="json")
    assert response.status_code == 200, response.content
    return Deployment.objects.get(pk=response.json()["id"])


def act(admin_client, action: str, *deployments, **extra):
    data = {"action": action, "_selected_action": [d.pk for d in deployments], **extra}
    return admin_client.post(CHANGELIST, data, follow=True)


# --- actions -------------------------------------------------------------------------------------------


def test_changelist_actions_obey_the_same_rules_as_the_api(admin_client, scheduled, api):
    act(admin_client, "pause", scheduled)
    scheduled.refresh_from_db()
    assert (scheduled.status, scheduled.paused_reason, scheduled.next_fire_at) == ("paused", {"type": "manual"}, None)

    page = act(admin_client, "run_now", scheduled)  # manual runs work while paused
    run = DeploymentRun.objects.get(deployment=scheduled)
    assert run.trigger_type == "manual" and run.session_id
    assert any(run.pk in m and run.session_id in m for m in page_messages(page))

    act(admin_client, "unpause", scheduled)
    scheduled.refresh_from_db()
    assert scheduled.status == "active" and scheduled.next_fire_at is not None

    confirm = act(admin_client, "archive", scheduled)
    assert "Archiving is <strong>final</strong>" in confirm.content.decode()
    scheduled.refresh_from_db()
    assert scheduled.archived_at is None
    act(admin_client, "archive", scheduled, post="yes")
    scheduled.refresh_from_db()
    assert scheduled.archived_at is not None and scheduled.next_fire_at is None

    refused = act(admin_client, "unpause", scheduled)
    api_message = api.post(f"/v1/deployments/{scheduled.pk}/unpause").json()["error"]["message"]
    assert any(api_message in m for m in page_messages(refused)), page_messages(refused)
    assert "is archived" in api_message
    refused_run = act(admin_client, "run_now", scheduled)
    assert any("is archived" in m for m in page_messages(refused_run))
    assert DeploymentRun.objects.filter(deployment=scheduled).count() == 1
    scheduled.refresh_from_db()
    assert scheduled.status == "active" and scheduled.archived_at is not None


def test_buttons_on_the_deployment_page_use_the_services(admin_client, scheduled):
    def press(action: str, **extra):
        return admin_client.post(f"{CHANGELIST}{scheduled.pk}/do/{action}/", extra, follow=True)

    page = admin_client.get(change_url(scheduled.pk)).content.decode()
    assert f"/do/pause/" in page and "/do/run_now/" in page and "/do/archive/" in page
    press("pause")
    scheduled.refresh_from_db()
    assert scheduled.status == "paused"
    assert "/do/unpause/" in admin_client.get(change_url(scheduled.pk)).content.decode()
    press("run_now")
    assert DeploymentRun.objects.filter(deployment=scheduled, trigger_type="manual").count() == 1
    assert "Archiving is <strong>final</strong>" in press("archive").content.decode()
    scheduled.refresh_from_db()
    assert scheduled.archived_at is None
    press("archive", post="yes")
    scheduled.refresh_from_db()
    assert scheduled.archived_at is not None
    refused = press("unpause")
    assert any("is archived" in m for m in page_messages(refused))
    assert "/do/" not in admin_client.get(change_url(scheduled.pk)).content.decode()


def test_actions_need_the_change_permission(client, django_user_model, scheduled):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deployment"))
    client.force_login(viewer)
    assert client.get(CHANGELIST).status_code == 200
    assert client.post(f"{CHANGELIST}{scheduled.pk}/do/pause/").status_code == 403
    client.post(CHANGELIST, {"action": "pause", "_selected_action": [scheduled.pk]})
    scheduled.refresh_from_db()
    assert scheduled.status == "active"


def test_the_form_cannot_edit_add_or_delete(admin_client, scheduled):
    response = admin_client.post(change_url(scheduled.pk), {"name": "edited"})
    assert response.status_code == 403
    assert Deployment.objects.get(pk=scheduled.pk).name == "Nightly triage"
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


# --- the list ------------------------------------------------------------------------------------------


def test_list_shows_status_schedule_next_fire_last_run_and_missed(admin_client, tenant, world, scheduled):
    agent, environment = world
    paused = make_deployment(tenant, agent=agent, environment=environment, name="Paused one", expression="0 9 * * 1")
    Deployment.objects.filter(pk=paused.pk).update(
        status="paused", next_fire_at=None, missed_fires=7,
        paused_reason={"type": "error", "error": {"type": "environment_archived_error", "message": "gone"}},
    )
    manual = make_deployment(tenant, agent=agent, environment=environment, name="Manual one", expression=None)
    DeploymentRun.objects.create(
        organization=tenant.organization, workspace=tenant.workspace, deployment=manual, agent_id=agent.id,
        agent_version=1, trigger_type="manual", error_type="vault_not_found_error", error_message="vault gone",
        started_at=timezone.now(),
    )
    html = admin_client.get(CHANGELIST).content.decode()
    assert "At 02:30 AM" in html and "30 2 * * * (America/New_York)" in html
    local = scheduled.next_fire_at.astimezone(cron._zone("America/New_York"))
    assert f"{local:%a %d %b %H:%M %Z}" in html and f"{scheduled.next_fire_at:%d %b %H:%M} UTC" in html
    assert "paused by an error" in html and "environment_archived_error" in html
    assert "manual only" in html
    assert "✘ vault_not_found_error" in html
    assert re.search(r"<td class=\"field-missed\"><span [^>]*>7</span></td>", html)


def test_list_filters_by_status_organization_agent_and_schedule(admin_client, tenant, other_tenant, world, scheduled):
    agent, environment = world
    manual = make_deployment(tenant, agent=agent, environment=environment, name="Manual one", expression=None)
    other_agent, other_env = make_agent(other_tenant, name="Other agent"), make_environment(other_tenant)
    foreign = make_deployment(other_tenant, agent=other_agent, environment=other_env, name="Foreign one")
    archived = make_deployment(tenant, agent=agent, environment=environment, name="Archived one")
    Deployment.objects.filter(pk=archived.pk).update(archived_at=timezone.now(), next_fire_at=None)

    def names(query: str) -> set[str]:
        response = admin_client.get(f"{CHANGELIST}?{query}")
        return {d.name for d in response.context["cl"].result_list}

    assert names("state=archived") == {"Archived one"}
    assert names("state=active") == {"Nightly triage", "Manual one", "Foreign one"}
    assert names(f"organization__id__exact={other_tenant.organization.pk}") == {"Foreign one"}
    assert names(f"agent_id={other_agent.pk}") == {"Foreign one"}
    assert names("has_schedule=no") == {"Manual one"}
    assert names(f"q={manual.pk}") == {"Manual one"}
    assert names("q=foreign") == {"Foreign one"}
    assert "Other agent" in admin_client.get(CHANGELIST).content.decode()  # the agent filter names agents


def test_list_of_a_thousand_deployments_takes_a_fixed_number_of_queries(
    admin_client, tenant, world, django_assert_max_num_queries,
):
    agent, environment = world
    now = timezone.now()
    second = organization_get_or_create(name="Initech")
    rows = []
    for i in range(1000):
        organization = tenant.organization if i % 2 else second
        workspace = tenant.workspace if i % 2 else second.workspaces.get(is_default=True)
        expression = random.choice(["30 2 * * *", "0 20 * * 5", "*/15 * * * *", None])
        rows.append(Deployment(
            organization=organization, workspace=workspace, name=f"bulk {i}", agent_id=agent.id, agent_version=1,
            environment_id=environment.id, initial_events=[USER_MESSAGE], schedule_expression=expression,
            schedule_timezone="America/New_York" if expression else None, jitter_fraction=0.5,
            next_fire_at=cron.next_fires(expression, "America/New_York", now, 1)[0] if expression else None,
            status="paused" if i % 7 == 0 else "active",
            paused_reason={"type": "manual"} if i % 7 == 0 else None,
        ))
    deployments = Deployment.objects.bulk_create(rows)
    DeploymentRun.objects.bulk_create([
        DeploymentRun(
            organization=d.organization, workspace=d.workspace, deployment=d, agent_id=agent.id, agent_version=1,
            trigger_type="manual", session_id=None if i % 3 else f"sesn_{i}",
            error_type="service_unavailable_error" if i % 3 else None, error_message="down" if i % 3 else None,
            started_at=now,
        )
        for i, d in enumerate(deployments[:300])
    ])
    with django_assert_max_num_queries(10):  # 8 today: session, user, counts, page, filters
        response = admin_client.get(f"{CHANGELIST}?o=-8")  # ordered by last run
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1000
    assert len(response.context["cl"].result_list) == 50


# --- the detail page -----------------------------------------------------------------------------------


def test_detail_shows_next_fires_dst_notes_readable_events_and_paginated_runs(admin_client, tenant, scheduled):
    started = timezone.now() - timedelta(days=30)
    DeploymentRun.objects.bulk_create([
        DeploymentRun(
            organization=tenant.organization, workspace=tenant.workspace, deployment=scheduled,
            agent_id=scheduled.agent_id, agent_version=1, trigger_type="schedule",
            scheduled_at=started + timedelta(days=i), session_id=f"sesn_history{i:02d}",
            started_at=started + timedelta(days=i),
        )
        for i in range(25)
    ])
    # created_at is set on insert; spread it out so "newest first" is observable.
    for run in DeploymentRun.objects.filter(deployment=scheduled):
        DeploymentRun.objects.filter(pk=run.pk).update(created_at=run.started_at)

    html = admin_client.get(change_url(scheduled.pk)).content.decode()
    now = timezone.now()
    for instant in cron.next_fires("30 2 * * *", "America/New_York", now, 5):
        assert f"({instant:%H:%M} UTC)" in html
        assert f"{instant.astimezone(cron._zone('America/New_York')):%a %d %b %Y 02:30 %Z}" in html
    notes = cron.dst_notes("30 2 * * *", "America/New_York", now)
    assert notes and all(f"{note.date:%a %d %b %Y} 02:30: does not exist" in html for note in notes)
    assert "user.message: Triage the new issues, please." in html
    assert "user.define_outcome: Every issue labelled" in html and "rubric: All open issues have a label." in html

    shown = re.findall(r"sesn_history(\d\d)", html)
    assert sorted(set(shown), reverse=True) == [f"{i:02d}" for i in range(24, 4, -1)]
    assert "Runs 1–20 of 25" in html
    older = admin_client.get(change_url(scheduled.pk) + "?runs_page=2").content.decode()
    assert sorted(set(re.findall(r"sesn_history(\d\d)", older)), reverse=True) == ["04", "03", "02", "01", "00"]


def test_no_admin_page_ever_shows_a_secret(admin_client, scheduled):
    encrypted = scheduled.resource_secrets["0"]["authorization_token"]
    act(admin_client, "pause", scheduled)
    act(admin_client, "run_now", scheduled)
    run = DeploymentRun.objects.get(deployment=scheduled)
    pages = [
        CHANGELIST, f"{CHANGELIST}?q=Nightly", change_url(scheduled.pk), f"{CHANGELIST}{scheduled.pk}/history/",
        "/admin/runs_app/deploymentrun/", f"/admin/runs_app/deploymentrun/{run.pk}/change/",
        f"/admin/platform_app/session/{run.session_id}/change/", "/admin/platform_app/session/",
    ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert TOKEN not in html and encrypted not in html and "resource_secrets" not in html, url
    assert "github.com/acme/app" in admin_client.get(change_url(scheduled.pk)).content.decode()


# --- runs and fires ------------------------------------------------------------------------------------


def test_runs_filter_by_trigger_error_organization_deployment_and_date(admin_client, tenant, other_tenant, world):
    agent, environment = world
    first = make_deployment(tenant, agent=agent, environment=environment, name="First")
    second = make_deployment(tenant, agent=agent, environment=environment, name="Second")
    other = make_deployment(other_tenant, agent=make_agent(other_tenant), environment=make_environment(other_tenant))
    now = timezone.now()

    def run(deployment, **fields):
        defaults = {"trigger_type": "manual", "session_id": "sesn_x", "started_at": now}
        return DeploymentRun.objects.create(
            organization=deployment.organization, workspace=deployment.workspace, deployment=deployment,
            agent_id=deployment.agent_id, agent_version=1, **{**defaults, **fields},
        )

    ok = run(first, session_id="sesn_ok1")
    failed = run(first, session_id=None, error_type="session_rate_limited_error", error_message="429")
    scheduled = run(second, trigger_type="schedule", scheduled_at=now.replace(second=0, microsecond=0),
                    session_id="sesn_sched")
    foreign = run(other, session_id="sesn_foreign")
    DeploymentRun.objects.filter(pk=foreign.pk).update(created_at=now - timedelta(days=40))

    def ids(query: str) -> set[str]:
        response = admin_client.get(f"/admin/runs_app/deploymentrun/?{query}")
        assert response.status_code == 200
        return {r.pk for r in response.context["cl"].result_list}

    assert ids("trigger_type__exact=schedule") == {scheduled.pk}
    assert ids("error_type=session_rate_limited_error") == {failed.pk}
    assert ids("error_type=__none__") == {ok.pk, scheduled.pk, foreign.pk}
    assert ids(f"organization__id__exact={other_tenant.organization.pk}") == {foreign.pk}
    assert ids(f"deployment={first.pk}") == {ok.pk, failed.pk}
    since = urlencode({"created_at__gte": (now - timedelta(days=1)).isoformat()})
    assert ids(since) == {ok.pk, failed.pk, scheduled.pk}

    html = admin_client.get("/admin/runs_app/deploymentrun/").content.decode()
    assert f'href="/admin/deployments_app/deployment/{first.pk}/change/"' in html
    assert 'href="/admin/platform_app/session/sesn_ok1/change/"' in html
    detail = admin_client.get(f"/admin/runs_app/deploymentrun/{failed.pk}/change/").content.decode()
    assert "session_rate_limited_error" in detail and first.name in detail
    assert admin_client.post(f"/admin/runs_app/deploymentrun/{failed.pk}/delete/").status_code == 403


def test_fires_are_listed_read_only_with_status_attempts_and_skip_reason(admin_client, tenant, world):
    agent, environment = world
    deployment = make_deployment(tenant, agent=agent, environment=environment, name="Fired")
    at = timezone.now().replace(second=0, microsecond=0)
    Fire.objects.create(deployment=deployment, scheduled_at=at, due_at=at, status="skipped", attempts=2,
                        skip_reason="paused")
    Fire.objects.create(deployment=deployment, scheduled_at=at - timedelta(minutes=1), due_at=at, status="pending")
    response = admin_client.get("/admin/runs_app/fire/?status__exact=skipped")
    assert [(f.status, f.attempts, f.skip_reason) for f in response.context["cl"].result_list] == [("skipped", 2, "paused")]
    assert "Fired" in response.content.decode()
    assert admin_client.get("/admin/runs_app/fire/add/").status_code == 403

"""`client.beta.deployments.run` and `client.beta.deployment_runs.*` through the official SDK
against a live server."""

import io
from contextlib import redirect_stdout
from datetime import datetime, timedelta, timezone

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsDeploymentRun
from django.utils import timezone as dj_timezone

from runs_app import firing, scheduler
from runs_app.models import DeploymentRun
from tests.factories import make_agent, make_deployment, make_environment

UTC = timezone.utc


@pytest.fixture
def deployment(tenant):
    agent = make_agent(tenant)
    environment = make_environment(tenant)
    return make_deployment(tenant, agent=agent, environment=environment, now=datetime(2026, 11, 23, 9, 59, 30, tzinfo=UTC))


def fire_minutes(count: int, start=datetime(2026, 11, 23, 10, 0, 5, tzinfo=UTC)) -> None:
    for i in range(count):
        for fire_id, _, _ in scheduler.claim_due(start + timedelta(minutes=i)).fires:
            firing.execute_fire(fire_id)


def test_run_now_through_the_sdk_returns_a_manual_run(sdk, deployment):
    run = sdk.beta.deployments.run(deployment.id)
    assert isinstance(run, BetaManagedAgentsDeploymentRun)
    assert run.type == "deployment_run"
    assert run.id.startswith("drun_")
    assert run.deployment_id == deployment.id
    assert run.trigger_context.type == "manual"
    assert run.session_id.startswith("sesn_") and run.error is None
    assert (run.agent.id, run.agent.version) == (deployment.agent_id, 1)
    assert DeploymentRun.objects.get(pk=run.id).session_id == run.session_id


def test_run_now_with_a_failing_session_returns_the_run_with_its_error(sdk, deployment, tenant):
    from platform_app.models import Environment

    Environment.objects.filter(pk=deployment.environment_id).update(archived_at=dj_timezone.now())
    run = sdk.beta.deployments.run(deployment.id)
    assert run.session_id is None
    assert run.error.type == "environment_archived_error"
    assert deployment.environment_id in run.error.message


def test_run_now_on_an_archived_deployment_is_refused(sdk, deployment):
    sdk.beta.deployments.archive(deployment.id)
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        sdk.beta.deployments.run(deployment.id)
    assert "archived" in excinfo.value.body["error"]["message"]


def test_run_now_on_another_tenants_deployment_is_404(live_server, other_tenant, deployment):
    with pytest.raises(anthropic.NotFoundError):
        other_tenant.sdk(live_server.url).beta.deployment_runs.retrieve("drun_nope")
    with pytest.raises(anthropic.NotFoundError):
        other_tenant.sdk(live_server.url).beta.deployments.run(deployment.id)


def test_list_auto_pages_and_filters(sdk, deployment):
    fire_minutes(25)
    manual = sdk.beta.deployments.run(deployment.id)
    listed = list(sdk.beta.deployment_runs.list(deployment_id=deployment.id, limit=10))
    assert len(listed) == 26
    assert all(isinstance(run, BetaManagedAgentsDeploymentRun) for run in listed)
    assert listed[0].id == manual.id  # newest first
    created = [run.created_at for run in listed]
    assert created == sorted(created, reverse=True)
    assert len({run.id for run in listed}) == 26

    scheduled = list(sdk.beta.deployment_runs.list(deployment_id=deployment.id, trigger_type="schedule"))
    assert len(scheduled) == 25 and {r.trigger_context.type for r in scheduled} == {"schedule"}
    assert scheduled[-1].trigger_context.scheduled_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    manual_only = list(sdk.beta.deployment_runs.list(trigger_type="manual"))
    assert [r.id for r in manual_only] == [manual.id]
    assert list(sdk.beta.deployment_runs.list(has_error=True)) == []
    assert len(list(sdk.beta.deployment_runs.list(has_error=False, limit=100))) == 26
    assert list(sdk.beta.deployment_runs.list(deployment_id="depl_does_not_exist")) == []

    middle = listed[10].created_at
    newer = list(sdk.beta.deployment_runs.list(created_at_gt=middle, limit=100))
    assert [r.id for r in newer] == [r.id for r in listed[:10]]
    assert len(list(sdk.beta.deployment_runs.list(created_at_gte=middle, limit=100))) == 11
    assert len(list(sdk.beta.deployment_runs.list(created_at_lt=middle, limit=100))) == 15
    assert len(list(sdk.beta.deployment_runs.list(created_at_lte=middle, limit=100))) == 16


def test_retrieve_parses_both_trigger_contexts(sdk, deployment):
    fire_minutes(1)
    scheduled = DeploymentRun.objects.get()
    run = sdk.beta.deployment_runs.retrieve(scheduled.id)
    assert run.trigger_context.type == "schedule"
    assert run.trigger_context.scheduled_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert run.session_id == scheduled.session_id


def test_the_public_docs_loop_prints_each_run(sdk, deployment, tenant):
    from platform_app.models import Environment

    fire_minutes(2)
    Environment.objects.filter(pk=deployment.environment_id).update(archived_at=dj_timezone.now())
    sdk.beta.deployments.run(deployment.id)
    client = sdk
    out = io.StringIO()
    with redirect_stdout(out):
        for run in client.beta.deployment_runs.list(
            deployment_id=deployment.id,
        ):
            print(run.created_at, run.session_id or run.error.type)
        for run in client.beta.deployment_runs.list(
            deployment_id=deployment.id,
            has_error=True,
        ):
            print(run.created_at, run.error.type, run.error.message)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].endswith("environment_archived_error")
    assert lines[1].split()[-1].startswith("sesn_") and lines[2].split()[-1].startswith("sesn_")
    assert "environment_archived_error" in lines[3] and deployment.environment_id in lines[3]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("has_error=maybe", "has_error"),
        ("trigger_type=cron", "trigger_type"), ("created_at[gte]=yesterday", "created_at[gte]"),
        ("page=forged", "page"),
    ],
)
@pytest.mark.django_db
def test_bad_list_parameters_are_400_naming_the_parameter(api, query, field):
    response = api.get(f"/v1/deployment_runs?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(field)


@pytest.mark.django_db
def test_a_cursor_from_another_list_is_rejected(api, tenant):
    from core.pagination import encode_cursor

    foreign = encode_cursor("deployment", dj_timezone.now(), "depl_x")
    response = api.get(f"/v1/deployment_runs?page={foreign}")
    assert response.status_code == 400 and "page" in response.json()["error"]["message"]

"""Events from the fire path, in-process against PostgreSQL and the built-in platform: a scheduled
run announces `deployment_run.started` and `succeeded` (or `failed`); the outcome policy's
auto-pause and auto-archive announce `deployment.paused` / `deployment.archived`; a manual run
announces its run too. Each arrives signed at a real receiver."""

from datetime import datetime, timedelta, timezone

import anthropic
import pytest
from django.utils import timezone as dj_timezone

from runs_app import firing, scheduler
from runs_app.models import DeploymentRun
from tests.factories import make_agent, make_deployment, make_environment
from tests.webhooks.helpers import ALL_EVENTS, pump
from webhooks_app import events, services
from webhooks_app.models import WebhookEvent

pytestmark = pytest.mark.django_db

SDK = anthropic.Anthropic(api_key="unused", base_url="http://127.0.0.1:9")
T0 = datetime(2026, 11, 23, 10, 0, 30, tzinfo=timezone.utc)


@pytest.fixture
def world(tenant, receiver, inline, private_targets):
    _, secret = services.webhook_endpoint_create(organization=tenant.organization, workspace=None, url=receiver.url,
                                                 enabled_events=ALL_EVENTS)
    agent, environment = make_agent(tenant), make_environment(tenant)
    deployment = make_deployment(tenant, agent=agent, environment=environment, now=T0 - timedelta(minutes=1))
    return secret, agent, environment, deployment


def fire_once():
    return [firing.execute_fire(fire_id) for fire_id, _, _ in scheduler.claim_due(T0).fires]


def received(receiver, secret, count):
    requests = receiver.wait_for(count)
    return [(e.data.type, e.data.id) for e in
            (SDK.beta.webhooks.unwrap(r.body.decode(), headers=r.headers, key=secret) for r in requests)]


def test_a_successful_scheduled_run_announces_started_then_succeeded(world, receiver):
    secret, _, _, _ = world
    [result] = fire_once()
    assert result.status == "done"
    pump()
    assert received(receiver, secret, 2) == [
        (events.DEPLOYMENT_RUN_STARTED, result.run_id), (events.DEPLOYMENT_RUN_SUCCEEDED, result.run_id)]


def test_an_error_that_pauses_announces_the_failed_run_and_the_pause(world, receiver):
    secret, _, environment, deployment = world
    type(environment).objects.filter(pk=environment.pk).update(archived_at=dj_timezone.now())
    [result] = fire_once()
    assert DeploymentRun.objects.get(pk=result.run_id).error_type == "environment_archived_error"
    pump()
    assert sorted(received(receiver, secret, 3)) == sorted([
        (events.DEPLOYMENT_RUN_STARTED, result.run_id), (events.DEPLOYMENT_RUN_FAILED, result.run_id),
        (events.DEPLOYMENT_PAUSED, deployment.pk)])


def test_an_agent_gone_announces_the_archive_and_no_run(world, receiver):
    secret, agent, _, deployment = world
    type(agent).objects.filter(pk=agent.pk).update(archived_at=dj_timezone.now())
    [result] = fire_once()
    assert result.status == "archived"
    pump()
    assert received(receiver, secret, 1) == [(events.DEPLOYMENT_ARCHIVED, deployment.pk)]
    assert not WebhookEvent.objects.filter(type__startswith="deployment_run.").exists()


def test_a_manual_run_announces_its_run(world, receiver):
    secret, _, _, deployment = world
    run = firing.run_manually(deployment=deployment).run
    pump()
    assert received(receiver, secret, 2) == [
        (events.DEPLOYMENT_RUN_STARTED, run.id), (events.DEPLOYMENT_RUN_SUCCEEDED, run.id)]

"""The outbox: `events_record` writes in the caller's transaction, the deployment services announce
each change once, and fan-out turns events into one delivery per interested endpoint."""

import pytest
from django.db import transaction

from deployments_app import services as deployment_services
from deployments_app.models import Deployment
from tests.deployments.helpers import WEEKLY
from tests.factories import USER_MESSAGE, make_agent, make_deployment, make_environment
from tests.webhooks.helpers import ALL_EVENTS
from webhooks_app import events, services
from webhooks_app.events import Event
from webhooks_app.models import WebhookDelivery, WebhookEvent
from webhooks_app.selectors import subscriptions

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_doorbell(monkeypatch, settings):
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 0
    monkeypatch.setattr(services, "ring_doorbell", lambda: None)


def subscribe(tenant, enabled_events=ALL_EVENTS, workspace=None, url="https://hooks.example.com/in"):
    endpoint, _secret = services.webhook_endpoint_create(
        organization=tenant.organization, workspace=workspace, url=url, enabled_events=enabled_events
    )
    return endpoint


def recorded() -> list[tuple[str, str]]:
    return list(WebhookEvent.objects.order_by("id").values_list("type", "object_id"))


def test_an_organization_without_endpoints_gets_no_outbox_rows(tenant):
    written = services.events_record(events=[Event(events.DEPLOYMENT_RUN_STARTED, tenant.organization.pk,
                                                   tenant.workspace.pk, "drun_1")])
    assert written == 0
    assert WebhookEvent.objects.count() == 0


def test_rows_are_written_in_order_and_only_for_subscribed_types(tenant):
    subscribe(tenant, [events.DEPLOYMENT_RUN_STARTED, events.DEPLOYMENT_RUN_FAILED])
    org, ws = tenant.organization.pk, tenant.workspace.pk
    written = services.events_record(events=[
        (events.DEPLOYMENT_RUN_STARTED, org, ws, "drun_1"),
        (events.DEPLOYMENT_RUN_SUCCEEDED, org, ws, "drun_1"),
        (events.DEPLOYMENT_RUN_STARTED, org, ws, "drun_2"),
        (events.DEPLOYMENT_RUN_FAILED, org, ws, "drun_2"),
    ])
    assert written == 3
    assert recorded() == [
        (events.DEPLOYMENT_RUN_STARTED, "drun_1"),
        (events.DEPLOYMENT_RUN_STARTED, "drun_2"),
        (events.DEPLOYMENT_RUN_FAILED, "drun_2"),
    ]
    assert all(event_id.startswith("evt_") for event_id in WebhookEvent.objects.values_list("id", flat=True))


def test_a_rolled_back_change_is_never_announced(tenant):
    subscribe(tenant)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            services.events_record(events=[(events.DEPLOYMENT_PAUSED, tenant.organization.pk, tenant.workspace.pk,
                                            "depl_1")])
            assert WebhookEvent.objects.count() == 1
            raise RuntimeError("the change fails after recording its event")
    assert WebhookEvent.objects.count() == 0


def test_an_unknown_event_type_is_a_programming_error(tenant):
    subscribe(tenant)
    with pytest.raises(ValueError, match="unknown webhook event type"):
        services.events_record(events=[("deployment.exploded", tenant.organization.pk, tenant.workspace.pk, "x")])


def test_the_memo_of_subscriptions_is_forgotten_when_an_endpoint_changes(tenant, settings):
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 60
    subscriptions.forget()
    assert subscriptions.get() == {}
    endpoint = subscribe(tenant, [events.DEPLOYMENT_PAUSED])
    assert subscriptions.get() == {tenant.organization.pk: frozenset({events.DEPLOYMENT_PAUSED})}
    services.webhook_endpoint_disable(endpoint=endpoint)
    assert subscriptions.get() == {}


def test_each_deployment_service_announces_its_change_once(tenant):
    subscribe(tenant)
    agent, environment = make_agent(tenant), make_environment(tenant)
    deployment = deployment_services.deployment_create(
        organization=tenant.organization, workspace=tenant.workspace, name="Weekly", agent=agent.id,
        environment_id=environment.id, initial_events=[USER_MESSAGE], schedule=WEEKLY,
    )
    deployment_services.deployment_update(deployment=deployment, data={"name": "Renamed"})
    deployment_services.deployment_pause(deployment=deployment)
    deployment_services.deployment_pause(deployment=deployment)  # a no-op: nothing to announce
    deployment_services.deployment_unpause(deployment=deployment)
    deployment_services.deployment_archive(deployment=deployment)
    deployment_services.deployment_archive(deployment=deployment)  # a no-op too
    assert recorded() == [
        (events.DEPLOYMENT_CREATED, deployment.pk),
        (events.DEPLOYMENT_UPDATED, deployment.pk),
        (events.DEPLOYMENT_PAUSED, deployment.pk),
        (events.DEPLOYMENT_UNPAUSED, deployment.pk),
        (events.DEPLOYMENT_ARCHIVED, deployment.pk),
    ]
    row = WebhookEvent.objects.first()
    assert (row.organization_id, row.workspace_id) == (tenant.organization.pk, tenant.workspace.pk)


def test_a_refused_change_announces_nothing(tenant):
    subscribe(tenant)
    agent, environment = make_agent(tenant), make_environment(tenant)
    deployment = make_deployment(tenant, agent=agent, environment=environment)
    deployment_services.deployment_archive(deployment=deployment)
    with pytest.raises(Exception, match="archived"):
        deployment_services.deployment_pause(deployment=Deployment.objects.get(pk=deployment.pk))
    assert recorded() == [(events.DEPLOYMENT_ARCHIVED, deployment.pk)]


def test_archiving_an_agent_announces_each_of_its_deployments(tenant):
    subscribe(tenant)
    agent, environment = make_agent(tenant), make_environment(tenant)
    deployments = [make_deployment(tenant, agent=agent, environment=environment, name=f"d{i}") for i in range(3)]
    assert deployment_services.deployments_archive_for_agent(agent_id=agent.id) == 3
    assert sorted(recorded()) == sorted((events.DEPLOYMENT_ARCHIVED, d.pk) for d in deployments)


def test_fan_out_makes_one_delivery_per_interested_endpoint(tenant, other_tenant):
    everything = subscribe(tenant)
    runs_only = subscribe(tenant, [events.DEPLOYMENT_RUN_FAILED])
    other_workspace = tenant.organization.workspaces.create(name="research")
    workspace_bound = subscribe(tenant, ALL_EVENTS, workspace=other_workspace)
    foreign = subscribe(other_tenant)
    org, ws = tenant.organization.pk, tenant.workspace.pk
    services.events_record(events=[(events.DEPLOYMENT_PAUSED, org, ws, "depl_1"),
                                   (events.DEPLOYMENT_RUN_FAILED, org, ws, "drun_1"),
                                   (events.DEPLOYMENT_RUN_FAILED, org, other_workspace.pk, "drun_2")])
    taken, groups = services.events_fan_out()
    assert taken == 3
    delivered = {(d.endpoint_id, d.event.object_id) for d in WebhookDelivery.objects.select_related("event")}
    assert delivered == {
        (everything.pk, "depl_1"), (everything.pk, "drun_1"), (everything.pk, "drun_2"),
        (runs_only.pk, "drun_1"), (runs_only.pk, "drun_2"),
        (workspace_bound.pk, "drun_2"),
    }
    assert foreign.pk not in {endpoint_id for endpoint_id, _ in groups}
    assert not WebhookEvent.objects.filter(fanned_out_at__isnull=True).exists()
    assert services.events_fan_out() == (0, [])


def test_event_ids_increase_in_a_process_even_within_one_millisecond():
    ids = [services._event_ids(1)[0] for _ in range(500)] + services._event_ids(100)
    assert ids == sorted(ids)
    assert len(set(ids)) == 600


def test_a_broker_outage_costs_one_doorbell_attempt_then_the_sweep_delivers(monkeypatch):
    from webhooks_app.tasks import dispatch

    monkeypatch.undo()  # the real doorbell
    monkeypatch.setattr(services, "_doorbell_muted_until", 0.0)
    calls = []

    def unreachable(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("redis is down")

    monkeypatch.setattr(dispatch, "apply_async", unreachable)
    services.ring_doorbell()
    services.ring_doorbell()
    services.ring_doorbell()
    assert len(calls) == 1 and calls[0]["retry"] is False

"""The per-organization limit on scheduled deployments, including under real concurrency."""

import threading

import anthropic
import pytest
from django.db import connection

from deployments_app import services
from deployments_app.errors import LimitExceeded
from deployments_app.models import Deployment
from tests.deployments.helpers import USER_MESSAGE, WEEKLY, create, error, ok, update

DAILY = {"type": "cron", "expression": "0 0 * * *", "timezone": "UTC"}


def fill(tenant, agent, environment, count: int, **fields) -> None:
    """`count` scheduled deployments straight in the database."""
    defaults = {"schedule_expression": "0 0 * * *", "schedule_timezone": "UTC"}
    Deployment.objects.bulk_create(
        Deployment(
            organization=tenant.organization, workspace=tenant.workspace, name=f"filler {i}", agent_id=agent.id,
            agent_version=1, environment_id=environment.id, initial_events=[USER_MESSAGE], **{**defaults, **fields},
        )
        for i in range(count)
    )


def scheduled_count(tenant) -> int:
    return Deployment.objects.filter(
        organization=tenant.organization, archived_at__isnull=True, schedule_expression__isnull=False
    ).count()


def set_limit(tenant, limit: int | None) -> None:
    tenant.organization.scheduled_deployment_limit = limit
    tenant.organization.save(update_fields=["scheduled_deployment_limit"])


@pytest.mark.django_db
class TestLimit:
    def test_create_at_the_limit_is_400_naming_the_limit_and_count(self, api, body, tenant, agent, environment):
        set_limit(tenant, 3)
        fill(tenant, agent, environment, 2)
        create(api, body, schedule=WEEKLY)
        message = error(api.post("/v1/deployments", {**body, "schedule": WEEKLY}, format="json"), 400)
        assert message.startswith("schedule: the organization already has 3 scheduled deployments and the limit is 3")
        assert scheduled_count(tenant) == 3

    def test_the_default_limit_comes_from_the_setting(self, api, body, tenant, agent, environment, settings):
        settings.ORG_SCHEDULED_DEPLOYMENT_LIMIT = 2
        fill(tenant, agent, environment, 2)
        assert "the limit is 2" in error(api.post("/v1/deployments", {**body, "schedule": WEEKLY}, format="json"), 400)
        set_limit(tenant, 5)  # the organization's own number wins
        create(api, body, schedule=WEEKLY)

    def test_manual_only_deployments_are_not_limited(self, api, body, tenant, agent, environment):
        set_limit(tenant, 1)
        fill(tenant, agent, environment, 1)
        assert create(api, body)["schedule"] is None

    def test_archived_and_manual_deployments_do_not_count_but_paused_ones_do(
        self, api, body, tenant, agent, environment
    ):
        from django.utils import timezone

        set_limit(tenant, 2)
        fill(tenant, agent, environment, 5, archived_at=timezone.now())
        fill(tenant, agent, environment, 5, schedule_expression=None, schedule_timezone=None)
        fill(tenant, agent, environment, 1, status="paused", paused_reason={"type": "manual"})
        create(api, body, schedule=WEEKLY)
        assert error(api.post("/v1/deployments", {**body, "schedule": WEEKLY}, format="json"), 400).startswith(
            "schedule: the organization already has 2 scheduled deployments"
        )

    def test_the_limit_is_per_organization_across_workspaces(self, api, body, tenant, other_tenant, agent, environment):
        from tests.conftest import Tenant

        set_limit(tenant, 2)
        sibling = Tenant(tenant.organization.name, workspace_name="Staging")
        fill(sibling, agent, environment, 1)
        fill(other_tenant, agent, environment, 10)
        create(api, body, schedule=WEEKLY)
        assert "already has 2" in error(api.post("/v1/deployments", {**body, "schedule": WEEKLY}, format="json"), 400)

    def test_adding_a_schedule_by_update_is_limited(self, api, body, tenant, agent, environment):
        set_limit(tenant, 1)
        manual = create(api, body)
        scheduled = create(api, body, schedule=WEEKLY)
        assert error(update(api, manual["id"], {"schedule": WEEKLY}), 400).startswith(
            "schedule: the organization already has 1 scheduled deployments and the limit is 1"
        )
        # Changing the schedule of an already scheduled deployment is not adding one.
        ok(update(api, scheduled["id"], {"schedule": DAILY}))
        # Removing a schedule or archiving frees a slot.
        ok(update(api, scheduled["id"], {"schedule": None}))
        ok(update(api, manual["id"], {"schedule": WEEKLY}))
        ok(api.post(f"/v1/deployments/{manual['id']}/archive"))
        ok(update(api, scheduled["id"], {"schedule": WEEKLY}))


def _race(count: int, work) -> list[tuple[str, str]]:
    """Run `work(i)` in `count` threads released at once; each thread has its own DB connection."""
    barrier = threading.Barrier(count)
    results: list[tuple[str, str]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            outcome = work(i)
        except Exception as exc:  # noqa: BLE001 — every outcome is recorded and asserted on
            outcome = (type(exc).__name__, str(exc))
        finally:
            connection.close()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == count
    return results


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_creates_through_the_api_at_990_end_at_exactly_1000(
    live_server, tenant, agent, environment
):
    set_limit(tenant, 1000)
    fill(tenant, agent, environment, 990)
    # One connection per request, so each server thread ends (and closes its database connection)
    # as soon as its response is sent.
    client = tenant.sdk(live_server.url, timeout=60, default_headers={"Connection": "close"})

    def work(i: int):
        try:
            deployment = client.beta.deployments.create(
                name=f"race {i}", agent=agent.id, environment_id=environment.id, initial_events=[USER_MESSAGE],
                schedule=DAILY,
            )
            return "created", deployment.id
        except anthropic.BadRequestError as exc:
            return "refused", exc.body["error"]["message"]

    results = _race(50, work)
    client.close()
    created = [value for kind, value in results if kind == "created"]
    refused = [value for kind, value in results if kind == "refused"]
    assert [outcome for outcome in results if outcome[0] not in ("created", "refused")] == []
    assert len(created) == 10
    assert len(refused) == 40
    assert all("the limit is 1000" in message and "already has 1000" in message for message in refused)
    assert scheduled_count(tenant) == 1000


@pytest.mark.django_db(transaction=True)
def test_concurrent_updates_adding_schedules_respect_the_limit(tenant, agent, environment):
    set_limit(tenant, 25)
    fill(tenant, agent, environment, 20)
    manual = [
        services.deployment_create(
            organization=tenant.organization, workspace=tenant.workspace, name=f"manual {i}", agent=agent.id,
            environment_id=environment.id, initial_events=[USER_MESSAGE],
        )
        for i in range(30)
    ]

    def work(i: int):
        try:
            services.deployment_update(
                deployment=Deployment.objects.get(pk=manual[i].pk), data={"schedule": dict(DAILY)}
            )
            return "updated", manual[i].pk
        except LimitExceeded as exc:
            return "refused", exc.message

    results = _race(30, work)
    assert sorted(kind for kind, _ in results) == ["refused"] * 25 + ["updated"] * 5, results
    assert scheduled_count(tenant) == 25
    # Each one that got its schedule is firing; the refused ones are unchanged.
    updated = {pk for kind, pk in results if kind == "updated"}
    for deployment in Deployment.objects.filter(pk__in=[d.pk for d in manual]):
        assert (deployment.next_fire_at is not None) == (deployment.pk in updated)

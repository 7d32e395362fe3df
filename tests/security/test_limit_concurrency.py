"""The per-organization limit on scheduled deployments under real concurrency: threads with their
own PostgreSQL connections, released together, going through the whole API (auth, parsing,
services, the organization row lock). The organization ends at exactly its limit, every refusal
is the limit's 400, and nothing half-applied is left behind."""

import threading

import pytest
from django.db import connection

from deployments_app.models import Deployment
from platform_app import services as platform_services
from tests.conftest import Tenant
from tests.security.conftest import USER_MESSAGE

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 1000
SCHEDULE = {"type": "cron", "expression": "15 3 * * *", "timezone": "Asia/Kolkata"}


def fill(tenant, agent, environment, count: int, **fields) -> None:
    """`count` deployments straight in the database (scheduled unless told otherwise)."""
    defaults = {"schedule_expression": "0 0 * * *", "schedule_timezone": "UTC"}
    Deployment.objects.bulk_create(
        Deployment(
            organization=tenant.organization, workspace=tenant.workspace, name=f"filler {i}", agent_id=agent.id,
            agent_version=1, environment_id=environment.id, initial_events=[USER_MESSAGE], **{**defaults, **fields},
        )
        for i in range(count)
    )


def scheduled(organization) -> int:
    return Deployment.objects.filter(
        organization=organization, archived_at__isnull=True, schedule_expression__isnull=False
    ).count()


def race(works) -> list:
    """Run every `work()` in its own thread, released at once; each thread has its own database
    connection (Django's are per thread) and closes it when done."""
    barrier = threading.Barrier(len(works))
    results: list = [None] * len(works)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = works[index]()
        except Exception as exc:  # noqa: BLE001 — every outcome is asserted on
            results[index] = ("exception", repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(works))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def outcome(response) -> tuple:
    data = response.json()
    if response.status_code == 200:
        return "ok", data["id"]
    return response.status_code, data.get("error", {}).get("type"), data.get("error", {}).get("message", "")


class Org:
    def __init__(self, name: str, limit: int = LIMIT):
        self.tenant = Tenant(name)
        self.tenant.organization.scheduled_deployment_limit = limit
        self.tenant.organization.save(update_fields=["scheduled_deployment_limit"])
        scope = {"organization": self.tenant.organization, "workspace": self.tenant.workspace}
        self.agent = platform_services.agent_create(**scope, name="Bot", model="claude-sonnet-4-6")
        self.environment = platform_services.environment_create(**scope, name="prod")

    def create_body(self, i: int, **extra) -> dict:
        return {"name": f"race {i}", "agent": self.agent.id, "environment_id": self.environment.id,
                "initial_events": [USER_MESSAGE], **extra}


def assert_refusals_name_the_limit(refused: list, limit: int) -> None:
    for status, error_type, message in refused:
        assert (status, error_type) == (400, "invalid_request_error")
        assert message.startswith("schedule: the organization already has") and f"the limit is {limit}" in message


def test_fifty_concurrent_creates_at_990_end_at_exactly_1000():
    org = Org("Racers")
    fill(org.tenant, org.agent, org.environment, LIMIT - 10)

    def create(i):
        return lambda: outcome(org.tenant.client().post("/v1/deployments", org.create_body(i, schedule=SCHEDULE),
                                                        format="json"))

    results = race([create(i) for i in range(50)])
    created = [r for r in results if r[0] == "ok"]
    refused = [r for r in results if r[0] != "ok"]
    assert len(created) == 10, results
    assert_refusals_name_the_limit(refused, LIMIT)
    assert scheduled(org.tenant.organization) == LIMIT
    # Every one that was answered 200 exists and fires; no refused one was half-written.
    rows = Deployment.objects.filter(name__startswith="race ")
    assert sorted(rows.values_list("id", flat=True)) == sorted(r[1] for r in created)
    assert all(row.next_fire_at is not None for row in rows)


def test_fifty_manual_deployments_given_a_schedule_at_once_stop_at_exactly_the_limit():
    org = Org("Updaters")
    fill(org.tenant, org.agent, org.environment, LIMIT - 10)
    fill(org.tenant, org.agent, org.environment, 50, schedule_expression=None, schedule_timezone=None)
    manual = list(Deployment.objects.filter(schedule_expression__isnull=True).values_list("id", flat=True))
    assert len(manual) == 50

    def schedule(deployment_id):
        return lambda: outcome(org.tenant.client().post(f"/v1/deployments/{deployment_id}", {"schedule": SCHEDULE},
                                                        format="json"))

    results = race([schedule(pk) for pk in manual])
    updated = [r for r in results if r[0] == "ok"]
    assert len(updated) == 10, results
    assert_refusals_name_the_limit([r for r in results if r[0] != "ok"], LIMIT)
    assert scheduled(org.tenant.organization) == LIMIT
    for row in Deployment.objects.filter(pk__in=manual):
        gained = row.pk in {r[1] for r in updated}
        assert (row.schedule_expression is not None) == gained
        assert (row.next_fire_at is not None) == gained


def test_creates_and_updates_racing_together_share_one_limit():
    org = Org("Mixed", limit=40)
    fill(org.tenant, org.agent, org.environment, 30)
    fill(org.tenant, org.agent, org.environment, 25, schedule_expression=None, schedule_timezone=None)
    manual = list(Deployment.objects.filter(schedule_expression__isnull=True).values_list("id", flat=True))
    client = org.tenant.client

    works = [lambda i=i: outcome(client().post("/v1/deployments", org.create_body(i, schedule=SCHEDULE),
                                               format="json")) for i in range(25)]
    works += [lambda pk=pk: outcome(client().post(f"/v1/deployments/{pk}", {"schedule": SCHEDULE}, format="json"))
              for pk in manual]
    results = race(works)
    assert sum(r[0] == "ok" for r in results) == 10, results
    assert_refusals_name_the_limit([r for r in results if r[0] != "ok"], 40)
    assert scheduled(org.tenant.organization) == 40


def test_the_limit_holds_across_workspaces_of_one_organization_under_concurrency():
    org = Org("Spread", limit=30)
    fill(org.tenant, org.agent, org.environment, 25)
    staging = Tenant("Spread", workspace_name="Staging")
    scope = {"organization": staging.organization, "workspace": staging.workspace}
    staging_agent = platform_services.agent_create(**scope, name="Bot", model="claude-sonnet-4-6")
    staging_environment = platform_services.environment_create(**scope, name="prod")
    staging_body = {"agent": staging_agent.id, "environment_id": staging_environment.id,
                    "initial_events": [USER_MESSAGE], "schedule": SCHEDULE}

    works = [lambda i=i: outcome(org.tenant.client().post("/v1/deployments", org.create_body(i, schedule=SCHEDULE),
                                                          format="json")) for i in range(20)]
    works += [lambda i=i: outcome(staging.client().post("/v1/deployments", {"name": f"staging {i}", **staging_body},
                                                        format="json")) for i in range(20)]
    results = race(works)
    assert sum(r[0] == "ok" for r in results) == 5, results
    assert scheduled(org.tenant.organization) == 30


def test_archives_racing_with_creates_never_let_the_count_pass_the_limit():
    """Archiving frees slots while creates take them: whatever the interleaving, the count never
    passes the limit and equals what the answers say happened."""
    org = Org("Churn", limit=20)
    fill(org.tenant, org.agent, org.environment, 20)
    to_archive = list(Deployment.objects.filter(organization=org.tenant.organization).values_list("id", flat=True)[:8])
    client = org.tenant.client

    works = [lambda i=i: outcome(client().post("/v1/deployments", org.create_body(i, schedule=SCHEDULE),
                                               format="json")) for i in range(24)]
    works += [lambda pk=pk: outcome(client().post(f"/v1/deployments/{pk}/archive")) for pk in to_archive]
    results = race(works)
    created = sum(r[0] == "ok" for r in results[:24])
    archived = sum(r[0] == "ok" for r in results[24:])
    assert archived == 8, results
    assert created <= 8
    assert_refusals_name_the_limit([r for r in results[:24] if r[0] != "ok"], 20)
    assert scheduled(org.tenant.organization) == 20 - archived + created <= 20

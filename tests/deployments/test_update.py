"""POST /v1/deployments/{id}: update semantics, field by field (SPEC §4)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments_app.models import Deployment
from tests.deployments.helpers import WEEKLY, add_version, create, error, next_fire, ok, update
from tests.factories import make_agent, make_environment, make_vault

pytestmark = pytest.mark.django_db

BUDGET = {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}}
OUTCOME = {"type": "user.define_outcome", "description": "A report", "rubric": {"type": "text", "content": "ok"}}


@pytest.fixture
def full(api, body, vault):
    """A deployment with every optional field set."""
    return create(
        api, body, description="Scans weekly", metadata={"team": "security", "tier": "1"}, budget=BUDGET,
        resources=[{"type": "file", "file_id": "file_01"}], vault_ids=[vault.id], schedule=WEEKLY,
    )


def test_empty_update_keeps_every_field(api, full):
    data = ok(update(api, full["id"], {}))
    for key in full:
        if key not in ("updated_at", "schedule"):
            assert data[key] == full[key], key
    assert data["schedule"]["expression"] == full["schedule"]["expression"]
    assert data["updated_at"] >= full["updated_at"]


def test_name_is_replaced_and_cannot_be_cleared(api, full):
    assert ok(update(api, full["id"], {"name": "Renamed"}))["name"] == "Renamed"
    assert error(update(api, full["id"], {"name": None}), 400) == (
        "name: cannot be cleared (omit it to keep the current value)"
    )
    assert error(update(api, full["id"], {"name": ""}), 400) == "name: must not be empty"
    assert ok(api.get(f"/v1/deployments/{full['id']}"))["name"] == "Renamed"


@pytest.mark.parametrize("cleared", ["", None])
def test_description_empty_or_null_clears_it(api, full, cleared):
    assert ok(update(api, full["id"], {"description": "New"}))["description"] == "New"
    assert ok(update(api, full["id"], {"description": cleared}))["description"] is None


def test_agent_id_string_repins_to_the_latest_version(api, full, agent):
    add_version(agent, 2)
    assert full["agent"]["version"] == 1
    data = ok(update(api, full["id"], {"agent": agent.id}))
    assert data["agent"] == {"type": "agent", "id": agent.id, "version": 2}


def test_agent_object_pins_that_version_and_can_switch_agents(api, full, tenant):
    other = add_version(make_agent(tenant, name="other"), 2)
    data = ok(update(api, full["id"], {"agent": {"type": "agent", "id": other.id, "version": 1}}))
    assert data["agent"] == {"type": "agent", "id": other.id, "version": 1}
    assert Deployment.objects.get(pk=full["id"]).agent_id == other.id


def test_agent_cannot_be_cleared_and_must_exist(api, full, tenant, agent):
    assert error(update(api, full["id"], {"agent": None}), 400).startswith("agent: cannot be cleared")
    assert error(update(api, full["id"], {"agent": "agent_nope"}), 404) == "agent: agent agent_nope not found"
    archived = make_agent(tenant, archived=True)
    assert error(update(api, full["id"], {"agent": archived.id}), 400) == f"agent: agent {archived.id} is archived"
    assert error(update(api, full["id"], {"agent": {"type": "agent", "id": agent.id, "version": 3}}), 404) == (
        f"agent.version: agent {agent.id} has no version 3"
    )
    assert ok(api.get(f"/v1/deployments/{full['id']}"))["agent"] == full["agent"]


def test_environment_is_replaced_checked_and_cannot_be_cleared(api, full, tenant):
    new = make_environment(tenant, name="staging")
    assert ok(update(api, full["id"], {"environment_id": new.id}))["environment_id"] == new.id
    assert error(update(api, full["id"], {"environment_id": None}), 400).startswith("environment_id: cannot be cleared")
    assert error(update(api, full["id"], {"environment_id": "env_nope"}), 404) == (
        "environment_id: environment env_nope not found"
    )
    archived = make_environment(tenant, archived=True)
    assert error(update(api, full["id"], {"environment_id": archived.id}), 400) == (
        f"environment_id: environment {archived.id} is archived"
    )


def test_initial_events_are_replaced_in_full_and_cannot_be_cleared(api, full):
    assert ok(update(api, full["id"], {"initial_events": [OUTCOME]}))["initial_events"] == [OUTCOME]
    assert error(update(api, full["id"], {"initial_events": None}), 400).startswith(
        "initial_events: cannot be cleared"
    )
    assert error(update(api, full["id"], {"initial_events": []}), 400) == "initial_events: must contain at least 1 event"
    assert ok(api.get(f"/v1/deployments/{full['id']}"))["initial_events"] == [OUTCOME]


@pytest.mark.parametrize("cleared", [None, []])
def test_resources_are_replaced_in_full_and_null_or_empty_clears(api, full, cleared):
    new = [{"type": "memory_store", "memory_store_id": "memstore_01", "access": "read_only"}]
    assert ok(update(api, full["id"], {"resources": new}))["resources"] == new
    assert ok(update(api, full["id"], {"resources": cleared}))["resources"] == []


@pytest.mark.parametrize("cleared", [None, []])
def test_vault_ids_are_replaced_in_full_checked_and_null_or_empty_clears(api, full, tenant, cleared):
    a, b = make_vault(tenant, name="a"), make_vault(tenant, name="b")
    assert ok(update(api, full["id"], {"vault_ids": [b.id, a.id]}))["vault_ids"] == [b.id, a.id]
    assert error(update(api, full["id"], {"vault_ids": ["vlt_nope"]}), 404) == "vault_ids[0]: vault vlt_nope not found"
    assert ok(update(api, full["id"], {"vault_ids": cleared}))["vault_ids"] == []


def test_metadata_is_a_patch_where_null_deletes(api, full):
    data = ok(update(api, full["id"], {"metadata": {"tier": "2", "owner": "ops", "team": None, "absent": None}}))
    assert data["metadata"] == {"tier": "2", "owner": "ops"}


@pytest.mark.parametrize("patch", [None, {}])
def test_null_or_empty_metadata_keeps_the_bag(api, full, patch):
    assert ok(update(api, full["id"], {"metadata": patch}))["metadata"] == full["metadata"]


def test_metadata_limit_applies_to_the_resulting_bag(api, full):
    message = error(update(api, full["id"], {"metadata": {f"k{i}": "v" for i in range(15)}}), 400)
    assert message == "metadata: at most 16 pairs are allowed (the result would have 17)"
    # Deleting in the same patch makes room.
    patch = {f"k{i}": "v" for i in range(15)} | {"team": None}
    assert len(ok(update(api, full["id"], {"metadata": patch}))["metadata"]) == 16
    assert error(update(api, full["id"], {"metadata": {"k0": "v" * 513}}), 400) == (
        "metadata.k0: must be at most 512 characters"
    )


def test_budget_is_replaced_and_null_clears_it(api, full):
    new = {"type": "limit", "max_list_cost": {"amount": "50", "currency": "USD"}}
    assert ok(update(api, full["id"], {"budget": new}))["budget"] == new
    data = ok(update(api, full["id"], {"budget": None}))
    assert "budget" not in data
    assert Deployment.objects.get(pk=full["id"]).budget is None


def test_schedule_is_replaced_in_full_and_takes_effect_from_the_next_occurrence(api, full):
    before = timezone.now()
    data = ok(update(api, full["id"], {"schedule": {"type": "cron", "expression": "30 6 * * *", "timezone": "UTC"}}))
    after = timezone.now()
    assert data["schedule"]["expression"] == "30 6 * * *"
    assert data["schedule"]["timezone"] == "UTC"
    row = Deployment.objects.get(pk=full["id"])
    assert row.next_fire_at in (next_fire("30 6 * * *", "UTC", before), next_fire("30 6 * * *", "UTC", after))
    assert row.next_fire_at > before


def test_schedule_null_makes_the_deployment_manual_only(api, full):
    data = ok(update(api, full["id"], {"schedule": None}))
    assert data["schedule"] is None
    row = Deployment.objects.get(pk=full["id"])
    assert (row.schedule_expression, row.schedule_timezone, row.next_fire_at) == (None, None, None)


def test_adding_a_schedule_to_a_manual_deployment_starts_firing(api, body):
    manual = create(api, body)
    ok(update(api, manual["id"], {"schedule": {"type": "cron", "expression": "* * * * *", "timezone": "UTC"}}))
    row = Deployment.objects.get(pk=manual["id"])
    assert row.next_fire_at is not None
    assert timezone.now() < row.next_fire_at <= timezone.now() + timedelta(minutes=1)


def test_adding_a_schedule_to_a_paused_deployment_does_not_fire_it(api, body):
    manual = create(api, body)
    ok(api.post(f"/v1/deployments/{manual['id']}/pause"))
    data = ok(update(api, manual["id"], {"schedule": WEEKLY}))
    assert data["status"] == "paused"
    assert len(data["schedule"]["upcoming_runs_at"]) == 5
    assert Deployment.objects.get(pk=manual["id"]).next_fire_at is None


def test_updates_that_do_not_touch_the_schedule_keep_a_due_fire(api, full):
    # A fire that is due but not yet claimed by the scheduler must survive unrelated edits.
    due = timezone.now() - timedelta(seconds=2)
    Deployment.objects.filter(pk=full["id"]).update(next_fire_at=due)
    ok(update(api, full["id"], {"name": "Renamed", "metadata": {"x": "y"}}))
    ok(update(api, full["id"], {"schedule": WEEKLY}))  # the same schedule again is no change
    assert Deployment.objects.get(pk=full["id"]).next_fire_at == due


def test_invalid_schedule_in_update_names_the_subfield_and_changes_nothing(api, full):
    message = error(update(api, full["id"], {"name": "x", "schedule": {"type": "cron", "expression": "0 0 * *",
                                                                       "timezone": "UTC"}}), 400)
    assert message.startswith("schedule.expression: expected 5 fields")
    message = error(update(api, full["id"], {"schedule": {"type": "cron", "expression": "0 0 * * *",
                                                          "timezone": "Nowhere/City"}}), 400)
    assert message.startswith("schedule.timezone: unknown time zone")
    assert ok(api.get(f"/v1/deployments/{full['id']}"))["name"] == full["name"]


def test_unknown_field_in_update_is_400(api, full):
    assert error(update(api, full["id"], {"status": "paused"}), 400) == "status: unknown field"


def test_a_failed_update_changes_nothing(api, full):
    response = update(api, full["id"], {"name": "Renamed", "vault_ids": ["vlt_nope"]})
    assert response.status_code == 404
    assert ok(api.get(f"/v1/deployments/{full['id']}"))["name"] == full["name"]


def test_update_of_an_unknown_deployment_is_404(api):
    assert error(update(api, "depl_nope", {"name": "x"}), 404) == "deployment depl_nope not found"


def test_update_works_on_a_paused_deployment_and_keeps_it_paused(api, full):
    ok(api.post(f"/v1/deployments/{full['id']}/pause"))
    data = ok(update(api, full["id"], {"name": "Still paused", "schedule": {"type": "cron", "expression": "0 1 * * *",
                                                                            "timezone": "UTC"}}))
    assert (data["status"], data["paused_reason"]) == ("paused", {"type": "manual"})
    assert Deployment.objects.get(pk=full["id"]).next_fire_at is None

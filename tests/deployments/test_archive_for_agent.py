"""deployments_archive_for_agent: the agent archive archives exactly that agent's live deployments."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from deployments_app.models import Deployment
from deployments_app.services import deployment_pause, deployments_archive_for_agent
from tests.deployments.helpers import WEEKLY, create, ok
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


def test_archives_every_live_deployment_of_the_agent_and_nothing_else(api, body, tenant, other_tenant, agent):
    active = create(api, body, schedule=WEEKLY)["id"]
    paused = create(api, body, schedule=WEEKLY)["id"]
    deployment_pause(deployment=Deployment.objects.get(pk=paused),
                     reason={"type": "error", "error": {"type": "vault_not_found_error", "message": "vault gone"}})
    manual = create(api, body)["id"]
    already = create(api, body)["id"]
    long_ago = timezone.now() - timedelta(days=3)
    Deployment.objects.filter(pk=already).update(archived_at=long_ago)
    other_agent = make_agent(tenant, name="other")
    untouched = create(api, body, agent=other_agent.id, schedule=WEEKLY)["id"]

    before = timezone.now()
    assert deployments_archive_for_agent(agent_id=agent.id) == 3

    for pk in (active, paused, manual):
        row = Deployment.objects.get(pk=pk)
        assert row.archived_at >= before
        assert (row.status, row.paused_reason, row.next_fire_at) == ("active", None, None)
        data = ok(api.get(f"/v1/deployments/{pk}"))
        assert data["archived_at"] is not None and data["status"] == "active"
    assert Deployment.objects.get(pk=already).archived_at == long_ago
    kept = Deployment.objects.get(pk=untouched)
    assert kept.archived_at is None and kept.next_fire_at is not None
    assert deployments_archive_for_agent(agent_id=agent.id) == 0


def test_unknown_agent_archives_nothing(api, body):
    create(api, body)
    assert deployments_archive_for_agent(agent_id="agent_nope") == 0
    assert Deployment.objects.filter(archived_at__isnull=False).count() == 0


def test_runs_inside_the_callers_transaction(api, body, agent):
    pk = create(api, body, schedule=WEEKLY)["id"]
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            assert deployments_archive_for_agent(agent_id=agent.id) == 1
            raise RuntimeError("the agent archive failed")
    assert Deployment.objects.get(pk=pk).archived_at is None


def test_archiving_the_agent_through_the_platform_archives_its_deployments(api, body, agent):
    from platform_app.services import agent_archive

    pk = create(api, body, schedule=WEEKLY)["id"]
    agent_archive(agent=agent)
    assert Deployment.objects.get(pk=pk).archived_at is not None
    # And a new deployment can no longer use it.
    response = api.post("/v1/deployments", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"agent: agent {agent.id} is archived"

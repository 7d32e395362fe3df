"""Logs: one JSON object per line carrying the ids in scope; a fire's life can be followed by
grepping its id through the real scheduler's and worker's output; no secret is ever logged."""

import json
import logging

import pytest

from deployments_app.models import Deployment
from runs_app.models import Fire
from tests.e2e.procs import Processes
from tests.factories import USER_MESSAGE, make_agent, make_environment
from tests.ops.helpers import make_due_now, wait_for_run

TOKEN = "ghp_LogsMustNeverContainThisToken1234567890"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def lines_with(records: list[dict], **ids) -> list[dict]:
    return [r for r in records if all(r.get(k) == v for k, v in ids.items())]


@pytest.mark.django_db
def test_request_lines_carry_the_request_id_and_organization(api, tenant, caplog):
    caplog.set_level(logging.INFO, logger="core.access")
    response = api.get("/v1/deployments")
    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "core.access"]
    assert record.request_id == response["request-id"]
    assert record.organization_id == tenant.organization.id
    assert (record.method, record.route, record.status) == ("GET", "/v1/deployments", 200)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_fire_is_followed_by_its_id_and_no_secret_reaches_any_log(api, tenant, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    agent, environment = make_agent(tenant), make_environment(tenant)
    body = {
        "name": "Nightly triage", "agent": agent.id, "environment_id": environment.id,
        "initial_events": [USER_MESSAGE],
        "resources": [{"type": "github_repository", "url": "https://github.com/acme/app", "authorization_token": TOKEN}],
        "schedule": {"type": "cron", "expression": "* * * * *", "timezone": "UTC"},
    }
    created = api.post("/v1/deployments", body, format="json")
    assert created.status_code == 200, created.content
    assert TOKEN not in created.content.decode()
    deployment = Deployment.objects.get(pk=created.json()["id"])
    Deployment.objects.filter(pk=deployment.pk).update(jitter_fraction=0.0)
    make_due_now(deployment)
    # Requests that fail validation with the token in them must not echo it either.
    bad = api.post(f"/v1/deployments/{deployment.pk}",
                   {"resources": [{"type": "github_repository", "url": 7, "authorization_token": TOKEN}]}, format="json")
    assert bad.status_code == 400 and TOKEN not in bad.content.decode()

    procs = Processes(LOG_LEVEL="DEBUG", SCHEDULER_MAX_JITTER_SECONDS=0)
    try:
        procs.start_worker(concurrency=1)
        procs.start_scheduler()
        run = wait_for_run(deployment_id=deployment.pk, trigger_type="schedule")
        manual = api.post(f"/v1/deployments/{deployment.pk}/run")
        assert manual.status_code == 200 and manual.json()["session_id"]
    finally:
        procs.stop_all()
    fire = Fire.objects.get(deployment=deployment)
    assert run.session_id and run.fire_id == fire.id

    scheduler_lines = json_lines(procs.log_text("scheduler"))
    worker_lines = json_lines(procs.log_text("worker"))
    # Usually one "fire published"; a broker hiccup adds "re-published by recovery" lines, same ids.
    published = lines_with(scheduler_lines, fire_id=fire.id, deployment_id=deployment.pk, logger="runs.scheduler")
    assert "fire published" in [line["message"] for line in published]
    claimed = lines_with(worker_lines, fire_id=fire.id, deployment_id=deployment.pk, run_id=run.id)
    messages = [line["message"] for line in claimed]
    assert any(m.startswith("fire claimed") for m in messages), messages
    assert f"run recorded: {run.session_id}" in messages
    # Celery's own lines (worker ready, task received) come out as JSON too, through our handler.
    assert any(line["logger"].startswith("celery") for line in worker_lines)
    assert any(line["logger"] == "celery.beat" for line in scheduler_lines)

    captured = capfd.readouterr()
    everything = "\n".join([
        procs.log_text("worker"), procs.log_text("scheduler"), captured.out, captured.err, caplog.text,
        *(json.dumps(vars(r), default=str) for r in caplog.records),
    ])
    assert "run recorded" in everything and fire.id in everything
    assert TOKEN not in everything
    assert TOKEN[4:20] not in everything

"""Helpers for the deployments API tests."""

import copy
from datetime import datetime

from deployments_app import schedule
from platform_app.models import Agent, AgentVersion

USER_MESSAGE = {"type": "user.message", "content": [{"type": "text", "text": "Run the weekly compliance scan."}]}
WEEKLY = {"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"}


def add_version(agent: Agent, version: int) -> Agent:
    AgentVersion.objects.create(agent=agent, version=version, name=f"v{version}", model={"id": "claude-sonnet-4-6"})
    agent.latest_version = version
    agent.save(update_fields=["latest_version"])
    return agent


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    return response.json()


def error(response, status: int, error_type: str | None = None) -> str:
    """The error message, after checking the status and the envelope."""
    assert response.status_code == status, response.content
    data = response.json()
    assert data["type"] == "error"
    if error_type is None:
        error_type = {400: "invalid_request_error", 404: "not_found_error"}[status]
    assert data["error"]["type"] == error_type
    return data["error"]["message"]


def create(api, body: dict, **changes) -> dict:
    return ok(api.post("/v1/deployments", {**body, **changes}, format="json"))


def update(api, deployment_id: str, changes: dict):
    return api.post(f"/v1/deployments/{deployment_id}", changes, format="json")


def next_fire(expression: str, timezone_name: str, after: datetime) -> datetime:
    return schedule.next_fires(expression, timezone_name, after, 1)[0]


def upcoming(expression: str, timezone_name: str, after: datetime, n: int = 5) -> list[str]:
    return [dt.strftime("%Y-%m-%dT%H:%M:%SZ") for dt in schedule.next_fires(expression, timezone_name, after, n)]


def base_body(agent, environment) -> dict:
    return {
        "name": "Weekly compliance scan",
        "agent": agent.id,
        "environment_id": environment.id,
        "initial_events": [copy.deepcopy(USER_MESSAGE)],
    }

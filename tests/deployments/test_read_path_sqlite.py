"""The hand-written statements of the read path (the key lookup, a deployment by id) also run on
the embedded default's SQLite: same answers as the ORM, in a process with no environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json
from django.test import Client
from accounts_app.services import api_key_create, organization_get_or_create, workspace_get_or_create
from deployments_app.models import Deployment
from deployments_app.serializers import deployment_to_dict
from tests.factories import USER_MESSAGE, make_agent, make_environment

organization = organization_get_or_create(name="Embedded reads")
_, key = api_key_create(organization=organization)
class Tenant:
    workspace = organization.workspaces.get(is_default=True)
Tenant.organization = organization
agent, environment = make_agent(Tenant), make_environment(Tenant)
client = Client(HTTP_X_API_KEY=key, HTTP_ANTHROPIC_BETA="managed-agents-2026-04-01")
body = {"name": "d", "agent": agent.id, "environment_id": environment.id, "initial_events": [USER_MESSAGE],
        "metadata": {"a": "b"}, "schedule": {"type": "cron", "expression": "0 9 * * 1-5", "timezone": "Europe/Paris"}}
created = client.post("/v1/deployments", body, content_type="application/json")
fetched = client.get("/v1/deployments/" + created.json()["id"])
orm = deployment_to_dict(Deployment.objects.get(pk=created.json()["id"]))
other = workspace_get_or_create(organization=organization, name="Other")
print(json.dumps({
    "created": created.status_code,
    "fetched": fetched.status_code,
    "same": fetched.json() == created.json() == json.loads(json.dumps(orm)),
    "other_workspace": client.get("/v1/deployments", HTTP_ANTHROPIC_WORKSPACE_ID=other.id).json(),
    "unknown_workspace": client.get("/v1/deployments", HTTP_ANTHROPIC_WORKSPACE_ID="wrkspc_nope").status_code,
    "wrong_key": Client(HTTP_X_API_KEY=key + "x").get("/v1/deployments").status_code,
}))
"""


def test_key_lookup_and_deployment_read_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {
        "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "CACHE_URL", "TEST_DATABASE_NAME", "SECRET_KEY", "DEBUG",
    }}
    env.update({"VAR_DIR": str(tmp_path), "DEBUG": "1", "LOG_LEVEL": "ERROR"})

    def manage(*args):
        out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    manage("migrate", "--noinput", "-v", "0")
    result = json.loads(manage("shell", "-v", "0", "-c", SCRIPT).strip().splitlines()[-1])
    assert result == {
        "created": 200, "fetched": 200, "same": True, "other_workspace": {"data": [], "next_page": None},
        "unknown_workspace": 403, "wrong_key": 401,
    }

"""With no environment at all, the service runs on SQLite and kombu's filesystem transport: a real
worker process consumes a fire published by another process and records its run."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PUBLISH_SCRIPT = """
from datetime import timedelta
from django.utils import timezone
from accounts_app.services import organization_get_or_create
from platform_app.models import Agent, AgentVersion, Environment
from deployments_app.models import Deployment
from runs_app.models import Fire
from runs_app.tasks import fire

org = organization_get_or_create(name="Embedded")
ws = org.workspaces.get(is_default=True)
agent = Agent.objects.create(organization=org, workspace=ws)
AgentVersion.objects.create(agent=agent, version=1, name="a", model={"id": "claude-sonnet-4-6"})
env = Environment.objects.create(organization=org, workspace=ws, name="e")
now = timezone.now().replace(second=0, microsecond=0)
d = Deployment.objects.create(
    organization=org, workspace=ws, name="d", agent_id=agent.id, agent_version=1, environment_id=env.id,
    initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}],
    schedule_expression="* * * * *", schedule_timezone="UTC", next_fire_at=now + timedelta(minutes=1),
)
f = Fire.objects.create(deployment=d, scheduled_at=now, due_at=now)
fire.delay(f.id)
print("published", f.id)
"""


def embedded_env(var_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {
        "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "TEST_DATABASE_NAME", "SECRET_KEY", "DEBUG",
    }}
    env.update({"VAR_DIR": str(var_dir), "DEBUG": "1", "PYTHONUNBUFFERED": "1"})
    return env


def manage(env, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def test_settings_pick_sqlite_and_the_filesystem_broker(tmp_path):
    env = embedded_env(tmp_path)
    code = "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE']); print(s.CELERY_BROKER_URL)"
    out = manage(env, "shell", "-v", "0", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["django.db.backends.sqlite3", "filesystem://"]
    assert (tmp_path / "broker" / "out").is_dir()


@pytest.mark.e2e
def test_a_worker_consumes_a_fire_published_by_another_process(tmp_path):
    env = embedded_env(tmp_path)
    migrate = manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-c", "1", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        published = manage(env, "shell", "-v", "0", "-c", PUBLISH_SCRIPT)
        assert published.returncode == 0, published.stderr
        fire_id = published.stdout.split()[-1]
        assert fire_id.startswith("fire_")
        row = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and row is None:
            time.sleep(0.5)
            with sqlite3.connect(tmp_path / "db.sqlite3") as db:
                row = db.execute(
                    "SELECT r.session_id, f.status FROM runs_app_deploymentrun r JOIN runs_app_fire f ON f.id = r.fire_id "
                    "WHERE f.id = ?", (fire_id,)
                ).fetchone()
        assert row is not None, (tmp_path / "worker.log").read_text()[-3000:]
        session_id, status = row
        assert session_id.startswith("sesn_") and status == "done"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=20)

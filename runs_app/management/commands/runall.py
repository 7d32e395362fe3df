"""`make run`: migrate, create the demo organization and key once, then run the web server, a
Celery worker and the scheduler together in the foreground until Ctrl-C stops all of them."""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_ORGANIZATION = "Demo"


class Command(BaseCommand):
    help = "Run web (127.0.0.1:8000), worker and scheduler together until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--concurrency", default=os.environ.get("WORKER_CONCURRENCY", "2"))

    def handle(self, *args, host, port, concurrency, **options):
        var = Path(settings.VAR_DIR)
        var.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self.stdout.write(f"Database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}; "
                          f"broker: {settings.CELERY_BROKER_URL.split('://', 1)[0]}")
        self.stdout.write(f"API key: {self._demo_key(var)}")
        self.stdout.flush()

        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir(var))}
        python = sys.executable
        commands = {
            "web": [python, "manage.py", "runserver", f"{host}:{port}", "--noreload", "--insecure"],
            "worker": [python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                       "--concurrency", str(concurrency), "--without-gossip", "--without-mingle"],
            "scheduler": [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                          "--pidfile", ""],
        }
        children = {
            name: subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env, start_new_session=True)
            for name, cmd in commands.items()
        }
        self.stdout.write(f"Serving http://{host}:{port}/ (admin at /admin/, API docs at /v1/docs); Ctrl-C stops everything")
        stopping = {"flag": False}

        def stop(signum, frame):
            stopping["flag"] = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping["flag"]:
                for name, child in children.items():
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with code {child.returncode}; stopping the rest")
                        stopping["flag"] = True
                time.sleep(0.5)
        finally:
            self._stop(children)

    def _stop(self, children):
        # Each main process first, so Celery shuts its own pool down warmly; the whole group is
        # killed only if something is still there after the grace period.
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in children.values():
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _metrics_dir(self, var: Path) -> Path:
        """A fresh directory where web, worker and scheduler write their metric samples, so /metrics
        adds up all three. Samples of an earlier run are removed: their processes are gone."""
        directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or var / "prometheus")
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return directory

    def _demo_key(self, var: Path) -> str:
        """The demo key is created once; its plain text is kept in var/ (mode 0600) so later runs can
        print it again. The database stores only its hash, like every other key."""
        from accounts_app.models import ApiKey, hash_key
        from accounts_app.services import api_key_create, organization_get_or_create

        key_file = var / "demo-api-key"
        if key_file.exists():
            plain = key_file.read_text().strip()
            if ApiKey.objects.filter(key_hash=hash_key(plain), revoked_at__isnull=True).exists():
                return plain
        organization = organization_get_or_create(name=DEMO_ORGANIZATION)
        _, plain = api_key_create(organization=organization, name="demo (make run)")
        key_file.write_text(plain + "\n")
        key_file.chmod(0o600)
        return plain

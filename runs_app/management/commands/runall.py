"""`make run`: migrate, create the demo organization and key once, then run the web server, a
Celery worker, the scheduler and the webhooks worker together in the foreground until Ctrl-C stops
all of them.

SIGINT, SIGTERM and SIGHUP (a closed terminal) all stop the children and their own processes before
runall exits. If runall is killed outright, Linux still takes the children down with it (parent-death
signal); if a child dies on its own, runall names it, stops the others and exits non-zero."""

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

DEMO_ORGANIZATION = "Demo"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 10
PR_SET_PDEATHSIG = 1


class StopRequest:
    """Signal handler for STOP_SIGNALS. It only records the signal: the stop itself runs in the main
    loop, where it cannot be interrupted half-way. A second signal while stopping skips the grace
    period (pressing Ctrl-C twice)."""

    def __init__(self):
        self.signum: int | None = None
        self.hurry = False

    def __call__(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        else:
            self.hurry = True

    def install(self):
        for signum in STOP_SIGNALS:
            signal.signal(signum, self)


def die_with_parent():
    """A preexec_fn that makes the kernel SIGKILL the child when runall dies, even by SIGKILL, when
    nothing is left to stop it. SIGKILL is safe here: tasks are acked late and requeued when a worker
    is lost, and Celery's pool processes carry the same signal towards their worker. None where prctl
    is not available (not Linux): there the children are only stopped by runall's own handlers."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0),
              ctypes.c_ulong(0))
        # runall may have died between fork and prctl: then the signal would never come.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


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
            # Outgoing webhooks on a queue and worker of their own: a slow endpoint never delays a fire.
            "webhooks": [python, "-m", "celery", "-A", "config", "worker", "-Q", settings.WEBHOOK_QUEUE, "-P", "threads",
                         "--concurrency", str(settings.WEBHOOK_WORKER_CONCURRENCY), "-n", "webhooks@%h",
                         "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        }
        # Handlers go in before the first child starts, so no signal can leave a child behind.
        stop = StopRequest()
        stop.install()
        children: dict[str, subprocess.Popen] = {}
        failed = None
        try:
            self._start(commands, env, stop, children)
            self._say(f"Serving http://{host}:{port}/ (admin at /admin/, API docs at /v1/docs); Ctrl-C stops everything")
            failed = self._watch(children, stop)
            if failed:
                self._say(f"{failed} {describe_exit(children[failed].returncode)}; stopping the rest", error=True)
            else:
                self._say(f"{signal.Signals(stop.signum).name} received; stopping web, worker and scheduler")
        finally:
            self._stop(children, stop)
        if failed:
            raise CommandError(f"{failed} {describe_exit(children[failed].returncode)}")

    def _start(self, commands: dict, env: dict, stop: StopRequest, children: dict[str, subprocess.Popen]):
        """Each child leads its own session: Ctrl-C reaches runall alone, which stops the children in
        order, and a whole child (Celery's pool processes too) can be killed as one process group.
        Children are added as they start, so a failed start still stops the ones before it."""
        for name, cmd in commands.items():
            if stop.signum is not None:
                break
            children[name] = subprocess.Popen(
                cmd, cwd=settings.BASE_DIR, env=env, start_new_session=True, preexec_fn=die_with_parent()
            )

    def _watch(self, children: dict[str, subprocess.Popen], stop: StopRequest) -> str | None:
        """Wait for a stop signal or for a child to exit; the name of a child that exited, if any."""
        while stop.signum is None:
            for name, child in children.items():
                if child.poll() is not None:
                    return name
            time.sleep(0.2)
        return None

    def _stop(self, children: dict[str, subprocess.Popen], stop: StopRequest):
        """SIGTERM to each main process first, so Celery shuts its own pool down warmly; whatever is
        left of each process group after the grace period (or at a second signal) is killed."""
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while (not stop.hurry and time.monotonic() < deadline
               and any(child.poll() is None for child in children.values())):
            time.sleep(0.1)
        for child in children.values():
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for child in children.values():
            child.wait()

    def _say(self, message: str, error: bool = False):
        """Best effort: after SIGHUP the terminal is gone and writing to it fails, which must not keep
        the children from being stopped."""
        stream = self.stderr if error else self.stdout
        try:
            stream.write(message)
            stream.flush()
        except OSError:
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

"""Start and stop this service's own processes (workers, schedulers) for end-to-end tests.

Every process is started in its own session; its PID is recorded, and only those PIDs (and their
process groups) are ever signalled.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = Path(os.environ.get("E2E_LOG_DIR", "/tmp/sd-e2e-logs"))


def test_database_url() -> str:
    """The URL of the database the test is using (pytest-django's test database)."""
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def stop_process_groups(procs, grace: float = 15.0) -> None:
    """SIGTERM to each process group started here, up to `grace` seconds to exit, then SIGKILL to
    whatever is left of each group (a worker's pool processes included)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class Processes:
    def __init__(self, **env_overrides):
        self.queue = f"e2e-{uuid.uuid4().hex[:10]}"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_QUEUE": self.queue,
            "DB_CONN_MAX_AGE": "0",
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in env_overrides.items()},
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log_path = LOG_DIR / f"{self.queue}-{name}.log"
        log = open(log_path, "ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        self.logs[name] = log_path
        return proc

    def start_worker(self, name: str = "worker", concurrency: int = 2, pool: str = "prefork") -> subprocess.Popen:
        return self._start(name, [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", self.queue, "-c", str(concurrency),
            "-P", pool, "-n", f"{name}-{self.queue}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "INFO",
        ])

    def start_scheduler(self, name: str = "scheduler") -> subprocess.Popen:
        return self._start(name, [
            sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
            "--pidfile=", "-s", str(LOG_DIR / f"{self.queue}-{name}.schedule"),
        ])

    def start_web(self, name: str = "web", port: int = 8000, timeout: float = 60, **env) -> subprocess.Popen:
        """A second live instance of this service (gunicorn, one worker with threads, the built-in
        platform unless `env` says otherwise) on 127.0.0.1:`port`, sharing the test database;
        returns once its /healthz answers."""
        import urllib.error
        import urllib.request

        log_path = LOG_DIR / f"{self.queue}-{name}.log"
        log = open(log_path, "ab")
        process_env = {
            **self.env, "SESSION_GATEWAY": "local", "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1",
            **{k: str(v) for k, v in env.items()},
        }
        argv = [
            sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"), "--worker-class", "gthread",
            "--threads", "8", "--graceful-timeout", "5", "config.wsgi:application",
        ]
        proc = subprocess.Popen(argv, cwd=ROOT, env=process_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        self.logs[name] = log_path
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{self.log_text(name)[-3000:]}")
            try:
                with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return proc
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{name} did not answer /healthz on port {port} within {timeout}s:\n{self.log_text(name)[-3000:]}")

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)

    def kill(self, name: str) -> None:
        self.signal(name, signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def children(self, name: str) -> list[int]:
        """PIDs of the direct children of a recorded process (e.g. a worker's pool processes)."""
        pid = self.procs[name].pid
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    def log_text(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    def wait_for_log(self, name: str, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text(name):
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{self.log_text(name)[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{needle!r} not seen in {name} log:\n{self.log_text(name)[-3000:]}")

    def stop_all(self) -> None:
        stop_process_groups(self.procs.values())

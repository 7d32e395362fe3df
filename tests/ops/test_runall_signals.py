"""`manage.py runall` (what `make run` starts) leaves no process behind: whether it is stopped by
Ctrl-C, `kill`, a closed terminal or SIGKILL, or one of its children dies on its own, every process of
its tree (web, worker, the worker's pool processes, scheduler) is gone afterwards."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.core.test_embedded_default import ROOT, embedded_env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="collects the process tree from /proc"),
]

STARTUP_TIMEOUT = 180
EXIT_TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def process_tree(root: int) -> dict[int, int]:
    """Every process under root (root included), as pid -> start time; the start time tells a
    process from a later one that reuses its pid."""
    parents, starts = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))):
            parents[int(entry.name)], starts[int(entry.name)] = stat[1], stat[2]
    tree, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in starts:
            tree[pid] = starts[pid]
            frontier.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def alive(tree: dict[int, int]) -> list[int]:
    """Processes of the tree still running (a zombie is not: it only waits to be reaped)."""
    running = []
    for pid, start in tree.items():
        stat = proc_stat(pid)
        if stat and stat[2] == start and stat[0] != "Z":
            running.append(pid)
    return running


def describe(pids) -> str:
    lines = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            lines.append(f"{pid}: {command}")
        except OSError:
            lines.append(f"{pid}: (gone)")
    return "\n".join(lines)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Runall:
    """runall on the embedded default (SQLite, filesystem broker) in its own var dir, on a free port,
    with one pool process, so its tree is runall, web, worker, one pool process and scheduler."""

    def __init__(self, var_dir: Path):
        env = embedded_env(var_dir)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.port = free_port()
        self.log_path = var_dir / "runall.log"
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runall", "--port", str(self.port), "--concurrency", "1"],
            cwd=ROOT, env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.tree: dict[int, int] = {self.process.pid: proc_stat(self.process.pid)[2]}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_until_serving(self):
        """Until /healthz answers and the worker's pool process exists; then the tree is complete."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"runall exited early:\n{self.log()}"
            self.tree = process_tree(self.process.pid)
            if len(self.tree) >= 5 and healthy(self.port):
                return
            time.sleep(0.5)
        pytest.fail(f"runall did not serve /healthz with its full tree in time:\n{self.log()}")

    def child(self, marker: str) -> int:
        for pid in self.tree:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
        raise LookupError(marker)

    def wait_until_all_gone(self) -> list[int]:
        """Processes of the tree still running after EXIT_TIMEOUT (none expected)."""
        try:
            self.process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + EXIT_TIMEOUT
        while alive(self.tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        return alive(self.tree)

    def kill_leftovers(self):
        for pid in alive(self.tree):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=EXIT_TIMEOUT)


@pytest.fixture
def runall(tmp_path):
    started = Runall(tmp_path)
    try:
        started.wait_until_serving()
        yield started
    finally:
        started.kill_leftovers()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_stops_every_process_then_runall_exits_cleanly(runall, signum):
    assert len(runall.tree) >= 5, describe(runall.tree)

    runall.process.send_signal(signum)

    leftovers = runall.wait_until_all_gone()
    assert leftovers == [], f"still running:\n{describe(leftovers)}\n{runall.log()}"
    assert runall.process.returncode == 0, runall.log()
    assert f"{signum.name} received" in runall.log()


def test_children_die_with_a_killed_runall(runall):
    runall.process.send_signal(signal.SIGKILL)

    leftovers = runall.wait_until_all_gone()
    assert leftovers == [], f"still running:\n{describe(leftovers)}\n{runall.log()}"
    assert runall.process.returncode == -signal.SIGKILL


def test_a_child_dying_stops_the_others_and_runall_exits_non_zero(runall):
    os.kill(runall.child("runserver"), signal.SIGKILL)

    leftovers = runall.wait_until_all_gone()
    assert leftovers == [], f"still running:\n{describe(leftovers)}\n{runall.log()}"
    assert runall.process.returncode == 1, runall.log()
    assert "web was killed by SIGKILL" in runall.log()

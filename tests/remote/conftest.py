"""Fixtures of the remote-platform tests (SESSION_GATEWAY=anthropic).

`upstream`: a second live instance of this service, in its own process on 127.0.0.1 with the
built-in platform (SESSION_GATEWAY=local), standing in for the remote Managed Agents platform.

The process is started once per test module (starting gunicorn costs about a second) and shares
the test database. Its rows — the upstream organizations and their keys, and whatever it creates —
are ordinary rows of that database: each test makes its own through `upstream.organization(...)`
or `upstream.connect(...)` under `transactional_db` (committed, so the other process sees them),
and they are flushed with everything else at the end of the test. The process itself keeps no
state between tests that matters: database connections are not kept (DB_CONN_MAX_AGE=0), and the
keys it may remember for AUTH_CACHE_SECONDS are new in every test.

`fake_upstream`: a tiny HTTP server in this process that records requests and answers what the
test says — for what the built-in platform does not have (event streams) or cannot be made to do
(faults).
"""

import socket

import pytest
from django.test import override_settings

from accounts_app.services import organization_upstream_credentials_set
from tests.conftest import Tenant
from tests.e2e.procs import Processes
from tests.remote.fake_upstream import FakeUpstream


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UpstreamServer:
    NAME = "upstream"

    def __init__(self, processes: Processes, port: int):
        self.processes = processes
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def log_text(self) -> str:
        return self.processes.log_text(self.NAME)


class Upstream:
    """The upstream instance as one test sees it."""

    def __init__(self, server: UpstreamServer):
        self.server = server
        self.url = server.url

    def organization(self, name: str) -> Tenant:
        """A new organization of the upstream platform, with an API key for it (`.key`)."""
        return Tenant(name)

    def connect(self, tenant: Tenant, name: str | None = None) -> Tenant:
        """Give `tenant`'s organization (of this service) its own upstream credentials: the key of a
        new upstream organization, at this instance. Returns that upstream organization."""
        remote = self.organization(name or f"{tenant.organization.name} (upstream)")
        organization_upstream_credentials_set(organization=tenant.organization, api_key=remote.key, base_url=self.url)
        tenant.organization.refresh_from_db()
        return remote

    def log_text(self) -> str:
        return self.server.log_text()


@pytest.fixture(scope="module")
def upstream_server(django_db_setup, django_db_blocker):
    processes = Processes()
    error = None
    try:
        for _attempt in range(3):  # the free port may be taken between the probe and the bind
            port = free_port()
            try:
                processes.start_web(UpstreamServer.NAME, port)
            except (RuntimeError, TimeoutError) as exc:
                error = exc
                processes.stop_all()
                continue
            yield UpstreamServer(processes, port)
            return
        raise RuntimeError(f"the upstream instance did not start: {error}")
    finally:
        processes.stop_all()


@pytest.fixture
def upstream(upstream_server, transactional_db) -> Upstream:
    return Upstream(upstream_server)


@pytest.fixture
def fake_upstream():
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def gateway_mode():
    """This process in remote mode, with no shared default unless a test sets one."""
    with override_settings(SESSION_GATEWAY="anthropic", ANTHROPIC_API_KEY="", ANTHROPIC_BASE_URL=None):
        yield

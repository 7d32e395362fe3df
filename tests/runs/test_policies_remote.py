"""The overlap policy through the anthropic gateway: the previous session's status is asked of the
remote platform (`sessions.retrieve`), and `cancel_previous` interrupts then archives it there."""

import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployments_app.models import Deployment
from gateways import GatewayUnavailable
from gateways.anthropic import AnthropicGateway
from platform_app.models import Session
from runs_app import firing, scheduler
from runs_app.models import DeploymentRun
from tests.conftest import Tenant
from tests.factories import USER_MESSAGE

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC)


class FakePlatform:
    """A Managed Agents platform on 127.0.0.1 that knows a few sessions by id, records every
    request, and answers the session look-ups, interrupts and archives the gateway makes."""

    SESSIONS = {"sesn_run": "running", "sesn_idle": "idle", "sesn_busy": "running", "sesn_down": "running",
                "sesn_noarchive": "running"}

    def __init__(self):
        self.requests: list[tuple[str, str, dict | None]] = []
        platform = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, kind: str, message: str) -> None:
                self._answer(status, {"type": "error", "error": {"type": kind, "message": message}})

            def _route(self, method: str) -> None:
                path = self.path.split("?")[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                platform.requests.append((method, path, body))
                parts = path.strip("/").split("/")  # v1, sessions, id[, events|archive]
                session_id = parts[2] if len(parts) > 2 else ""
                if session_id == "sesn_down" or (method == "GET" and session_id == "sesn_flaky"):
                    return self._error(503, "overloaded_error", "try later")
                if session_id not in platform.SESSIONS:
                    return self._error(404, "not_found_error", f"session {session_id} not found")
                if method == "GET":
                    return self._answer(200, {"type": "session", "id": session_id,
                                              "status": platform.SESSIONS[session_id]})
                if parts[-1] == "events":
                    if session_id == "sesn_busy":
                        return self._error(409, "invalid_request_error", "the session cannot be interrupted now")
                    return self._answer(200, {"data": []})
                if parts[-1] == "archive":
                    if session_id == "sesn_noarchive":
                        return self._error(409, "invalid_request_error", "still winding down")
                    return self._answer(200, {"type": "session", "id": session_id, "status": "idle"})
                return self._error(404, "not_found_error", "no such route")

            def do_GET(self):  # noqa: N802
                self._route("GET")

            def do_POST(self):  # noqa: N802
                self._route("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def platform():
    fake = FakePlatform()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(platform, settings):
    return AnthropicGateway(api_key="sk-upstream", base_url=platform.url, timeout=5, max_in_flight=4)


def test_states_come_from_the_platform(platform, gateway):
    states = gateway.session_states(organization_id="org_x", session_ids=["sesn_run", "sesn_idle", "sesn_nope"])
    assert states == {"sesn_run": "running", "sesn_idle": "idle", "sesn_nope": None}
    assert sorted(path for method, path, _ in platform.requests) == [
        "/v1/sessions/sesn_idle", "/v1/sessions/sesn_nope", "/v1/sessions/sesn_run"]


def test_an_unreachable_platform_is_retryable(platform, gateway):
    with pytest.raises(GatewayUnavailable, match="ServiceUnavailableError: try later"):
        gateway.session_states(organization_id="org_x", session_ids=["sesn_idle", "sesn_flaky"])


def test_stop_interrupts_then_archives(platform, gateway):
    assert gateway.sessions_stop(organization_id="org_x", session_ids=["sesn_run"]) == {"sesn_run": None}
    assert platform.requests == [
        ("POST", "/v1/sessions/sesn_run/events", {"events": [{"type": "user.interrupt"}]}),
        ("POST", "/v1/sessions/sesn_run/archive", None),
    ]


def test_stop_reports_a_refused_interrupt_and_tolerates_a_refused_archive(platform, gateway):
    answers = gateway.sessions_stop(organization_id="org_x", session_ids=["sesn_busy", "sesn_noarchive", "sesn_gone"])
    assert answers["sesn_busy"] == ("the platform refused to interrupt session sesn_busy (409): "
                                    "the session cannot be interrupted now")
    assert answers["sesn_noarchive"] is None  # interrupted: it no longer runs, archived or not
    assert answers["sesn_gone"] is None  # unknown to the platform: nothing runs
    with pytest.raises(GatewayUnavailable):
        gateway.sessions_stop(organization_id="org_x", session_ids=["sesn_down"])


# --- end to end against a second live instance of this service as the remote platform ------------------


@pytest.fixture
def remote(live_server, transactional_db):
    tenant = Tenant("Remote platform")
    client = tenant.sdk(live_server.url)
    gateway = AnthropicGateway(api_key=tenant.key, base_url=live_server.url)
    yield tenant, client, gateway
    client.close()
    for upstream_client in gateway._clients.values():  # no keep-alive connection left to the live server
        upstream_client.close()


def test_overlap_skip_asks_the_remote_platform(remote, tenant, settings):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0
    _remote_tenant, client, gateway = remote
    agent = client.beta.agents.create(name="remote agent", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="remote env")
    Deployment.objects.create(
        organization=tenant.organization, workspace=tenant.workspace, name="remote run", agent_id=agent.id,
        agent_version=1, environment_id=environment.id, initial_events=[USER_MESSAGE], schedule_expression="* * * * *",
        schedule_timezone="UTC", next_fire_at=datetime(2026, 11, 23, 10, 0, tzinfo=UTC), jitter_fraction=0.0,
        policy_overlap="skip",
    )

    def fire_at(now):
        [(fire_id, _, _)] = scheduler.claim_due(now).fires
        return DeploymentRun.objects.get(pk=firing.execute_fire(fire_id, gateway=gateway).run_id)

    first = fire_at(T0)
    assert first.session_id and client.beta.sessions.retrieve(first.session_id).status == "idle"
    Session.objects.filter(pk=first.session_id).update(status="running")  # the remote session works on
    skipped = fire_at(T0.replace(minute=1))
    assert skipped.error_type == "previous_run_active_error" and first.session_id in skipped.error_message
    assert Session.objects.count() == 1
    Session.objects.filter(pk=first.session_id).update(status="idle")
    assert fire_at(T0.replace(minute=2)).session_id not in (None, first.session_id)

"""Anthropic gateway: a remote Managed Agents platform through the official SDK, with each
organization's own upstream credentials.

A fire costs one upstream call: `sessions.create` with the fire's id as `Idempotency-Key` (a retry
after a lost answer returns the same session). Only when the platform refuses a session are the
agent, its roster, the environment and the vaults looked up — once per distinct reference per
batch — so the run records the precise error type of SPEC §7. The calls of a batch are in flight
together on a thread pool of UPSTREAM_MAX_IN_FLIGHT threads per process.
"""

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx2
from django.conf import settings

from accounts_app.upstream import PUBLIC_API, display_host, upstream_credentials_for
from core.errors import shorten
from gateways.base import GatewayUnavailable, ResolvedReferences, SessionGateway, SessionOutcome, SessionRequest
from gateways.errors import (
    ReferenceArchived,
    ReferenceNotFound,
    UpstreamCredentialsRefused,
    UpstreamRateLimited,
    UpstreamUnavailable,
)

logger = logging.getLogger("gateways.anthropic")

_UNREACHABLE = (anthropic.APIConnectionError, anthropic.APITimeoutError)  # APITimeoutError is one too


def _roster_ids(multiagent) -> list[str]:
    if multiagent is None or getattr(multiagent, "type", None) != "coordinator":
        return []
    return [entry.id for entry in multiagent.agents if getattr(entry, "type", None) == "agent"]


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:500]
    return str(exc)[:500]


def _is_unavailable(exc: Exception) -> bool:
    return isinstance(exc, _UNREACHABLE) or (isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 500)


def _is_credentials_refusal(exc: Exception) -> bool:
    return isinstance(exc, (anthropic.AuthenticationError, anthropic.PermissionDeniedError))


class _Upstream:
    """One organization's view of the remote platform: its credentials and SDK client."""

    def __init__(self, client: anthropic.Anthropic, host: str, source: str):
        self.client = client
        self.host = host
        self.source = source

    def credentials_message(self, exc: Exception) -> str:
        whose = "the shared default upstream credentials" if self.source == "default" else "the organization's upstream credentials"
        status = getattr(exc, "status_code", "")
        return (
            f"{whose} were refused by the Managed Agents platform at {self.host} ({status}): "
            "set them with `manage.py set_upstream_credentials` or in the admin"
        )


class AnthropicGateway(SessionGateway):
    name = "anthropic"
    transactional = False
    forwards_platform_api = True

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None, timeout: float | None = None,
                 max_in_flight: int | None = None):
        # Explicit credentials serve every organization (a single-tenant set-up, and tests);
        # otherwise each organization's own, or the shared default of the settings.
        self._fixed = (api_key, base_url) if api_key else None
        self._timeout = timeout if timeout is not None else settings.UPSTREAM_TIMEOUT_SECONDS
        self._max_in_flight = max_in_flight or settings.UPSTREAM_MAX_IN_FLIGHT
        self._lock = threading.Lock()
        self._clients: dict[tuple, anthropic.Anthropic] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pid = None

    # --- plumbing ---------------------------------------------------------------------------------

    def _fresh(self) -> None:
        """Threads and sockets do not survive a fork (Celery's prefork pool): start anew in a child."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._clients, self._pool, self._pid = {}, None, os.getpid()

    @property
    def pool(self) -> ThreadPoolExecutor:
        self._fresh()
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._max_in_flight, thread_name_prefix="upstream")
        return self._pool

    def upstream(self, organization_id: str) -> _Upstream:
        """The organization's credentials and client; UpstreamCredentialsRefused when it has none."""
        if self._fixed is not None:
            (api_key, base_url), source = self._fixed, "fixed"
            base_url = base_url or PUBLIC_API
        else:
            credentials = upstream_credentials_for(organization_id=organization_id)
            if credentials is None:
                raise UpstreamCredentialsRefused(
                    "the organization has no upstream credentials for the Managed Agents platform: "
                    "set them with `manage.py set_upstream_credentials` or in the admin"
                )
            api_key, base_url, source = credentials.api_key, credentials.url, credentials.source
        key = (api_key, base_url)
        self._fresh()
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = self._new_client(api_key, base_url)
        return _Upstream(client, display_host(base_url), source)

    def _new_client(self, api_key: str, base_url: str) -> anthropic.Anthropic:
        # Retries are the firing engine's job (same idempotency key, bounded, never on 429).
        limits = httpx2.Limits(max_connections=self._max_in_flight, max_keepalive_connections=self._max_in_flight)
        return anthropic.Anthropic(
            api_key=api_key, base_url=base_url, max_retries=0,
            timeout=httpx2.Timeout(self._timeout, connect=min(self._timeout, settings.UPSTREAM_CONNECT_TIMEOUT_SECONDS)),
            http_client=anthropic.DefaultHttpxClient(limits=limits),
        )

    def warm(self) -> None:
        # The SDK loads each resource's module (and its response models) on first use.
        client = anthropic.Anthropic(api_key="warm-up", base_url=PUBLIC_API, max_retries=0)
        beta = client.beta
        _ = (beta.sessions, beta.agents, beta.environments, beta.vaults)
        client.close()

    # --- references -------------------------------------------------------------------------------

    def resolve_references(
        self, *, organization_id: str, workspace_id: str, agent: str | dict | None = None,
        environment_id: str | None = None, vault_ids: list[str] | None = None,
    ) -> ResolvedReferences:
        """The look-ups go out together; the first problem in field order is reported."""
        upstream = self.upstream(organization_id)
        beta = upstream.client.beta
        checks = []  # (field path, callable returning a problem to raise, or a value)
        if environment_id is not None:
            checks.append(lambda: _check_archived(
                "environment_id", "environment", environment_id, lambda: beta.environments.retrieve(environment_id)))
        for index, vault_id in enumerate(vault_ids or []):
            checks.append(lambda index=index, vault_id=vault_id: _check_archived(
                f"vault_ids[{index}]", "vault", vault_id, lambda: beta.vaults.retrieve(vault_id)))
        if agent is not None:
            checks.append(lambda: _pin_agent(beta, agent))
        futures = [self.pool.submit(_guarded, upstream, check) for check in checks]
        results = [future.result() for future in futures]
        for result in results:
            if isinstance(result, Exception):
                raise result
        if agent is None:
            return ResolvedReferences()
        return ResolvedReferences(*results[-1])

    # --- sessions ---------------------------------------------------------------------------------

    def create_sessions(self, requests: list[SessionRequest]) -> list[SessionOutcome]:
        upstreams: dict[str, _Upstream | SessionOutcome] = {}
        for organization_id in {request.organization_id for request in requests}:
            try:
                upstreams[organization_id] = self.upstream(organization_id)
            except UpstreamCredentialsRefused as exc:
                upstreams[organization_id] = SessionOutcome.failure("session_creation_rejected_error", exc.message)
        lookups = _Lookups()
        futures = []
        for request in requests:
            upstream = upstreams[request.organization_id]
            if isinstance(upstream, SessionOutcome):
                futures.append(upstream)
            else:
                futures.append(self.pool.submit(_create_session, upstream, request, lookups))
        return [future if isinstance(future, SessionOutcome) else future.result() for future in futures]


    # --- the previous run's session (a deployment's overlap policy) -------------------------------

    def session_states(self, *, organization_id: str, session_ids: list[str]) -> dict[str, str | None]:
        """One `sessions.retrieve` per session, in flight together."""
        upstream = self.upstream(organization_id)
        futures = {session_id: self.pool.submit(_session_state, upstream, session_id) for session_id in session_ids}
        return _gathered(upstream, futures)

    def sessions_stop(self, *, organization_id: str, session_ids: list[str]) -> dict[str, str | None]:
        """A `user.interrupt` event, then `sessions.archive`, per session, in flight together."""
        upstream = self.upstream(organization_id)
        futures = {session_id: self.pool.submit(_stop_session, upstream, session_id) for session_id in session_ids}
        return _gathered(upstream, futures)


def _gathered(upstream: "_Upstream", futures: dict) -> dict:
    """Each future's answer; the platform's being unreachable (or refusing the credentials) for
    any of them is raised for all, as the caller cannot act on half an answer."""
    results, unavailable = {}, None
    for session_id, future in futures.items():
        try:
            results[session_id] = future.result()
        except anthropic.APIError as exc:
            if _is_credentials_refusal(exc):
                raise UpstreamCredentialsRefused(upstream.credentials_message(exc)) from exc
            if not _is_unavailable(exc):
                raise
            unavailable = exc
    if unavailable is not None:
        raise GatewayUnavailable(f"{upstream.host}: {type(unavailable).__name__}: {_message(unavailable)}")
    return results


def _session_state(upstream: "_Upstream", session_id: str) -> str | None:
    try:
        response = upstream.client.beta.sessions.with_raw_response.retrieve(session_id)
    except (anthropic.NotFoundError, anthropic.BadRequestError):
        return None
    body = response.json()
    status = body.get("status") if isinstance(body, dict) else None
    return status if isinstance(status, str) else None


def _stop_session(upstream: "_Upstream", session_id: str) -> str | None:
    """None once the session no longer runs. The interrupt is what stops it; the archive that
    follows only tidies up, so its refusal is logged, not reported."""
    sessions = upstream.client.beta.sessions
    try:
        sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
    except anthropic.NotFoundError:
        return None
    except anthropic.APIStatusError as exc:
        if _is_unavailable(exc) or _is_credentials_refusal(exc):
            raise
        return f"the platform refused to interrupt session {session_id} ({exc.status_code}): {_message(exc)}"
    try:
        sessions.with_raw_response.archive(session_id)
    except anthropic.NotFoundError:
        pass
    except anthropic.APIStatusError as exc:
        if _is_unavailable(exc) or _is_credentials_refusal(exc):
            raise
        logger.warning("session %s interrupted but not archived (%s): %s", session_id, exc.status_code, _message(exc))
    return None


# --- one session -----------------------------------------------------------------------------------


def _create_session(upstream: _Upstream, request: SessionRequest, lookups: "_Lookups") -> SessionOutcome:
    try:
        # The raw answer: a run keeps only the session's id, and building the SDK's whole session
        # model for it was a quarter to a third of the call's CPU (docs/benchmarks.md, remote fire burst).
        # Error statuses still raise the SDK's typed errors.
        response = upstream.client.beta.sessions.with_raw_response.create(
            agent={"type": "agent", "id": request.agent_id, "version": request.agent_version},
            environment_id=request.environment_id,
            initial_events=request.initial_events,
            resources=request.resources,
            vault_ids=request.vault_ids,
            metadata=request.metadata,
            title=request.title,
            **({"budget": request.budget} if request.budget else {}),
            extra_headers={"Idempotency-Key": request.idempotency_key},
        )
        session_id = _session_id(response)
    except _Garbled as exc:
        # The session may well exist: ask again with the same key, which returns it.
        return SessionOutcome.unavailable(f"{upstream.host}: {exc}")
    except anthropic.RateLimitError as exc:
        return SessionOutcome.failure("session_rate_limited_error", f"session creation was rate-limited: {_message(exc)}")
    except Exception as exc:  # noqa: BLE001 — every failure becomes a typed outcome
        if _is_unavailable(exc):
            return SessionOutcome.unavailable(f"{upstream.host}: {type(exc).__name__}: {_message(exc)}")
        if _is_credentials_refusal(exc):
            return SessionOutcome.failure("session_creation_rejected_error", upstream.credentials_message(exc))
        if isinstance(exc, anthropic.APIStatusError):
            return _classify_refusal(upstream, request, lookups, exc)
        logger.exception("unexpected error while creating a session")
        return SessionOutcome.failure("unknown_error", "an unexpected error occurred while creating the session")
    return SessionOutcome.success(session_id)


class _Garbled(Exception):
    """A success status whose body is not a session."""


def _session_id(response) -> str:
    try:
        body = response.json()
    except ValueError as exc:
        raise _Garbled("the answer to sessions.create is not JSON") from exc
    session_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(session_id, str) or not session_id:
        raise _Garbled("the answer to sessions.create has no session id")
    return session_id


class _Lookups:
    """Reference look-ups shared by the requests of one batch (only a refused session needs them)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done: dict[tuple, object] = {}

    def get(self, key: tuple, call):
        with self._lock:
            if key in self._done:
                return self._done[key]
        try:
            value = call()
        except anthropic.NotFoundError:
            value = None
        with self._lock:
            self._done.setdefault(key, value)
        return value


def _classify_refusal(upstream: _Upstream, request: SessionRequest, lookups: _Lookups, refusal) -> SessionOutcome:
    """What the platform refused, by the resources the request names (SPEC §7's typed errors)."""
    beta = upstream.client.beta
    try:
        agent = lookups.get(("agent", request.agent_id, request.agent_version),
                            lambda: beta.agents.retrieve(request.agent_id, version=request.agent_version))
        if agent is None or agent.archived_at is not None:
            state = "not found" if agent is None else "archived"
            return SessionOutcome.agent_gone(f"agent {request.agent_id} is {state}")
        for sub_id in _roster_ids(agent.multiagent):
            sub = lookups.get(("agent", sub_id, None), lambda sub_id=sub_id: beta.agents.retrieve(sub_id))
            if sub is None or sub.archived_at is not None:
                state = "no longer exists" if sub is None else "is archived"
                return SessionOutcome.failure(
                    "agent_archived_error", f"subagent {sub_id} of agent {request.agent_id} {state}")
        environment = lookups.get(("environment", request.environment_id),
                                  lambda: beta.environments.retrieve(request.environment_id))
        if environment is None:
            return SessionOutcome.failure("environment_not_found_error", f"environment {request.environment_id} not found")
        if environment.archived_at is not None:
            return SessionOutcome.failure("environment_archived_error", f"environment {request.environment_id} is archived")
        for vault_id in request.vault_ids:
            vault = lookups.get(("vault", vault_id), lambda vault_id=vault_id: beta.vaults.retrieve(vault_id))
            if vault is None:
                return SessionOutcome.failure("vault_not_found_error", f"vault {vault_id} not found")
            if getattr(vault, "archived_at", None) is not None:
                return SessionOutcome.failure("vault_archived_error", f"vault {vault_id} is archived")
    except anthropic.RateLimitError as exc:
        return SessionOutcome.failure("session_rate_limited_error", f"session creation was rate-limited: {_message(exc)}")
    except anthropic.APIError as exc:
        if _is_unavailable(exc):
            return SessionOutcome.unavailable(f"{upstream.host}: {type(exc).__name__}: {_message(exc)}")
    return SessionOutcome.failure(
        "session_creation_rejected_error", f"session creation was refused ({refusal.status_code}): {_message(refusal)}")


# --- reference checks for create and update --------------------------------------------------------


def _guarded(upstream: _Upstream, check):
    """Run one look-up; its problem comes back as a typed API error (raised by the caller)."""
    try:
        return check()
    except (ReferenceNotFound, ReferenceArchived) as exc:
        return exc
    except anthropic.RateLimitError as exc:
        return UpstreamRateLimited(f"the Managed Agents platform at {upstream.host} rate-limited this request: {_message(exc)}")
    except anthropic.APIError as exc:
        if _is_credentials_refusal(exc):
            return UpstreamCredentialsRefused(upstream.credentials_message(exc))
        if _is_unavailable(exc):
            return UpstreamUnavailable(
                f"the Managed Agents platform at {upstream.host} is unavailable ({type(exc).__name__}); try again later")
        return ReferenceNotFound(f"the Managed Agents platform at {upstream.host} refused a look-up: {_message(exc)}")


def _check_archived(path: str, kind: str, resource_id: str, retrieve) -> None:
    try:
        row = retrieve()
    except (anthropic.NotFoundError, anthropic.BadRequestError) as exc:
        # A malformed id is a 400 upstream, an unknown one a 404: both mean "no such resource" here.
        raise ReferenceNotFound(f"{path}: {kind} {shorten(resource_id)} not found") from exc
    if getattr(row, "archived_at", None) is not None:
        raise ReferenceArchived(f"{path}: {kind} {resource_id} is archived")


def _pin_agent(beta, agent: str | dict) -> tuple[str, int]:
    agent_id, version = (agent, None) if isinstance(agent, str) else (agent["id"], agent.get("version"))
    try:
        row = beta.agents.retrieve(agent_id)
    except (anthropic.NotFoundError, anthropic.BadRequestError) as exc:
        raise ReferenceNotFound(f"agent: agent {shorten(agent_id)} not found") from exc
    if row.archived_at is not None:
        raise ReferenceArchived(f"agent: agent {agent_id} is archived")
    if version is None or version == row.version:
        return row.id, row.version
    try:
        beta.agents.retrieve(agent_id, version=version)
    except (anthropic.NotFoundError, anthropic.BadRequestError) as exc:
        raise ReferenceNotFound(f"agent.version: agent {agent_id} has no version {version}") from exc
    return row.id, version

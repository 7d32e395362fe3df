"""State changes of the local platform: agents (with versions), environments, vaults, sessions.

Every function validates what it is given through platform_app.shapes (errors name the field) and
runs in `transaction.atomic()`, so it nests as a savepoint inside a caller's transaction (the
worker creates sessions inside its fire transaction).
"""

import math
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from core.errors import ApiError, InvalidRequest
from platform_app import selectors, shapes
from platform_app.errors import (
    AgentArchived,
    AgentNotFound,
    AgentVersionNotFound,
    EnvironmentArchived,
    OrganizationDisabled,
    SessionRateLimited,
    SubagentArchived,
    VaultArchived,
    WorkspaceArchived,
)
from platform_app.models import Agent, AgentVersion, Environment, Session, Vault

AGENT_FIELDS = (
    "name", "model", "system", "description", "tools", "mcp_servers", "skills", "metadata", "multiagent",
    "execution_identity",
)
RATE_WINDOW = timedelta(seconds=60)


# --- agents ------------------------------------------------------------------------------------


def _check_fields(fields: dict, allowed) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise TypeError(f"unexpected agent fields: {', '.join(unknown)}")


def _optional_text(value, path: str):
    text = shapes.string(value, path, max_length=shapes.MAX_TEXT, nullable=True, allow_empty=True)
    return text or None


def _resolve_entry(entry: dict, path: str, *, agent: Agent, version: int) -> dict:
    """A parsed roster entry -> `{"type": "agent", "id", "version"}` (or the advisor entry as is)."""
    if entry["type"] == "advisor":
        return entry
    if entry["type"] == "self" or entry["id"] == agent.id:
        return {"type": "agent", "id": agent.id, "version": version}
    try:
        other = selectors.agent_get(organization=agent.organization, workspace=agent.workspace, agent_id=entry["id"])
    except AgentNotFound as exc:
        raise AgentNotFound(entry["id"], f"{path}: agent {entry['id']} not found") from exc
    if other.archived_at is not None:
        raise AgentArchived(other.id, f"{path}: agent {other.id} is archived")
    try:
        row = selectors.agent_version_get(agent=other, version=entry.get("version"))
    except AgentVersionNotFound as exc:
        raise AgentVersionNotFound(other.id, entry.get("version"), f"{path}: {exc.message}") from exc
    if row.multiagent:
        raise InvalidRequest(f"{path}: agent {other.id} has its own multiagent configuration; subagents cannot nest")
    return {"type": "agent", "id": other.id, "version": row.version}


def _resolve_multiagent(config: dict | None, *, agent: Agent, version: int) -> dict | None:
    """Pin every roster entry of an (already merged) multiagent config to a concrete agent version."""
    if config is None:
        return None
    config = shapes.copy_json(config)
    for path, entries in shapes.multiagent_rosters(config):
        resolved = [_resolve_entry(entry, f"{path}[{i}]", agent=agent, version=version) for i, entry in enumerate(entries)]
        ids = [entry["id"] for entry in resolved if entry["type"] == "agent"]
        if len(set(ids)) != len(ids):
            raise InvalidRequest(f"{path}: entries must reference distinct agents")
        entries[:] = resolved
    if config["type"] == "multiagent_20261001":
        for member in ("subagents", "workflows"):
            value = config[member]
            if value["type"] == "enabled" and value["inline_agents"]["type"] == "disabled" and not value["predefined_agents"]:
                raise InvalidRequest(
                    f"multiagent.{member}.predefined_agents: must name at least one agent when inline_agents is disabled"
                )
    return config


def _agent_config(values: dict) -> dict:
    """Validate and resolve every agent field except the roster (needs the agent's id)."""
    config = {
        "name": shapes.string(values["name"], "name", max_length=shapes.MAX_NAME),
        "model": shapes.model(values["model"]),
        "system": _optional_text(values.get("system"), "system"),
        "description": _optional_text(values.get("description"), "description"),
        "tools": shapes.tools(values.get("tools")),
        "mcp_servers": shapes.mcp_servers(values.get("mcp_servers")),
        "skills": shapes.skills(values.get("skills")),
        "metadata": shapes.metadata(values.get("metadata")),
        "execution_identity": shapes.execution_identity(values.get("execution_identity")),
    }
    shapes.check_mcp_references(config["mcp_servers"], config["tools"])
    return config


def _version_row(agent: Agent, number: int, config: dict, multiagent: dict | None) -> AgentVersion:
    return AgentVersion.objects.create(
        agent=agent,
        version=number,
        name=config["name"],
        model=config["model"],
        system=config["system"],
        description=config["description"],
        tools=config["tools"],
        mcp_servers=config["mcp_servers"],
        skills=config["skills"],
        metadata=config["metadata"],
        multiagent=multiagent,
        extra={"execution_identity": config["execution_identity"]},
    )


def agent_create(*, organization, workspace, **fields) -> Agent:
    _check_fields(fields, AGENT_FIELDS)
    shapes.reject_unstorable_fields(fields)
    for key in ("name", "model"):
        if key not in fields:
            raise InvalidRequest(f"{key}: this field is required")
    config = _agent_config(fields)
    multiagent = shapes.multiagent_merge(None, shapes.multiagent(fields.get("multiagent")))
    with transaction.atomic():
        agent = Agent.objects.create(organization=organization, workspace=workspace, latest_version=1)
        _version_row(agent, 1, config, _resolve_multiagent(multiagent, agent=agent, version=1))
    return agent


def agent_update(*, agent: Agent, **fields) -> Agent:
    """A new version (latest + 1) with the sent fields changed; omitted fields keep their value.

    `version`, when given, is the version the caller last saw: the update is refused if another one
    has been made since."""
    expected = fields.pop("version", None)
    _check_fields(fields, AGENT_FIELDS)
    shapes.reject_unstorable_fields(fields)
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.archived_at is not None:
            raise AgentArchived(agent.id, f"agent {agent.id} is archived and can no longer be updated")
        if expected is not None:
            shapes.integer(expected, "version", minimum=1)
            if expected != agent.latest_version:
                raise InvalidRequest(
                    f"version: agent {agent.id} is at version {agent.latest_version}, not {expected}; "
                    "retrieve it again and retry"
                )
        current = selectors.agent_version_get(agent=agent)
        values = {
            "name": current.name,
            "model": current.model,
            "system": current.system,
            "description": current.description,
            "tools": current.tools,
            "mcp_servers": current.mcp_servers,
            "skills": current.skills,
            "execution_identity": (current.extra or {}).get("execution_identity"),
        }
        for key in ("name", "model"):
            if key in fields and fields[key] is None:
                raise InvalidRequest(f"{key}: cannot be cleared")
        for key in ("name", "model", "system", "description", "tools", "mcp_servers", "skills", "execution_identity"):
            if key in fields:
                values[key] = fields[key]
        values["metadata"] = shapes.metadata_patch(current.metadata, fields.get("metadata"))
        config = _agent_config(values)
        number = agent.latest_version + 1
        if "multiagent" in fields:
            multiagent = shapes.multiagent_merge(current.multiagent, shapes.multiagent(fields["multiagent"]))
            multiagent = _resolve_multiagent(multiagent, agent=agent, version=number)
        else:
            multiagent = _repin_self(current.multiagent, agent=agent, version=number)
        _version_row(agent, number, config, multiagent)
        agent.latest_version = number
        agent.save(update_fields=["latest_version", "updated_at"])
    return agent


def _repin_self(config: dict | None, *, agent: Agent, version: int) -> dict | None:
    """An unchanged roster carried to a new version: only the agent's own entry moves with it."""
    if config is None:
        return None
    config = shapes.copy_json(config)
    for _path, entries in shapes.multiagent_rosters(config):
        for entry in entries:
            if entry.get("type") == "agent" and entry.get("id") == agent.id:
                entry["version"] = version
    return config


def agent_archive(*, agent: Agent) -> Agent:
    """Archive the agent and, in the same transaction, every deployment that runs it (SPEC §7)."""
    from deployments_app.services import deployments_archive_for_agent

    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.archived_at is None:
            agent.archived_at = timezone.now()
            agent.save(update_fields=["archived_at", "updated_at"])
        deployments_archive_for_agent(agent_id=agent.id, organization_id=agent.organization_id)
    return agent


# --- environments ------------------------------------------------------------------------------


def _scope(value) -> None:
    if value not in (None, "organization"):
        shapes.fail("scope", "only 'organization' is supported")


def environment_create(
    *, organization, workspace, name: str, description: str | None = None, config: dict | None = None,
    metadata: dict | None = None, scope: str | None = None,
) -> Environment:
    _scope(scope)
    shapes.reject_unstorable_fields({"name": name, "description": description, "config": config, "metadata": metadata})
    return Environment.objects.create(
        organization=organization,
        workspace=workspace,
        name=shapes.string(name, "name", max_length=shapes.MAX_NAME),
        description=shapes.string(description, "description", max_length=10_000, nullable=True, allow_empty=True),
        config=shapes.environment_config(config),
        metadata=shapes.metadata(metadata),
    )


def environment_update(*, environment: Environment, **fields) -> Environment:
    """Omitted fields keep their value; `config` merges into the stored one; `metadata` is a patch
    where null or "" deletes a key."""
    unknown = set(fields) - {"name", "description", "config", "metadata", "scope"}
    if unknown:
        raise TypeError(f"unexpected environment fields: {', '.join(sorted(unknown))}")
    shapes.reject_unstorable_fields(fields)
    with transaction.atomic():
        environment = Environment.objects.select_for_update().get(pk=environment.pk)
        if environment.archived_at is not None:
            raise EnvironmentArchived(environment.id, f"environment {environment.id} is archived and can no longer be updated")
        if "scope" in fields:
            _scope(fields["scope"])
        if "name" in fields:
            if fields["name"] is None:
                raise InvalidRequest("name: cannot be cleared")
            environment.name = shapes.string(fields["name"], "name", max_length=shapes.MAX_NAME)
        if "description" in fields:
            environment.description = shapes.string(
                fields["description"], "description", max_length=10_000, nullable=True, allow_empty=True
            )
        if "config" in fields and fields["config"] is not None:
            environment.config = shapes.environment_config(fields["config"], stored=environment.config)
        if "metadata" in fields:
            environment.metadata = shapes.metadata_patch(environment.metadata, fields["metadata"], empty_deletes=True)
        environment.save()
    return environment


def environment_archive(*, environment: Environment) -> Environment:
    with transaction.atomic():
        environment = Environment.objects.select_for_update().get(pk=environment.pk)
        if environment.archived_at is None:
            environment.archived_at = timezone.now()
            environment.save(update_fields=["archived_at", "updated_at"])
    return environment


# --- vaults ------------------------------------------------------------------------------------


def vault_create(*, organization, workspace, display_name: str, metadata: dict | None = None) -> Vault:
    shapes.reject_unstorable_fields({"display_name": display_name, "metadata": metadata})
    return Vault.objects.create(
        organization=organization,
        workspace=workspace,
        display_name=shapes.string(display_name, "display_name", max_length=255),
        metadata=shapes.metadata(metadata),
    )


def vault_update(*, vault: Vault, **fields) -> Vault:
    unknown = set(fields) - {"display_name", "metadata"}
    if unknown:
        raise TypeError(f"unexpected vault fields: {', '.join(sorted(unknown))}")
    shapes.reject_unstorable_fields(fields)
    with transaction.atomic():
        vault = Vault.objects.select_for_update().get(pk=vault.pk)
        if vault.archived_at is not None:
            raise VaultArchived(vault.id, f"vault {vault.id} is archived and can no longer be updated")
        if "display_name" in fields:
            if fields["display_name"] is None:
                raise InvalidRequest("display_name: cannot be cleared")
            vault.display_name = shapes.string(fields["display_name"], "display_name", max_length=255)
        if "metadata" in fields:
            vault.metadata = shapes.metadata_patch(vault.metadata, fields["metadata"])
        vault.save()
    return vault


def vault_archive(*, vault: Vault) -> Vault:
    with transaction.atomic():
        vault = Vault.objects.select_for_update().get(pk=vault.pk)
        if vault.archived_at is None:
            vault.archived_at = timezone.now()
            vault.save(update_fields=["archived_at", "updated_at"])
    return vault


# --- sessions ----------------------------------------------------------------------------------


def session_rate_limit(organization) -> int | None:
    """Sessions per minute the organization may create; None = unlimited."""
    if organization.session_rate_limit_per_minute is not None:
        return organization.session_rate_limit_per_minute
    return settings.LOCAL_SESSION_RATE_LIMIT_PER_MINUTE


def _replay(organization, workspace, idempotency_key: str | None) -> Session | None:
    if idempotency_key is None:
        return None
    existing = Session.objects.filter(organization=organization, idempotency_key=idempotency_key).first()
    if existing is not None and existing.workspace_id != workspace.id:
        raise InvalidRequest("Idempotency-Key: this key was already used in another workspace")
    return existing


def _lock_organization(organization):
    """Lock the organization row until the caller's transaction ends, so concurrent creations
    count each other's sessions and together cannot exceed the limit."""
    from accounts_app.models import Organization

    return Organization.objects.select_for_update().get(pk=organization.pk)


def _check_rate_limit(organization) -> None:
    """Refuse when the organization created `limit` sessions in the last 60 s (call it locked)."""
    limit = session_rate_limit(organization)
    if limit is None:
        return
    now = timezone.now()
    recent = Session.objects.filter(organization_id=organization.pk, created_at__gt=now - RATE_WINDOW)
    if recent.count() < limit:
        return
    oldest = recent.order_by("created_at").values_list("created_at", flat=True).first()
    wait = (oldest + RATE_WINDOW - now).total_seconds() if oldest else RATE_WINDOW.total_seconds()
    raise SessionRateLimited(organization.pk, limit=limit, retry_after=max(1, math.ceil(wait)))


def _session_fields(
    *, agent, environment_id, initial_events, resources, vault_ids, metadata, title, budget, deployment_run_id
) -> dict:
    """A session request's fields, validated (errors name the field) and in the form they are stored:
    `agent_id`, `version` (None = latest), then the Session columns."""
    shapes.reject_unstorable_fields(
        {
            "agent": agent, "environment_id": environment_id, "initial_events": initial_events, "resources": resources,
            "vault_ids": vault_ids, "metadata": metadata, "title": title, "budget": budget,
            "deployment_run_id": deployment_run_id,
        }
    )
    agent_id, version = shapes.agent_reference(agent)
    fields = {
        "agent_id": agent_id,
        "version": version,
        "environment_id": shapes.string(environment_id, "environment_id", max_length=64),
        "initial_events": shapes.initial_events(initial_events),
        "resources": shapes.session_resources(resources, timezone.now()),
        "vault_ids": shapes.vault_ids(vault_ids),
        "metadata": shapes.metadata(metadata),
        "title": shapes.string(title, "title", max_length=512, nullable=True, allow_empty=True),
        "budget": shapes.budget(budget),
        "deployment_run_id": deployment_run_id,
    }
    if deployment_run_id is not None:
        shapes.string(deployment_run_id, "deployment_run_id", max_length=64)
    return fields


def session_create(
    *,
    organization,
    workspace,
    agent: str | dict,
    environment_id: str,
    initial_events: list | None = None,
    resources: list | None = None,
    vault_ids: list | None = None,
    metadata: dict | None = None,
    title: str | None = None,
    budget: dict | None = None,
    idempotency_key: str | None = None,
    deployment_run_id: str | None = None,
) -> tuple[Session, bool]:
    """Create a session record; returns (session, created). Nothing executes the agent.

    Checks, in order: organization disabled, workspace archived, idempotent replay (the same key
    from the same organization returns the existing session before any other check, and does not
    count against the rate limit), the request's shape, the agent (exists, not archived, version
    exists), every subagent of its roster, the environment, each vault, the rate limit.
    Resources are stored without secrets: a GitHub `authorization_token` is dropped here.
    """
    from accounts_app.models import Organization, Workspace

    fresh_org = Organization.objects.filter(pk=organization.pk).first()
    if fresh_org is None or fresh_org.disabled_at is not None:
        raise OrganizationDisabled(organization.pk)
    fresh_ws = Workspace.objects.filter(pk=workspace.pk, organization_id=organization.pk).first()
    if fresh_ws is None or fresh_ws.archived_at is not None:
        raise WorkspaceArchived(workspace.pk)
    if idempotency_key is not None:
        shapes.reject_unstorable(shapes.string(idempotency_key, "Idempotency-Key", max_length=255), "Idempotency-Key")
    existing = _replay(fresh_org, fresh_ws, idempotency_key)
    if existing is not None:
        return existing, False

    fields = _session_fields(
        agent=agent, environment_id=environment_id, initial_events=initial_events, resources=resources,
        vault_ids=vault_ids, metadata=metadata, title=title, budget=budget, deployment_run_id=deployment_run_id,
    )
    agent_id, version_number, environment_id = fields.pop("agent_id"), fields.pop("version"), fields["environment_id"]
    vaults = fields["vault_ids"]

    tenant = {"organization": fresh_org, "workspace": fresh_ws}
    agent_row = selectors.agent_get(**tenant, agent_id=agent_id)
    if agent_row.archived_at is not None:
        raise AgentArchived(agent_row.id)
    version = selectors.agent_version_get(agent=agent_row, version=version_number)
    for subagent_id in selectors.agent_roster_ids(version):
        subagent = Agent.objects.filter(pk=subagent_id, organization=fresh_org).first()
        if subagent is None:
            raise SubagentArchived(subagent_id, f"subagent {subagent_id} of agent {agent_row.id} no longer exists")
        if subagent.archived_at is not None:
            raise SubagentArchived(subagent_id, f"subagent {subagent_id} of agent {agent_row.id} is archived")
    environment = selectors.environment_get(**tenant, environment_id=environment_id)
    if environment.archived_at is not None:
        raise EnvironmentArchived(environment.id)
    for vault_id in vaults:
        if selectors.vault_get(**tenant, vault_id=vault_id).archived_at is not None:
            raise VaultArchived(vault_id)

    try:
        with transaction.atomic():
            if session_rate_limit(fresh_org) is not None:
                locked = _lock_organization(fresh_org)
                # A request with the same key may have committed while this one waited for the
                # lock: it is a replay, and replays never count against the limit.
                existing = _replay(fresh_org, fresh_ws, idempotency_key)
                if existing is not None:
                    return existing, False
                _check_rate_limit(locked)
            session = Session.objects.create(
                organization=fresh_org,
                workspace=fresh_ws,
                agent=agent_row,
                agent_version=version.version,
                status=Session.Status.IDLE,
                idempotency_key=idempotency_key,
                **fields,
            )
    except IntegrityError:
        existing = _replay(fresh_org, fresh_ws, idempotency_key)
        if existing is None:
            raise
        return existing, False
    return session, True


def session_status_set(*, session: Session, status: str) -> Session:
    """Set a session's status. Nothing executes an agent here, so this is how an operator (the
    admin) or a test makes a session `running`, `idle` or `terminated` — what a deployment's
    overlap policy asks about."""
    if status not in Session.Status.values:
        raise InvalidRequest(f"status: must be one of: {', '.join(Session.Status.values)}")
    with transaction.atomic():
        Session.objects.filter(pk=session.pk).update(status=status, updated_at=timezone.now())
        session.refresh_from_db(fields=["status", "updated_at"])
    return session


def sessions_stop(*, organization_id: str, session_ids: list[str]) -> list[str]:
    """Stop the organization's sessions among `session_ids` that still run (interrupt them; with
    nothing executing the agent, an interrupted session here is `terminated`). Returns the ids of
    the sessions it stopped; the others were not running or are not the organization's."""
    running = [Session.Status.RUNNING, "rescheduling"]
    with transaction.atomic():
        ids = list(
            Session.objects.select_for_update()
            .filter(organization_id=organization_id, pk__in=session_ids, status__in=running)
            .order_by("pk").values_list("pk", flat=True)
        )
        if ids:
            Session.objects.filter(pk__in=ids).update(status=Session.Status.TERMINATED, updated_at=timezone.now())
    return ids


def sessions_create_batch(requests: list[dict]) -> list[Session | None]:
    """`session_create` for many requests at once, in a fixed number of statements whatever their
    number (a scheduler burst creates thousands of sessions a second). Call it inside a transaction.

    Each request carries `organization_id`, `workspace_id`, `idempotency_key` and the keyword
    arguments of `session_create`. A request gets its session (new, or the existing one for its
    key) only when every check of `session_create` passes; otherwise None, and the caller asks
    `session_create` for that one alone, which raises the precise error. The same rules apply in
    the same order: organization, workspace, replay, shape, agent and version, roster,
    environment, vaults, rate limit (organizations with a limit are locked, as one at a time).
    """
    from accounts_app.models import Organization, Workspace

    results: list[Session | None] = [None] * len(requests)
    if not requests:
        return results
    organizations = Organization.objects.in_bulk({r["organization_id"] for r in requests})
    workspaces = Workspace.objects.in_bulk({r["workspace_id"] for r in requests})
    limits = {
        pk: limit for pk, org in organizations.items()
        if org.disabled_at is None and (limit := session_rate_limit(org)) is not None
    }
    used = _lock_and_count(limits)

    candidates = []  # (index, request, validated fields)
    for index, request in enumerate(requests):
        org = organizations.get(request["organization_id"])
        ws = workspaces.get(request["workspace_id"])
        key = request.get("idempotency_key")
        if org is None or org.disabled_at is not None or ws is None or ws.archived_at is not None:
            continue
        if ws.organization_id != org.pk or key is None:
            continue
        try:
            shapes.reject_unstorable(shapes.string(key, "Idempotency-Key", max_length=255), "Idempotency-Key")
            fields = _session_fields(**{name: request.get(name) for name in _FIELD_ARGUMENTS})
        except ApiError:
            continue
        candidates.append((index, request, fields))
    if not candidates:
        return results

    replays = {
        (s.organization_id, s.idempotency_key): s
        for s in Session.objects.filter(
            organization_id__in={r["organization_id"] for _, r, _ in candidates},
            idempotency_key__in={r["idempotency_key"] for _, r, _ in candidates},
        )
    }
    agents = Agent.objects.in_bulk({f["agent_id"] for _, _, f in candidates})
    wanted = {
        (f["agent_id"], f["version"] or agents[f["agent_id"]].latest_version)
        for _, _, f in candidates if f["agent_id"] in agents
    }
    versions = selectors.agent_versions_by_ref(wanted)
    rosters = {ref: selectors.agent_roster_ids(version) for ref, version in versions.items()}
    subagents = Agent.objects.in_bulk({sub for ids in rosters.values() for sub in ids})
    environments = Environment.objects.in_bulk({f["environment_id"] for _, _, f in candidates})
    vaults = Vault.objects.in_bulk({v for _, _, f in candidates for v in f["vault_ids"]})

    def usable(row, org_id, ws_id) -> bool:
        return row is not None and row.organization_id == org_id and row.workspace_id == ws_id and row.archived_at is None

    new_sessions, seen_keys = [], set()
    for index, request, fields in candidates:
        org_id, ws_id, key = request["organization_id"], request["workspace_id"], request["idempotency_key"]
        if (org_id, key) in seen_keys:
            continue
        seen_keys.add((org_id, key))
        existing = replays.get((org_id, key))
        if existing is not None:
            if existing.workspace_id == ws_id:
                results[index] = existing
            continue
        agent = agents.get(fields["agent_id"])
        if not usable(agent, org_id, ws_id):
            continue
        ref = (agent.pk, fields["version"] or agent.latest_version)
        if ref not in versions:
            continue
        roster = [subagents.get(sub) for sub in rosters[ref]]
        if any(sub is None or sub.organization_id != org_id or sub.archived_at is not None for sub in roster):
            continue
        if not usable(environments.get(fields["environment_id"]), org_id, ws_id):
            continue
        if not all(usable(vaults.get(vault_id), org_id, ws_id) for vault_id in fields["vault_ids"]):
            continue
        if org_id in limits:
            if used[org_id] >= limits[org_id]:
                continue
            used[org_id] += 1
        session = Session(
            organization_id=org_id, workspace_id=ws_id, agent_id=agent.pk, agent_version=ref[1],
            status=Session.Status.IDLE, idempotency_key=key,
            **{name: value for name, value in fields.items() if name not in ("agent_id", "version")},
        )
        new_sessions.append(session)
        results[index] = session
    try:
        with transaction.atomic():
            Session.objects.bulk_create(new_sessions)
    except IntegrityError:
        # A key committed concurrently: let each request go through session_create's replay.
        return [None] * len(requests)
    return results


_FIELD_ARGUMENTS = (
    "agent", "environment_id", "initial_events", "resources", "vault_ids", "metadata", "title", "budget",
    "deployment_run_id",
)


def _lock_and_count(limits: dict[str, int]) -> dict[str, int]:
    """Lock the rate-limited organizations (in key order, so batches never deadlock) and count the
    sessions each created in the last minute."""
    from accounts_app.models import Organization

    if not limits:
        return {}
    list(Organization.objects.select_for_update().filter(pk__in=limits).order_by("pk").values_list("pk", flat=True))
    since = timezone.now() - RATE_WINDOW
    counts = (
        Session.objects.filter(organization_id__in=limits, created_at__gt=since)
        .values_list("organization_id").annotate(count=Count("pk"))
    )
    used = {pk: 0 for pk in limits}
    used.update(dict(counts))
    return used

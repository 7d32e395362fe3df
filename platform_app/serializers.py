"""Input serializers (top-level fields and their JSON types; the nested shapes are checked by the
services through platform_app.shapes) and output renderers shaped exactly like the SDK's models:
BetaManagedAgentsAgent, BetaEnvironment, BetaManagedAgentsVault, BetaManagedAgentsSession."""

from django.utils import timezone
from rest_framework import serializers

from core.serializers import iso
from platform_app import selectors
from platform_app.models import Agent, AgentVersion, Environment, Session, Vault


class StrictCharField(serializers.CharField):
    """A string and nothing else (DRF's CharField would turn 5 into "5")."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class AnyJSONField(serializers.Field):
    """Any JSON value, passed to the service as sent; the service validates its shape."""

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


class StrictDictField(serializers.Field):
    default_error_messages = {"invalid": "Expected an object."}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        return data


class StrictListField(serializers.Field):
    default_error_messages = {"invalid": "Expected an array."}

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("invalid")
        return data


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


def parse(serializer_class, data) -> dict:
    """Validate a request body; the result holds only the keys that were sent."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# --- inputs ------------------------------------------------------------------------------------


class AgentCreateInput(serializers.Serializer):
    name = StrictCharField(max_length=256)
    model = AnyJSONField()
    description = StrictCharField(max_length=100_000, required=False, allow_null=True, allow_blank=True)
    system = StrictCharField(max_length=100_000, required=False, allow_null=True, allow_blank=True)
    tools = StrictListField(required=False)
    mcp_servers = StrictListField(required=False)
    skills = StrictListField(required=False)
    metadata = StrictDictField(required=False)
    multiagent = StrictDictField(required=False, allow_null=True)
    execution_identity = StrictDictField(required=False, allow_null=True)


class AgentUpdateInput(serializers.Serializer):
    name = StrictCharField(max_length=256, required=False)
    model = AnyJSONField(required=False)
    description = StrictCharField(max_length=100_000, required=False, allow_null=True, allow_blank=True)
    system = StrictCharField(max_length=100_000, required=False, allow_null=True, allow_blank=True)
    tools = StrictListField(required=False, allow_null=True)
    mcp_servers = StrictListField(required=False, allow_null=True)
    skills = StrictListField(required=False, allow_null=True)
    metadata = StrictDictField(required=False, allow_null=True)
    multiagent = StrictDictField(required=False, allow_null=True)
    execution_identity = StrictDictField(required=False, allow_null=True)
    version = StrictIntegerField(required=False, min_value=1)


class EnvironmentCreateInput(serializers.Serializer):
    name = StrictCharField(max_length=256)
    description = StrictCharField(max_length=10_000, required=False, allow_null=True, allow_blank=True)
    config = StrictDictField(required=False, allow_null=True)
    metadata = StrictDictField(required=False)
    scope = serializers.ChoiceField(choices=["organization", "account"], required=False, allow_null=True)


class EnvironmentUpdateInput(serializers.Serializer):
    name = StrictCharField(max_length=256, required=False)
    description = StrictCharField(max_length=10_000, required=False, allow_null=True, allow_blank=True)
    config = StrictDictField(required=False, allow_null=True)
    metadata = StrictDictField(required=False, allow_null=True)
    scope = serializers.ChoiceField(choices=["organization", "account"], required=False, allow_null=True)


class VaultCreateInput(serializers.Serializer):
    display_name = StrictCharField(max_length=255)
    metadata = StrictDictField(required=False)


class VaultUpdateInput(serializers.Serializer):
    display_name = StrictCharField(max_length=255, required=False)
    metadata = StrictDictField(required=False, allow_null=True)


class SessionCreateInput(serializers.Serializer):
    agent = AnyJSONField()
    environment_id = StrictCharField(max_length=64)
    initial_events = StrictListField(required=False)
    resources = StrictListField(required=False)
    vault_ids = StrictListField(required=False)
    metadata = StrictDictField(required=False)
    title = StrictCharField(max_length=512, required=False, allow_null=True, allow_blank=True)
    budget = StrictDictField(required=False)


# --- outputs -----------------------------------------------------------------------------------


def _agent_definition(version: AgentVersion) -> dict:
    """The fields an agent, a session's agent and a session thread's agent share."""
    return {
        "type": "agent",
        "id": version.agent_id,
        "version": version.version,
        "name": version.name,
        "description": version.description,
        "system": version.system,
        "model": version.model,
        "tools": version.tools,
        "mcp_servers": version.mcp_servers,
        "skills": version.skills,
        "execution_identity": (version.extra or {}).get("execution_identity") or {"type": "service_account"},
    }


def agent_json(agent: Agent, version: AgentVersion) -> dict:
    is_latest = version.version == agent.latest_version
    return {
        **_agent_definition(version),
        "metadata": version.metadata,
        "multiagent": version.multiagent,
        "archived_at": iso(agent.archived_at),
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at if is_latest else version.created_at),
    }


def environment_json(environment: Environment) -> dict:
    return {
        "type": "environment",
        "id": environment.id,
        "name": environment.name,
        "description": environment.description,
        "config": environment.config,
        "metadata": environment.metadata,
        "scope": "organization",
        "archived_at": iso(environment.archived_at),
        "created_at": iso(environment.created_at),
        "updated_at": iso(environment.updated_at),
    }


def vault_json(vault: Vault) -> dict:
    return {
        "type": "vault",
        "id": vault.id,
        "display_name": vault.display_name,
        "metadata": vault.metadata,
        "archived_at": iso(vault.archived_at),
        "created_at": iso(vault.created_at),
        "updated_at": iso(vault.updated_at),
    }


def _session_multiagent(config: dict | None, versions: dict) -> dict | None:
    """The agent's roster with every agent reference expanded to its full definition."""
    if not config:
        return None

    def expand(entries):
        out = []
        for entry in entries:
            if entry.get("type") == "agent":
                row = versions.get((entry["id"], entry["version"]))
                if row is not None:
                    out.append(_agent_definition(row))
            else:
                out.append(entry)
        return out

    if config["type"] == "coordinator":
        return {"type": "coordinator", "agents": expand(config["agents"])}
    result = {"type": config["type"], "advisor": config["advisor"]}
    for member in ("subagents", "workflows"):
        value = dict(config[member])
        if value["type"] == "enabled":
            value["predefined_agents"] = expand(value.get("predefined_agents") or [])
        result[member] = value
    return result


def _outcome_evaluations(session: Session) -> list:
    outcomes = []
    for index, event in enumerate(session.initial_events or []):
        if event.get("type") == "user.define_outcome":
            outcomes.append(
                {
                    "type": "outcome_evaluation",
                    "outcome_id": f"outc_{session.id.split('_', 1)[-1]}{index:02d}",
                    "description": event.get("description", ""),
                    "result": "pending",
                    "iteration": 0,
                    "explanation": None,
                    "completed_at": None,
                }
            )
    return outcomes


def sessions_json(sessions: list[Session]) -> list[dict]:
    """Render sessions with a fixed number of queries, whatever their number."""
    own = selectors.agent_versions_by_ref((s.agent_id, s.agent_version) for s in sessions)
    roster_refs = [ref for version in own.values() for ref in selectors.agent_roster_refs(version)]
    versions = {**selectors.agent_versions_by_ref(roster_refs), **own}
    deployments = selectors.session_deployment_ids(sessions)
    now = timezone.now()
    out = []
    for session in sessions:
        version = own.get((session.agent_id, session.agent_version))
        agent = None
        if version is not None:
            agent = {**_agent_definition(version), "multiagent": _session_multiagent(version.multiagent, versions)}
        out.append(
            {
                "type": "session",
                "id": session.id,
                "status": session.status,
                "title": session.title,
                "agent": agent,
                "environment_id": session.environment_id,
                "resources": session.resources,
                "vault_ids": session.vault_ids,
                "metadata": session.metadata,
                "budget": session.budget,
                "deployment_id": deployments.get(session.deployment_run_id),
                "outcome_evaluations": _outcome_evaluations(session),
                "stats": {"active_seconds": 0.0, "duration_seconds": round((now - session.created_at).total_seconds(), 3)},
                "usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0, "active_seconds": 0.0},
                "archived_at": None,
                "created_at": iso(session.created_at),
                "updated_at": iso(session.updated_at),
            }
        )
    return out


def session_json(session: Session) -> dict:
    return sessions_json([session])[0]

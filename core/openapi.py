"""The OpenAPI description of /v1, in one place.

Views stay thin (plain APIViews), so drf-spectacular cannot infer their bodies. `ApiAutoSchema`
(the project's DEFAULT_SCHEMA_CLASS) completes every operation from the `OPERATIONS` table below:

- request and response bodies come from the official `anthropic` SDK's own types (pydantic models
  for responses, TypedDict params for requests) — the SDK *is* our wire contract, so the schema
  cannot drift from what the SDK sends and parses;
- query parameters are the ones each view actually parses, with their types and enums;
- every operation gets the `anthropic-beta` / `anthropic-version` / `anthropic-workspace-id`
  headers, the `request-id` response header, and the error envelope (`Error`) for 400, 401, 403,
  404, 429 — and 413 where a body is accepted.

The document is OpenAPI 3.1 (JSON Schema 2020-12), which is what pydantic emits.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

from core.errors import STATUS_FOR_TYPE

REF = "#/components/schemas/{model}"
BETA = "managed-agents-2026-04-01"
WEBHOOKS_BETA = "webhooks-2026-10-07"

# --- parameters ---------------------------------------------------------------------------------------


def _query(name: str, schema: dict, description: str, **extra) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema, **extra}


STRING_ID = {"type": "string", "minLength": 1, "maxLength": 64}
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
               "Page size, 1 to 100 (default 20).")
PAGE = _query("page", {"type": "string", "maxLength": 1024},
              "Opaque cursor: the `next_page` of the previous page.")
INCLUDE_ARCHIVED = _query("include_archived", {"type": "boolean", "default": False}, "Include archived ones.")


def created_at(*ops: str) -> list[dict]:
    words = {"gt": "after", "gte": "at or after", "lt": "before", "lte": "at or before"}
    return [
        _query(f"created_at[{op}]", {"type": "string", "format": "date-time"},
               f"Only those created {words[op]} this instant (RFC 3339).")
        for op in ops
    ]


COMMON_PARAMETERS = [
    {
        "name": "anthropic-beta", "in": "header", "required": True,
        "description": f"Must include `{BETA}` (a comma-separated list of betas is accepted).",
        "schema": {"type": "string", "enum": [BETA], "default": BETA},
    },
    {
        "name": "anthropic-version", "in": "header", "required": False,
        "description": "Accepted for compatibility with the Anthropic API; ignored.",
        "schema": {"type": "string", "example": "2023-06-01"},
    },
    {
        "name": "anthropic-workspace-id", "in": "header", "required": False,
        "description": "Workspace to act in, for keys that can act in more than one (default: the organization's "
        "default workspace). A key bound to one workspace may omit it; any other workspace is a 403.",
        "schema": {"type": "string", "maxLength": 64},
    },
    _query("beta", {"type": "boolean"}, "Appended by the official SDK; accepted and ignored."),
]

# --- operations ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    operation_id: str
    tag: str
    summary: str
    response: str  # a component name (see RESPONSE_MODELS / LOCAL_SCHEMAS)
    many: bool = False  # a page of `response`
    request: str | None = None  # a component name (see REQUEST_PARAMS / LOCAL_SCHEMAS)
    request_required: bool = True
    parameters: list = field(default_factory=list)
    description: str | None = None
    beta: str = BETA  # the `anthropic-beta` value the route requires


DEPLOYMENTS, RUNS = "Deployments", "Deployment runs"
WEBHOOKS = "Webhooks"
AGENTS, ENVIRONMENTS, VAULTS, SESSIONS = "Agents", "Environments", "Vaults", "Sessions"

OPERATIONS: dict[tuple[str, str], Operation] = {
    # --- deployments ---
    ("GET", "/v1/deployments"): Operation(
        "deployments_list", DEPLOYMENTS, "List deployments", "Deployment", many=True,
        description="Newest first. Archived deployments are listed only with `include_archived=true`.",
        parameters=[
            _query("agent_id", STRING_ID, "Only deployments of this agent."),
            _query("status", {"type": "string", "enum": ["active", "paused"]},
                   "Only deployments with this status (cannot be combined with include_archived)."),
            INCLUDE_ARCHIVED, *created_at("gte", "lte"), LIMIT, PAGE,
        ],
    ),
    ("POST", "/v1/deployments"): Operation(
        "deployments_create", DEPLOYMENTS, "Create a deployment", "Deployment", request="DeploymentCreateParams",
    ),
    ("GET", "/v1/deployments/{deployment_id}"): Operation(
        "deployments_retrieve", DEPLOYMENTS, "Retrieve a deployment", "Deployment",
    ),
    ("POST", "/v1/deployments/{deployment_id}"): Operation(
        "deployments_update", DEPLOYMENTS, "Update a deployment", "Deployment", request="DeploymentUpdateParams",
        request_required=False,
    ),
    ("POST", "/v1/deployments/{deployment_id}/pause"): Operation(
        "deployments_pause", DEPLOYMENTS, "Pause a deployment", "Deployment",
    ),
    ("POST", "/v1/deployments/{deployment_id}/unpause"): Operation(
        "deployments_unpause", DEPLOYMENTS, "Unpause a deployment", "Deployment",
    ),
    ("POST", "/v1/deployments/{deployment_id}/archive"): Operation(
        "deployments_archive", DEPLOYMENTS, "Archive a deployment", "Deployment",
    ),
    ("POST", "/v1/deployments/{deployment_id}/run"): Operation(
        "deployments_run", DEPLOYMENTS, "Run a deployment now", "DeploymentRun",
    ),
    ("POST", "/v1/deployments/{deployment_id}/backfill"): Operation(
        "deployments_backfill", DEPLOYMENTS, "Backfill a deployment's past occurrences", "DeploymentRun", many=True,
        request="BackfillRequest",
        description="An extension of this service (README: Scheduling policies). Runs the deployment's occurrences "
        "with `start <= t < end` now, each once (an occurrence that already has a run, or a fire still to run, is not "
        "run again), spread by its jitter, also while paused; refused on archived deployments. Answers the runs it "
        "scheduled, earliest first, each with `trigger_context.backfill: true`; a run still to happen has neither "
        "`session_id` nor `error` yet and can be retrieved by id once it has its outcome. The range is at most "
        "BACKFILL_MAX_RANGE_DAYS long and holds at most BACKFILL_MAX_RUNS occurrences.",
    ),
    ("POST", "/v1/deployments/schedule_preview"): Operation(
        "deployments_schedule_preview", DEPLOYMENTS, "Preview a cron schedule", "SchedulePreview",
        request="SchedulePreviewRequest",
    ),
    # --- deployment runs ---
    ("GET", "/v1/deployment_runs"): Operation(
        "deployment_runs_list", RUNS, "List deployment runs", "DeploymentRun", many=True,
        description="Newest first. A run is listed once it has its outcome: a session id or an error.",
        parameters=[
            _query("deployment_id", STRING_ID, "Only runs of this deployment."),
            _query("has_error", {"type": "boolean"}, "true: only failed runs; false: only runs with a session."),
            _query("trigger_type", {"type": "string", "enum": ["schedule", "manual"]}, "Only runs of this trigger."),
            *created_at("gt", "gte", "lt", "lte"), LIMIT, PAGE,
        ],
    ),
    ("GET", "/v1/deployment_runs/{run_id}"): Operation(
        "deployment_runs_retrieve", RUNS, "Retrieve a deployment run", "DeploymentRun",
    ),
    # --- agents ---
    ("GET", "/v1/agents"): Operation(
        "agents_list", AGENTS, "List agents", "Agent", many=True,
        parameters=[INCLUDE_ARCHIVED, *created_at("gte", "lte"), LIMIT, PAGE],
    ),
    ("POST", "/v1/agents"): Operation("agents_create", AGENTS, "Create an agent", "Agent", request="AgentCreateParams"),
    ("GET", "/v1/agents/{agent_id}"): Operation(
        "agents_retrieve", AGENTS, "Retrieve an agent", "Agent",
        parameters=[_query("version", {"type": "integer", "minimum": 1}, "A past version (default: the latest).")],
    ),
    ("POST", "/v1/agents/{agent_id}"): Operation(
        "agents_update", AGENTS, "Update an agent (makes a new version)", "Agent", request="AgentUpdateParams",
    ),
    ("GET", "/v1/agents/{agent_id}/versions"): Operation(
        "agents_versions_list", AGENTS, "List an agent's versions", "Agent", many=True, parameters=[LIMIT, PAGE],
    ),
    ("POST", "/v1/agents/{agent_id}/archive"): Operation(
        "agents_archive", AGENTS, "Archive an agent (and its deployments)", "Agent",
    ),
    # --- environments ---
    ("GET", "/v1/environments"): Operation(
        "environments_list", ENVIRONMENTS, "List environments", "Environment", many=True,
        parameters=[INCLUDE_ARCHIVED, LIMIT, PAGE],
    ),
    ("POST", "/v1/environments"): Operation(
        "environments_create", ENVIRONMENTS, "Create an environment", "Environment",
        request="EnvironmentCreateParams",
    ),
    ("GET", "/v1/environments/{environment_id}"): Operation(
        "environments_retrieve", ENVIRONMENTS, "Retrieve an environment", "Environment",
    ),
    ("POST", "/v1/environments/{environment_id}"): Operation(
        "environments_update", ENVIRONMENTS, "Update an environment", "Environment",
        request="EnvironmentUpdateParams", request_required=False,
    ),
    ("POST", "/v1/environments/{environment_id}/archive"): Operation(
        "environments_archive", ENVIRONMENTS, "Archive an environment", "Environment",
    ),
    # --- vaults ---
    ("GET", "/v1/vaults"): Operation(
        "vaults_list", VAULTS, "List vaults", "Vault", many=True, parameters=[INCLUDE_ARCHIVED, LIMIT, PAGE],
    ),
    ("POST", "/v1/vaults"): Operation("vaults_create", VAULTS, "Create a vault", "Vault", request="VaultCreateParams"),
    ("GET", "/v1/vaults/{vault_id}"): Operation("vaults_retrieve", VAULTS, "Retrieve a vault", "Vault"),
    ("POST", "/v1/vaults/{vault_id}"): Operation(
        "vaults_update", VAULTS, "Update a vault", "Vault", request="VaultUpdateParams", request_required=False,
    ),
    ("POST", "/v1/vaults/{vault_id}/archive"): Operation("vaults_archive", VAULTS, "Archive a vault", "Vault"),
    # --- sessions ---
    ("GET", "/v1/sessions"): Operation(
        "sessions_list", SESSIONS, "List sessions", "Session", many=True,
        parameters=[
            _query("agent_id", STRING_ID, "Only sessions of this agent."),
            _query("agent_version", {"type": "integer", "minimum": 1}, "Only sessions of this agent version."),
            _query("deployment_id", STRING_ID, "Only sessions created by this deployment's runs."),
            _query("memory_store_id", STRING_ID, "Only sessions that mount this memory store."),
            _query("statuses[]", {"type": "array", "items": {"type": "string", "enum":
                   ["rescheduling", "running", "idle", "terminated"]}}, "Only sessions in these statuses.",
                   style="form", explode=True),
            *created_at("gt", "gte", "lt", "lte"),
            _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}, "Sort by creation time."),
            INCLUDE_ARCHIVED, LIMIT, PAGE,
        ],
    ),
    ("POST", "/v1/sessions"): Operation(
        "sessions_create", SESSIONS, "Create a session", "Session", request="SessionCreateParams",
        description="An `Idempotency-Key` header makes retries safe: the same key returns the same session.",
        parameters=[{
            "name": "Idempotency-Key", "in": "header", "required": False,
            "description": "The same key returns the same session instead of creating another.",
            "schema": {"type": "string", "maxLength": 255},
        }],
    ),
    ("GET", "/v1/sessions/{session_id}"): Operation("sessions_retrieve", SESSIONS, "Retrieve a session", "Session"),
    # --- outgoing webhooks (the SDK's client.beta.organization.webhooks; beta webhooks-2026-10-07) ---
    ("GET", "/v1/organizations/webhooks"): Operation(
        "webhooks_list", WEBHOOKS, "List webhook endpoints", "WebhookEndpoint", many=True, beta=WEBHOOKS_BETA,
        parameters=[
            _query("after_id", STRING_ID, "Endpoints after this one in list order."),
            _query("before_id", STRING_ID, "The first `limit` endpoints before this one in list order."),
            _query("limit", {"type": "integer", "minimum": 0, "maximum": 100, "default": 20},
                   "Page size, up to 100 (0 or absent: 20)."),
            _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}, "Sort by creation time."),
        ],
    ),
    ("POST", "/v1/organizations/webhooks"): Operation(
        "webhooks_create", WEBHOOKS, "Create a webhook endpoint", "NewWebhookEndpoint", request="WebhookCreateParams",
        beta=WEBHOOKS_BETA, description="The response carries the signing secret; no other response does.",
    ),
    ("GET", "/v1/organizations/webhooks/{endpoint_id}"): Operation(
        "webhooks_retrieve", WEBHOOKS, "Retrieve a webhook endpoint", "WebhookEndpoint", beta=WEBHOOKS_BETA,
    ),
    ("POST", "/v1/organizations/webhooks/{endpoint_id}"): Operation(
        "webhooks_update", WEBHOOKS, "Update a webhook endpoint", "WebhookEndpoint", request="WebhookUpdateParams",
        request_required=False, beta=WEBHOOKS_BETA,
    ),
    ("DELETE", "/v1/organizations/webhooks/{endpoint_id}"): Operation(
        "webhooks_delete", WEBHOOKS, "Delete a webhook endpoint", "DeletedWebhookEndpoint", beta=WEBHOOKS_BETA,
    ),
    ("POST", "/v1/organizations/webhooks/{endpoint_id}/regenerate_signing_secret"): Operation(
        "webhooks_regenerate_signing_secret", WEBHOOKS, "Regenerate a webhook endpoint's signing secret",
        "WebhookSigningSecret", beta=WEBHOOKS_BETA,
        description="The previous secret keeps signing deliveries too for a grace period "
        "(WEBHOOK_SECRET_ROTATION_GRACE_SECONDS).",
    ),
}

# --- schemas ------------------------------------------------------------------------------------------


def _sdk_types():
    from anthropic.types import beta as t
    from anthropic.types.beta import (
        agent_create_params, agent_update_params, deployment_create_params, deployment_update_params,
        environment_create_params, environment_update_params, session_create_params, vault_create_params,
        vault_update_params,
    )
    from anthropic.types.beta import organization as org
    from anthropic.types.beta.organization import webhook_create_params, webhook_update_params

    responses = {
        "Deployment": t.BetaManagedAgentsDeployment,
        "DeploymentRun": t.BetaManagedAgentsDeploymentRun,
        "Agent": t.BetaManagedAgentsAgent,
        "Environment": t.BetaEnvironment,
        "Vault": t.BetaManagedAgentsVault,
        "Session": t.BetaManagedAgentsSession,
        "WebhookEndpoint": org.BetaOrganizationWebhookEndpoint,
        "NewWebhookEndpoint": org.BetaNewOrganizationWebhookEndpoint,
        "DeletedWebhookEndpoint": org.BetaDeletedOrganizationWebhookEndpoint,
        "WebhookSigningSecret": org.BetaOrganizationWebhookEndpointSigningSecret,
    }
    requests = {
        "DeploymentCreateParams": deployment_create_params.DeploymentCreateParams,
        "DeploymentUpdateParams": deployment_update_params.DeploymentUpdateParams,
        "AgentCreateParams": agent_create_params.AgentCreateParams,
        "AgentUpdateParams": agent_update_params.AgentUpdateParams,
        "EnvironmentCreateParams": environment_create_params.EnvironmentCreateParams,
        "EnvironmentUpdateParams": environment_update_params.EnvironmentUpdateParams,
        "VaultCreateParams": vault_create_params.VaultCreateParams,
        "VaultUpdateParams": vault_update_params.VaultUpdateParams,
        "SessionCreateParams": session_create_params.SessionCreateParams,
        "WebhookCreateParams": webhook_create_params.WebhookCreateParams,
        "WebhookUpdateParams": webhook_update_params.WebhookUpdateParams,
    }
    return responses, requests


# Listed with the SDK's `SyncPage` (has_more, first_id, last_id), not our `next_page` cursor.
_SYNC_PAGED = {"WebhookEndpoint"}
_NOT_LISTED = {"NewWebhookEndpoint", "DeletedWebhookEndpoint", "WebhookSigningSecret"}
# The SDK's Python types list other event names; it sends what it is given and parses what comes
# back, so the schema names the events this service emits.
_WEBHOOK_EVENT_FIELDS = ("WebhookEndpoint", "NewWebhookEndpoint", "WebhookCreateParams", "WebhookUpdateParams")


def _our_event_types(components: dict) -> None:
    from webhooks_app.events import EVENT_TYPES

    for name in _WEBHOOK_EVENT_FIELDS:
        components[name]["properties"]["enabled_events"]["items"] = {"type": "string", "enum": list(EVENT_TYPES)}


# --- scheduling policies: this service's extensions of the SDK's deployment shapes -----------------------

_EXTENSION = "An extension of this service (README: Scheduling policies); absent = the hosted API's behaviour."
_TIMESTAMP_OR_NULL = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
_DST_FOLD = {"type": "string", "enum": ["both", "first", "last"], "default": "both",
             "description": "What a local time that happens twice (a fall-back) does: fire at both instants, the "
             "first or the last. " + _EXTENSION}
_SCHEDULE_EXTENSIONS = {
    "start_at": {**_TIMESTAMP_OR_NULL, "description": "No fire before this instant (null: unbounded). " + _EXTENSION},
    "end_at": {**_TIMESTAMP_OR_NULL, "description": "No fire after this instant; must be after start_at (null: "
               "unbounded). " + _EXTENSION},
    "max_runs": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, {"type": "null"}],
                 "description": "After this many scheduled runs the deployment archives itself; a fire skipped for "
                 "overlap does not count; changing it starts the count again (null: unbounded). " + _EXTENSION},
    "dst_fold": _DST_FOLD,
}
_OVERLAP = {"type": "string", "enum": ["allow", "skip", "cancel_previous"], "default": "allow",
            "description": "While the previous run's session still runs: start another (allow), record a run with "
            "`previous_run_active_error` and no session (skip), or stop it first (cancel_previous)."}
_PAUSE_AFTER = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1000}, {"type": "null"}], "default": None,
                "description": "Pause after this many failed scheduled runs in a row (null: never)."}


def _run_error(error_type: str, description: str) -> dict:
    return {"type": "object", "additionalProperties": True, "description": description, "required": ["message", "type"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string", "const": error_type}}}


def _scheduling_policy_extensions(components: dict) -> None:
    """Document the extensions where the SDK's shapes are: the schedule's window, run limit and DST
    fold policy, the deployment's `policy`, the backfill flag of a schedule trigger, and the run
    errors the policies and the fire path add to the SDK's."""
    components["DeploymentPolicyParams"] = {
        "type": "object", "additionalProperties": False, "description": _EXTENSION + " Omitted keys take their defaults.",
        "properties": {"overlap": _OVERLAP, "pause_after_failures": _PAUSE_AFTER},
    }
    components["DeploymentPolicy"] = {
        "type": "object", "additionalProperties": True, "required": ["overlap", "pause_after_failures"],
        "description": _EXTENSION + " Returned when it differs from its defaults.",
        "properties": {"overlap": _OVERLAP, "pause_after_failures": _PAUSE_AFTER},
    }
    components["BackfillRequest"] = {
        "type": "object", "additionalProperties": False, "required": ["start", "end"],
        "properties": {
            "start": {"type": "string", "format": "date-time", "description": "The first instant of the range (included)."},
            "end": {"type": "string", "format": "date-time",
                    "description": "The end of the range (excluded); after start and not in the future."},
        },
    }
    components["PreviousRunActiveRunError"] = _run_error(
        "previous_run_active_error", "The fire was skipped: the previous run's session was still running "
        "(policy.overlap skip, or cancel_previous when it could not be stopped). " + _EXTENSION)
    components["ServiceUnavailableRunError"] = _run_error(
        "service_unavailable_error", "The session platform could not be reached after a few quick retries.")
    components["BetaManagedAgentsScheduleParams"]["properties"].update(_SCHEDULE_EXTENSIONS)
    schedule = components["BetaManagedAgentsSchedule"]["properties"]
    schedule.update(_SCHEDULE_EXTENSIONS)
    schedule["runs_remaining"] = {"type": "integer", "minimum": 0,
                                  "description": "Scheduled runs left under max_runs (present when it is set). "
                                  + _EXTENSION}
    components["BetaManagedAgentsScheduleTriggerContext"]["properties"]["backfill"] = {
        "type": "boolean", "const": True, "description": "Present on the run of a backfilled occurrence. " + _EXTENSION}
    for name in ("DeploymentCreateParams", "DeploymentUpdateParams"):
        components[name]["properties"]["policy"] = {"anyOf": [_ref("DeploymentPolicyParams"), {"type": "null"}],
                                                    "description": _EXTENSION + " null: the defaults."}
    components["Deployment"]["properties"]["policy"] = _ref("DeploymentPolicy")
    run_errors = components["DeploymentRun"]["properties"]["error"]["anyOf"]
    run_errors[-1:-1] = [_ref("PreviousRunActiveRunError"), _ref("ServiceUnavailableRunError")]
    paused = components["BetaManagedAgentsErrorDeploymentPausedReason"]["properties"]
    # policy.pause_after_failures pauses on any failed run's error, not only the SDK's pausing ones.
    paused["error"]["anyOf"] += [_ref(name) for name in (
        "BetaManagedAgentsSessionRateLimitedRunErrorObject", "BetaManagedAgentsSessionCreationRejectedRunErrorObject",
        "BetaManagedAgentsUnknownRunErrorObject", "ServiceUnavailableRunError")]
    paused["consecutive_failures"] = {"type": "integer", "minimum": 1, "description": "Present when "
                                      "policy.pause_after_failures paused the deployment: its failed runs in a row. "
                                      + _EXTENSION}
    for name in ("SchedulePreviewRequest", "SchedulePreview"):  # our own: copied, never changed in place
        components[name] = copy.deepcopy(components[name])
    components["SchedulePreviewRequest"]["properties"].update(copy.deepcopy(_SCHEDULE_EXTENSIONS))
    notes = components["SchedulePreview"]["properties"]["dst_notes"]["items"]["properties"]
    notes["fires"] = {"type": "array", "items": {"type": "string", "format": "date-time"},
                      "description": "The instants that fire, present when dst_fold or a window was given."}


# SDK params that travel as headers, not in the body.
_HEADER_PARAMS = ("betas", "workspace_id")

ERROR_TYPES = list(STATUS_FOR_TYPE)

LOCAL_SCHEMAS = {
    "Error": {
        "type": "object",
        "description": "The error envelope of every non-2xx response.",
        "required": ["type", "error", "request_id"],
        "properties": {
            "type": {"type": "string", "const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string", "enum": ERROR_TYPES},
                    "message": {"type": "string", "description": "What is wrong; names the field when one is."},
                },
            },
            "request_id": {"type": "string", "description": "Also in the `request-id` response header."},
        },
    },
    "SchedulePreviewRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["expression", "timezone"],
        "properties": {
            "expression": {"type": "string", "maxLength": 256, "description": "5-field POSIX cron expression."},
            "timezone": {"type": "string", "maxLength": 64, "description": "IANA time zone name, e.g. America/New_York."},
            "count": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5,
                      "description": "How many upcoming fire instants to return."},
        },
    },
    "SchedulePreview": {
        "type": "object",
        "required": ["valid", "expression", "timezone", "description", "upcoming_runs_at", "dst_notes"],
        "properties": {
            "valid": {"type": "boolean", "const": True},
            "expression": {"type": "string"},
            "timezone": {"type": "string"},
            "description": {"type": "string", "description": "The schedule in words, e.g. \"At 08:00 PM, only on Friday\"."},
            "upcoming_runs_at": {"type": "array", "items": {"type": "string", "format": "date-time"}},
            "dst_notes": {
                "type": "array",
                "description": "Within the next year, matching local times that a daylight-saving change skips "
                "(no fire that day) or repeats (two fires, one per UTC instant).",
                "items": {
                    "type": "object",
                    "required": ["date", "local_time", "kind", "instants"],
                    "properties": {
                        "date": {"type": "string", "format": "date"},
                        "local_time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                        "kind": {"type": "string", "enum": ["skipped", "repeated"]},
                        "instants": {"type": "array", "items": {"type": "string", "format": "date-time"}},
                    },
                },
            },
        },
    },
}


def _strip_titles(schema):
    """pydantic titles every schema after its Python name; they only clutter the docs."""
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "patternProperties"):
            out[key] = {name: _strip_titles(sub) for name, sub in value.items()}
        else:
            out[key] = _strip_titles(value)
    return out


@functools.cache
def component_schemas() -> dict[str, dict]:
    """Every schema component: the SDK's types (one pydantic generation, so shared sub-models get
    one consistent name), the pages, and our own (error envelope, schedule preview)."""
    from pydantic import TypeAdapter

    responses, requests = _sdk_types()
    inputs = [(name, "serialization", TypeAdapter(model)) for name, model in responses.items()]
    inputs += [(name, "validation", TypeAdapter(params)) for name, params in requests.items()]
    by_key, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF)
    components = dict(definitions.get("$defs", {}))
    renames = {}
    for (name, _mode), schema in by_key.items():
        if "$ref" in schema:  # a model with sub-models is emitted as a definition: give it our short name
            original = schema["$ref"].rsplit("/", 1)[1]
            schema = components.pop(original)
            renames[original] = name
        if name in requests:
            schema = dict(schema)
            schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k not in _HEADER_PARAMS}
            if "required" in schema:
                schema["required"] = [k for k in schema["required"] if k not in _HEADER_PARAMS]
        components[name] = schema
    text = json.dumps(components)
    for original, name in renames.items():
        text = text.replace(json.dumps(REF.format(model=original)), json.dumps(REF.format(model=name)))
    components = json.loads(text)
    _our_event_types(components)
    for name in responses:
        if name in _NOT_LISTED:
            continue
        if name in _SYNC_PAGED:
            components[f"{name}Page"] = {
                "type": "object",
                "required": ["data", "has_more", "first_id", "last_id"],
                "properties": {
                    "data": {"type": "array", "items": {"$ref": REF.format(model=name)}},
                    "has_more": {"type": "boolean"},
                    "first_id": {"type": ["string", "null"]},
                    "last_id": {"type": ["string", "null"]},
                },
            }
            continue
        page = {
            "type": "object",
            "required": ["data", "next_page"],
            "properties": {
                "data": {"type": "array", "items": {"$ref": REF.format(model=name)}},
                "next_page": {"type": ["string", "null"], "description": "Cursor of the next page; null on the last."},
            },
        }
        if name == "Session":
            page["properties"]["prev_page"] = {"type": ["string", "null"]}
        components[f"{name}Page"] = page
    components.update(LOCAL_SCHEMAS)
    _scheduling_policy_extensions(components)
    return {name: _strip_titles(schema) for name, schema in components.items()}


def _ref(name: str) -> dict:
    return {"$ref": REF.format(model=name)}


REQUEST_ID_HEADER = {"request-id": {"description": "Unique id of this request (also in error bodies and logs).",
                                    "schema": {"type": "string"}}}

ERROR_DESCRIPTIONS = {
    "400": "invalid_request_error: malformed JSON, a wrong type or value (the message names the field), a missing "
    "`anthropic-beta`, or an action the resource's state does not allow (e.g. it is archived).",
    "401": "authentication_error: missing or unknown API key.",
    "403": "permission_error: the key cannot act in the requested workspace.",
    "404": "not_found_error: no such resource in the caller's organization and workspace (another tenant's "
    "resources are 404 too).",
    "413": "request_too_large: the body is over the size limit.",
    "429": "rate_limit_error: too many requests; retry after the `retry-after` header's seconds.",
}


def error_response(status: str) -> dict:
    headers = dict(REQUEST_ID_HEADER)
    if status == "429":
        headers["retry-after"] = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "headers": headers,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, completed from OPERATIONS for every /v1 operation."""

    def _operation(self) -> Operation | None:
        return OPERATIONS.get((self.method, self.path))

    def _register_components(self) -> None:
        if getattr(self.registry, "_sdk_components_registered", False):
            return
        self.registry._sdk_components_registered = True
        # A copy per generation: spectacular's hooks may rewrite component schemas in place.
        for name, schema in copy.deepcopy(component_schemas()).items():
            self.registry.register_on_missing(
                ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
            )

    def get_operation_id(self):
        spec = self._operation()
        return spec.operation_id if spec else super().get_operation_id()

    def get_tags(self):
        spec = self._operation()
        return [spec.tag] if spec else super().get_tags()

    def get_summary(self):
        spec = self._operation()
        return spec.summary if spec else super().get_summary()

    def get_description(self):
        spec = self._operation()
        return super().get_description() or (spec.description if spec else "") or ""

    # Bodies come from OPERATIONS; never let spectacular look for a serializer on a plain APIView.
    def get_request_serializer(self):
        return None if self._operation() else super().get_request_serializer()

    def get_response_serializers(self):
        return None if self._operation() else super().get_response_serializers()

    def _is_list_view(self, serializer=None):
        return False if self._operation() else super()._is_list_view(serializer)

    def _get_request_body(self, direction="request"):
        spec = self._operation()
        if spec is None:
            return super()._get_request_body(direction)
        if spec.request is None:
            return None
        return {"required": spec.request_required, "content": {"application/json": {"schema": _ref(spec.request)}}}

    def _get_response_bodies(self, direction="response"):
        spec = self._operation()
        if spec is None:
            return super()._get_response_bodies(direction)
        self._register_components()
        name = f"{spec.response}Page" if spec.many else spec.response
        return {"200": {"description": "OK", "headers": dict(REQUEST_ID_HEADER),
                        "content": {"application/json": {"schema": _ref(name)}}}}

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None or not path.startswith("/v1/"):
            return operation
        spec = self._operation()
        parameters = {(p["name"], p["in"]): p for p in operation.get("parameters", [])}
        for parameter in [*(spec.parameters if spec else []), *COMMON_PARAMETERS]:
            parameters[(parameter["name"], parameter["in"])] = parameter
        if spec is not None and spec.beta != BETA:
            parameters[("anthropic-beta", "header")] = {
                **parameters[("anthropic-beta", "header")], "schema": {"type": "string", "enum": [spec.beta], "default": spec.beta},
                "description": f"Must include `{spec.beta}` (a comma-separated list of betas is accepted).",
            }
        for key, parameter in parameters.items():
            if parameter["in"] == "path":
                parameters[key] = {**parameter, "schema": {"type": "string", "minLength": 1}}
        operation["parameters"] = list(parameters.values())
        statuses = ["400", "401", "403", "404", "429"]
        if method.upper() in ("POST", "PUT", "PATCH"):
            statuses.insert(4, "413")
        for status in statuses:
            operation["responses"][status] = error_response(status)
        self._register_components()
        return operation


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "core.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey", "in": "header", "name": "x-api-key",
            "description": "An API key of this service (`python manage.py create_api_key`, or the admin). "
            "`Authorization: Bearer <key>` is accepted too, as the official SDK may send it.",
        }


def only_v1_api(endpoints):
    """SPECTACULAR_SETTINGS PREPROCESSING_HOOKS: the schema documents the /v1 API, not its docs
    pages, the catch-all 404 route, the admin or /metrics."""
    skip = {"/v1/openapi.json", "/v1/docs", "/v1/redoc"}
    return [
        (path, path_regex, method, callback)
        for path, path_regex, method, callback in endpoints
        if path.startswith("/v1/") and path not in skip and "{path}" not in path
    ]

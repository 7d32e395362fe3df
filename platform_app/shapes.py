"""Request shapes of the local platform: validate what the SDK sends and resolve it to the form the
SDK's response models expect. Pure functions, no database: each takes the raw value and the field
path used in error messages, and raises InvalidRequest naming that path.

Agent and environment normalizers are idempotent (normalizing their own output returns it
unchanged), so stored configs can be merged with an update and normalized again.
"""

import re
from datetime import datetime

from core.errors import InvalidRequest
from core.ids import ulid
from core.serializers import iso

MISSING = object()

MAX_NAME = 256
MAX_TEXT = 100_000
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
AGENT_TOOL_NAMES = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")
PERMISSION_POLICIES = ("always_allow", "always_ask", "auto")
CUSTOM_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,17})$")


def fail(path: str, message: str):
    raise InvalidRequest(f"{path}: {message}" if path else message)


def type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --- primitives --------------------------------------------------------------------------------


UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def reject_unstorable(value, path: str):
    """PostgreSQL cannot store U+0000 in text or jsonb, and a lone surrogate cannot be encoded at
    all: refuse both anywhere in a value (keys included) with a 400 naming where, instead of
    failing at insert time."""
    if isinstance(value, str):
        if UNSTORABLE.search(value):
            fail(path, "must not contain NUL (U+0000) or lone surrogate characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            if UNSTORABLE.search(key):
                fail(path, "keys must not contain NUL (U+0000) or lone surrogate characters")
            reject_unstorable(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_unstorable(item, f"{path}[{index}]")
    return value


def reject_unstorable_fields(fields: dict) -> None:
    for name, value in fields.items():
        reject_unstorable(value, name)


def string(value, path: str, *, max_length: int = MAX_NAME, allow_empty: bool = False, nullable: bool = False):
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        fail(path, f"must be a string{' or null' if nullable else ''} (got {type_name(value)})")
    if not allow_empty and not value.strip():
        fail(path, "must not be empty")
    if len(value) > max_length:
        fail(path, f"must be at most {max_length} characters (got {len(value)})")
    return value


def boolean(value, path: str, *, nullable: bool = False):
    if value is None and nullable:
        return None
    if not isinstance(value, bool):
        fail(path, f"must be a boolean (got {type_name(value)})")
    return value


def integer(value, path: str, *, minimum: int | None = None, maximum: int | None = None, nullable: bool = False):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        fail(path, f"must be an integer (got {type_name(value)})")
    if minimum is not None and value < minimum:
        fail(path, f"must be at least {minimum} (got {value})")
    if maximum is not None and value > maximum:
        fail(path, f"must be at most {maximum} (got {value})")
    return value


def obj(value, path: str) -> dict:
    if not isinstance(value, dict):
        fail(path, f"must be an object (got {type_name(value)})")
    return value


def array(value, path: str, *, max_items: int, min_items: int = 0) -> list:
    if not isinstance(value, list):
        fail(path, f"must be an array (got {type_name(value)})")
    if len(value) > max_items:
        fail(path, f"must have at most {max_items} items (got {len(value)})")
    if len(value) < min_items:
        fail(path, f"must have at least {min_items} item{'s' if min_items != 1 else ''}")
    return value


def choice(value, path: str, choices, *, nullable: bool = False):
    if value is None and nullable:
        return None
    if not isinstance(value, str) or value not in choices:
        # The rejected value is not repeated: a credential pasted into the wrong field must not
        # come back in an error message.
        shown = "another string" if isinstance(value, str) else type_name(value)
        fail(path, f"must be one of {', '.join(choices)} (got {shown})")
    return value


def typed(value, path: str, choices) -> tuple[dict, str]:
    """An object whose `type` is one of `choices`."""
    value = obj(value, path)
    if "type" not in value:
        fail(f"{path}.type", "is required")
    return value, choice(value["type"], f"{path}.type", choices)


def required(value: dict, key: str, path: str):
    if key not in value:
        fail(f"{path}.{key}" if path else key, "is required")
    return value[key]


# --- shared fields -----------------------------------------------------------------------------


def metadata(value, path: str = "metadata") -> dict:
    if value is None:
        return {}
    value = obj(value, path)
    if len(value) > METADATA_MAX_PAIRS:
        fail(path, f"must have at most {METADATA_MAX_PAIRS} pairs (got {len(value)})")
    for key, item in value.items():
        if not key or len(key) > METADATA_MAX_KEY:
            fail(path, f"keys must be 1 to {METADATA_MAX_KEY} characters (got {key[:80]!r})")
        string(item, f"{path}.{key}", max_length=METADATA_MAX_VALUE, allow_empty=True)
    return dict(value)


def metadata_patch(stored: dict, patch, path: str = "metadata", *, empty_deletes: bool = False) -> dict:
    """Apply a metadata patch: a string upserts the key, null (or "" when `empty_deletes`) deletes it."""
    if patch is None:
        return dict(stored)
    patch = obj(patch, path)
    result = dict(stored)
    for key, item in patch.items():
        if not key or len(key) > METADATA_MAX_KEY:
            fail(path, f"keys must be 1 to {METADATA_MAX_KEY} characters (got {key[:80]!r})")
        if item is None or (empty_deletes and item == ""):
            result.pop(key, None)
            continue
        result[key] = string(item, f"{path}.{key}", max_length=METADATA_MAX_VALUE, allow_empty=True)
    if len(result) > METADATA_MAX_PAIRS:
        fail(path, f"must have at most {METADATA_MAX_PAIRS} pairs after the patch (got {len(result)})")
    return result


# --- agents ------------------------------------------------------------------------------------


def effort(value, path: str):
    if value is None:
        return None
    if isinstance(value, str):
        return {"type": choice(value, path, EFFORT_LEVELS)}
    value, level = typed(value, path, EFFORT_LEVELS)
    return {"type": level}


def model(value, path: str = "model") -> dict:
    """A model string or `model_config` object -> the resolved `{"id", "effort", "inference_geo", "speed"}`."""
    if isinstance(value, str):
        return {"id": string(value, path), "effort": None, "inference_geo": None, "speed": "standard"}
    if not isinstance(value, dict):
        fail(path, f"must be a model id string or an object with an id (got {type_name(value)})")
    return {
        "id": string(required(value, "id", path), f"{path}.id"),
        "effort": effort(value.get("effort"), f"{path}.effort"),
        "inference_geo": string(value.get("inference_geo"), f"{path}.inference_geo", nullable=True),
        "speed": choice(value.get("speed"), f"{path}.speed", ("standard", "fast"), nullable=True) or "standard",
    }


def permission_policy(value, path: str, default: str):
    if value is None:
        return {"type": default}
    value, kind = typed(value, path, PERMISSION_POLICIES)
    return {"type": kind}


def _default_config(value, path: str, default_policy: str) -> dict:
    if value is None:
        value = {}
    value = obj(value, path)
    enabled = boolean(value.get("enabled"), f"{path}.enabled", nullable=True)
    return {
        "enabled": True if enabled is None else enabled,
        "permission_policy": permission_policy(value.get("permission_policy"), f"{path}.permission_policy", default_policy),
    }


def _domains(value, path: str):
    if value is None:
        return None
    array(value, path, max_items=64, min_items=1)
    return [string(item, f"{path}[{i}]", max_length=253) for i, item in enumerate(value)]


def _agent_tool_config(value, path: str, defaults: dict) -> dict:
    value = obj(value, path)
    name = choice(required(value, "name", path), f"{path}.name", AGENT_TOOL_NAMES)
    if value.get("type") is not None and value["type"] != name:
        fail(f"{path}.type", f"must be {name!r} when given")
    enabled = boolean(value.get("enabled"), f"{path}.enabled", nullable=True)
    result = {
        "name": name,
        "type": name,
        "enabled": defaults["enabled"] if enabled is None else enabled,
        "permission_policy": (
            permission_policy(value["permission_policy"], f"{path}.permission_policy", "always_allow")
            if value.get("permission_policy") is not None
            else dict(defaults["permission_policy"])
        ),
    }
    if name in ("web_fetch", "web_search"):
        allowed = _domains(value.get("allowed_domains"), f"{path}.allowed_domains")
        blocked = _domains(value.get("blocked_domains"), f"{path}.blocked_domains")
        if allowed and blocked:
            fail(path, "allowed_domains cannot be combined with blocked_domains")
        result["allowed_domains"] = allowed
        result["blocked_domains"] = blocked
    if name == "web_fetch":
        result["max_content_tokens"] = integer(
            value.get("max_content_tokens"), f"{path}.max_content_tokens", minimum=1, nullable=True
        )
        if value.get("url_sources") is not None:
            result["url_sources"] = obj(value["url_sources"], f"{path}.url_sources")
    if name == "web_search" and value.get("user_location") is not None:
        result["user_location"] = obj(value["user_location"], f"{path}.user_location")
    return result


def _mcp_tool_config(value, path: str, defaults: dict) -> dict:
    value = obj(value, path)
    enabled = boolean(value.get("enabled"), f"{path}.enabled", nullable=True)
    return {
        "name": string(required(value, "name", path), f"{path}.name", max_length=128),
        "enabled": defaults["enabled"] if enabled is None else enabled,
        "permission_policy": (
            permission_policy(value["permission_policy"], f"{path}.permission_policy", "always_ask")
            if value.get("permission_policy") is not None
            else dict(defaults["permission_policy"])
        ),
    }


def tool(value, path: str) -> dict:
    value, kind = typed(value, path, ("agent_toolset_20260401", "mcp_toolset", "custom"))
    if kind == "custom":
        schema = obj(required(value, "input_schema", path), f"{path}.input_schema")
        if schema.get("type") != "object":
            fail(f"{path}.input_schema.type", "must be 'object'")
        name = string(required(value, "name", path), f"{path}.name", max_length=128)
        if not CUSTOM_TOOL_NAME.match(name):
            fail(f"{path}.name", "must be 1-128 letters, digits, underscores or hyphens")
        return {
            "type": "custom",
            "name": name,
            "description": string(required(value, "description", path), f"{path}.description", max_length=MAX_TEXT),
            "input_schema": schema,
        }
    default_policy = "always_allow" if kind == "agent_toolset_20260401" else "always_ask"
    defaults = _default_config(value.get("default_config"), f"{path}.default_config", default_policy)
    configs_raw = value.get("configs")
    configs_raw = [] if configs_raw is None else array(configs_raw, f"{path}.configs", max_items=256)
    make = _agent_tool_config if kind == "agent_toolset_20260401" else _mcp_tool_config
    configs = [make(item, f"{path}.configs[{i}]", defaults) for i, item in enumerate(configs_raw)]
    names = [config["name"] for config in configs]
    if len(set(names)) != len(names):
        fail(f"{path}.configs", "tool names must be unique")
    result = {"type": kind, "configs": configs, "default_config": defaults}
    if kind == "mcp_toolset":
        result["mcp_server_name"] = string(required(value, "mcp_server_name", path), f"{path}.mcp_server_name", max_length=255)
    return result


def tools(value, path: str = "tools") -> list:
    if value is None:
        return []
    array(value, path, max_items=256)
    return [tool(item, f"{path}[{i}]") for i, item in enumerate(value)]


def mcp_servers(value, path: str = "mcp_servers") -> list:
    if value is None:
        return []
    array(value, path, max_items=20)
    result = []
    for i, item in enumerate(value):
        item, _ = typed(item, f"{path}[{i}]", ("url",))
        url = string(required(item, "url", f"{path}[{i}]"), f"{path}[{i}].url", max_length=2048)
        if not url.startswith(("https://", "http://")):
            fail(f"{path}[{i}].url", "must be an http(s) URL")
        result.append({"type": "url", "name": string(required(item, "name", f"{path}[{i}]"), f"{path}[{i}].name", max_length=255), "url": url})
    names = [server["name"] for server in result]
    if len(set(names)) != len(names):
        fail(path, "server names must be unique")
    return result


def check_mcp_references(servers: list, tool_list: list) -> None:
    """Every mcp_toolset names a declared server, and every declared server is used by a toolset."""
    declared = {server["name"] for server in servers}
    used = set()
    for i, item in enumerate(tool_list):
        if item["type"] == "mcp_toolset":
            if item["mcp_server_name"] not in declared:
                fail(f"tools[{i}].mcp_server_name", f"no MCP server named {item['mcp_server_name']!r} in mcp_servers")
            used.add(item["mcp_server_name"])
    for i, server in enumerate(servers):
        if server["name"] not in used:
            fail(f"mcp_servers[{i}]", f"server {server['name']!r} is not referenced by any mcp_toolset in tools")


def skills(value, path: str = "skills") -> list:
    if value is None:
        return []
    array(value, path, max_items=64)
    result = []
    for i, item in enumerate(value):
        item, kind = typed(item, f"{path}[{i}]", ("anthropic", "custom"))
        result.append(
            {
                "type": kind,
                "skill_id": string(required(item, "skill_id", f"{path}[{i}]"), f"{path}[{i}].skill_id"),
                "version": string(item.get("version"), f"{path}[{i}].version", max_length=64, nullable=True) or "latest",
            }
        )
    return result


def execution_identity(value, path: str = "execution_identity") -> dict:
    if value is None:
        return {"type": "service_account"}
    value, kind = typed(value, path, ("service_account", "aws_role"))
    if kind == "service_account":
        return {"type": "service_account"}
    return {"type": "aws_role", "role_arn": string(required(value, "role_arn", path), f"{path}.role_arn", max_length=2048)}


# --- multiagent --------------------------------------------------------------------------------
#
# Parsing keeps what was sent (roster entries become {"type": "agent", "id", "version" | None},
# {"type": "self"} or {"type": "advisor", "model"}); resolving the entries against stored agents
# needs the database and happens in services.


def roster_entry(value, path: str, *, allow_advisor: bool) -> dict:
    if isinstance(value, str):
        return {"type": "agent", "id": string(value, path, max_length=64), "version": None}
    kinds = ("agent", "self", "advisor") if allow_advisor else ("agent", "self")
    value, kind = typed(value, path, kinds)
    if kind == "self":
        return {"type": "self"}
    if kind == "advisor":
        return {"type": "advisor", "model": string(required(value, "model", path), f"{path}.model")}
    return {
        "type": "agent",
        "id": string(required(value, "id", path), f"{path}.id", max_length=64),
        "version": integer(value.get("version"), f"{path}.version", minimum=1, nullable=True),
    }


def roster(value, path: str, *, allow_advisor: bool, min_items: int, max_items: int = 20) -> list:
    array(value, path, max_items=max_items, min_items=min_items)
    entries = [roster_entry(item, f"{path}[{i}]", allow_advisor=allow_advisor) for i, item in enumerate(value)]
    if sum(1 for entry in entries if entry["type"] == "self") > 1:
        fail(path, "at most one {\"type\": \"self\"} entry")
    if sum(1 for entry in entries if entry["type"] == "advisor") > 1:
        fail(path, "at most one advisor entry")
    return entries


def _enabled_member(value, path: str, *, has_agents: bool) -> dict:
    """advisor / subagents / workflows member: as sent, keys kept only when present."""
    value, kind = typed(value, path, ("enabled", "disabled"))
    result = {"type": kind}
    if kind == "disabled":
        return result
    if not has_agents:
        result["model"] = string(required(value, "model", path), f"{path}.model")
        return result
    if "inline_agents" in value:
        inline = value["inline_agents"]
        result["inline_agents"] = None if inline is None else {"type": typed(inline, f"{path}.inline_agents", ("enabled", "disabled"))[1]}
    if "predefined_agents" in value:
        agents = value["predefined_agents"]
        result["predefined_agents"] = (
            None if agents is None else roster(agents, f"{path}.predefined_agents", allow_advisor=False, min_items=0)
        )
    return result


MEMBER_DEFAULTS = {
    "advisor": {"type": "disabled"},
    "subagents": {"type": "enabled", "inline_agents": {"type": "enabled"}, "predefined_agents": []},
    "workflows": {"type": "enabled", "inline_agents": {"type": "enabled"}, "predefined_agents": []},
}


def multiagent(value, path: str = "multiagent") -> dict | None:
    """Parse a multiagent config as sent. For `multiagent_20261001`, members omitted stay omitted
    (an update merges them into the stored config); members sent as null are kept as None."""
    if value is None:
        return None
    value, kind = typed(value, path, ("coordinator", "multiagent_20261001"))
    if kind == "coordinator":
        return {
            "type": "coordinator",
            "agents": roster(required(value, "agents", path), f"{path}.agents", allow_advisor=True, min_items=1),
        }
    result = {"type": kind}
    for member in ("advisor", "subagents", "workflows"):
        if member in value:
            raw = value[member]
            result[member] = None if raw is None else _enabled_member(raw, f"{path}.{member}", has_agents=member != "advisor")
    return result


def _fill_member(member: str, value: dict | None) -> dict:
    if value is None:
        return dict(MEMBER_DEFAULTS[member])
    if value["type"] == "disabled" or member == "advisor":
        return dict(value)
    return {
        "type": "enabled",
        "inline_agents": value.get("inline_agents") or {"type": "enabled"},
        "predefined_agents": list(value.get("predefined_agents") or []),
    }


def multiagent_merge(stored: dict | None, sent: dict | None) -> dict | None:
    """The multiagent config an update results in (sent already parsed by `multiagent`)."""
    if sent is None:
        return None
    if sent["type"] == "coordinator":
        return sent
    base = stored if stored is not None and stored.get("type") == "multiagent_20261001" else None
    result = {"type": "multiagent_20261001"}
    for member in ("advisor", "subagents", "workflows"):
        if member not in sent:
            result[member] = dict(base[member]) if base else _fill_member(member, None)
            continue
        new = sent[member]
        old = base[member] if base else None
        if new is None or old is None or new["type"] != old["type"] or new["type"] == "disabled" or member == "advisor":
            result[member] = _fill_member(member, new)
            continue
        merged = dict(old)
        for key in ("inline_agents", "predefined_agents"):
            if key in new:
                merged[key] = new[key]
        result[member] = _fill_member(member, merged)
    return result


def multiagent_rosters(config: dict | None) -> list[tuple[str, list]]:
    """(path, entries) of every agent roster in a multiagent config."""
    if not config:
        return []
    if config["type"] == "coordinator":
        return [("multiagent.agents", config["agents"])]
    result = []
    for member in ("subagents", "workflows"):
        value = config.get(member) or {}
        if value.get("type") == "enabled":
            result.append((f"multiagent.{member}.predefined_agents", value.get("predefined_agents") or []))
    return result


# --- environments ------------------------------------------------------------------------------

PACKAGE_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")


def _packages(value, path: str, stored: dict | None = None) -> dict:
    value = obj(value, path)
    if value.get("type") not in (None, "packages"):
        fail(f"{path}.type", "must be 'packages'")
    result = {"type": "packages"}
    for manager in PACKAGE_MANAGERS:
        if manager in value and value[manager] is not None:
            items = array(value[manager], f"{path}.{manager}", max_items=500)
            result[manager] = [string(item, f"{path}.{manager}[{i}]", max_length=256) for i, item in enumerate(items)]
        elif stored is not None and manager not in value:
            result[manager] = list(stored.get(manager, []))
        else:
            result[manager] = []
    return result


def _networking(value, path: str, stored: dict | None = None) -> dict:
    value, kind = typed(value, path, ("unrestricted", "limited"))
    if kind == "unrestricted":
        return {"type": "unrestricted"}
    base = stored if stored is not None and stored.get("type") == "limited" else {}
    result = {"type": "limited"}
    for key in ("allow_mcp_servers", "allow_package_managers"):
        if value.get(key) is not None:
            result[key] = boolean(value[key], f"{path}.{key}")
        else:
            result[key] = bool(base.get(key, False)) if key not in value else False
    hosts = value.get("allowed_hosts", MISSING)
    if hosts is MISSING:
        result["allowed_hosts"] = list(base.get("allowed_hosts", []))
    elif hosts is None:
        result["allowed_hosts"] = []
    else:
        array(hosts, f"{path}.allowed_hosts", max_items=500)
        result["allowed_hosts"] = [string(h, f"{path}.allowed_hosts[{i}]", max_length=253) for i, h in enumerate(hosts)]
    return result


DEFAULT_CLOUD_CONFIG = {
    "type": "cloud",
    "networking": {"type": "unrestricted"},
    "packages": {"type": "packages", **{manager: [] for manager in PACKAGE_MANAGERS}},
}


def environment_config(value, path: str = "config", stored: dict | None = None) -> dict:
    """Create (stored=None) or update: on update omitted fields keep their stored value."""
    if value is None:
        return dict(stored) if stored is not None else copy_json(DEFAULT_CLOUD_CONFIG)
    value, kind = typed(value, path, ("cloud", "self_hosted"))
    if kind == "self_hosted":
        return {"type": "self_hosted"}
    base = stored if stored is not None and stored.get("type") == "cloud" else None
    networking_raw = value.get("networking")
    if networking_raw is None:
        networking = copy_json(base["networking"]) if base else {"type": "unrestricted"}
    else:
        networking = _networking(networking_raw, f"{path}.networking", base["networking"] if base else None)
    packages_raw = value.get("packages")
    if packages_raw is None:
        packages = copy_json(base["packages"]) if base else copy_json(DEFAULT_CLOUD_CONFIG["packages"])
    else:
        packages = _packages(packages_raw, f"{path}.packages", base["packages"] if base else None)
    has_packages = any(packages.get(manager) for manager in PACKAGE_MANAGERS)
    if networking["type"] == "limited" and has_packages and not networking["allow_package_managers"]:
        fail(f"{path}.packages", "requires networking.allow_package_managers to be true under limited networking")
    return {"type": "cloud", "networking": networking, "packages": packages}


def copy_json(value):
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


# --- sessions ----------------------------------------------------------------------------------


def agent_reference(value, path: str = "agent") -> tuple[str, int | None]:
    """`"agent_…"` or `{"type": "agent", "id", "version"?}` -> (agent id, version or None)."""
    if isinstance(value, str):
        return string(value, path, max_length=64), None
    if not isinstance(value, dict):
        fail(path, f"must be an agent id string or an object with type, id and version (got {type_name(value)})")
    value, kind = typed(value, path, ("agent", "agent_with_overrides"))
    if kind == "agent_with_overrides":
        fail(f"{path}.type", "agent_with_overrides is not supported by the local platform; use an agent id or {\"type\": \"agent\", \"id\", \"version\"}")
    return (
        string(required(value, "id", path), f"{path}.id", max_length=64),
        integer(value.get("version"), f"{path}.version", minimum=1, nullable=True),
    )


def _content_block(value, path: str, kinds) -> dict:
    value, kind = typed(value, path, kinds)
    if kind == "text":
        return {"type": "text", "text": string(required(value, "text", path), f"{path}.text", max_length=MAX_TEXT * 10, allow_empty=True)}
    if kind == "redacted":
        return {"type": "redacted"}
    block = {"type": kind, "source": obj(required(value, "source", path), f"{path}.source")}
    if "type" not in block["source"]:
        fail(f"{path}.source.type", "is required")
    if kind == "document":
        for key in ("context", "title"):
            if key in value:
                block[key] = string(value[key], f"{path}.{key}", max_length=MAX_TEXT, nullable=True, allow_empty=True)
    return block


def initial_event(value, path: str) -> dict:
    value, kind = typed(value, path, ("user.message", "user.define_outcome", "system.message"))
    if kind in ("user.message", "system.message"):
        kinds = ("text", "image", "document", "redacted") if kind == "user.message" else ("text",)
        content = array(required(value, "content", path), f"{path}.content", max_items=100, min_items=1)
        return {"type": kind, "content": [_content_block(block, f"{path}.content[{i}]", kinds) for i, block in enumerate(content)]}
    rubric, rubric_kind = typed(required(value, "rubric", path), f"{path}.rubric", ("text", "file"))
    if rubric_kind == "text":
        rubric = {"type": "text", "content": string(required(rubric, "content", f"{path}.rubric"), f"{path}.rubric.content", max_length=262_144)}
    else:
        rubric = {"type": "file", "file_id": string(required(rubric, "file_id", f"{path}.rubric"), f"{path}.rubric.file_id")}
    event = {
        "type": kind,
        "description": string(required(value, "description", path), f"{path}.description", max_length=MAX_TEXT),
        "rubric": rubric,
    }
    if value.get("max_iterations") is not None:
        event["max_iterations"] = integer(value["max_iterations"], f"{path}.max_iterations", minimum=1, maximum=20)
    return event


def initial_events(value, path: str = "initial_events") -> list:
    if value is None:
        return []
    array(value, path, max_items=50)
    return [initial_event(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _checkout(value, path: str):
    if value is None:
        return None
    value, kind = typed(value, path, ("branch", "commit"))
    if kind == "branch":
        return {"type": "branch", "name": string(required(value, "name", path), f"{path}.name")}
    return {"type": "commit", "sha": string(required(value, "sha", path), f"{path}.sha", max_length=64)}


def session_resource(value, path: str, now: datetime) -> dict:
    """One session resource as stored and returned. A GitHub `authorization_token` is checked and
    dropped here: the local platform never stores or returns it."""
    value, kind = typed(value, path, ("github_repository", "file", "memory_store"))
    if kind == "memory_store":
        instructions = value.get("instructions")
        return {
            "type": "memory_store",
            "memory_store_id": string(required(value, "memory_store_id", path), f"{path}.memory_store_id", max_length=64),
            "access": choice(value.get("access"), f"{path}.access", ("read_write", "read_only"), nullable=True) or "read_write",
            "instructions": string(instructions, f"{path}.instructions", max_length=4096, nullable=True, allow_empty=True),
        }
    stamp = {"id": f"sesrsc_{ulid()}", "created_at": iso(now), "updated_at": iso(now)}
    mount_path = string(value.get("mount_path"), f"{path}.mount_path", max_length=1024, nullable=True)
    if kind == "file":
        file_id = string(required(value, "file_id", path), f"{path}.file_id", max_length=64)
        return {**stamp, "type": "file", "file_id": file_id, "mount_path": mount_path or f"/mnt/session/uploads/{file_id}"}
    url = string(required(value, "url", path), f"{path}.url", max_length=2048)
    if "authorization_token" in value:
        string(value["authorization_token"], f"{path}.authorization_token", max_length=4096, nullable=True, allow_empty=True)
    repo_name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "repository"
    return {
        **stamp,
        "type": "github_repository",
        "url": url,
        "checkout": _checkout(value.get("checkout"), f"{path}.checkout"),
        "mount_path": mount_path or f"/workspace/{repo_name}",
    }


def session_resources(value, now: datetime, path: str = "resources") -> list:
    if value is None:
        return []
    array(value, path, max_items=500)
    return [session_resource(item, f"{path}[{i}]", now) for i, item in enumerate(value)]


def vault_ids(value, path: str = "vault_ids") -> list:
    if value is None:
        return []
    array(value, path, max_items=50)
    return [string(item, f"{path}[{i}]", max_length=64) for i, item in enumerate(value)]


def budget(value, path: str = "budget") -> dict | None:
    if value is None:
        return None
    value, _ = typed(value, path, ("limit",))
    cost = obj(required(value, "max_list_cost", path), f"{path}.max_list_cost")
    amount = string(required(cost, "amount", f"{path}.max_list_cost"), f"{path}.max_list_cost.amount", max_length=18)
    if not AMOUNT.match(amount):
        fail(f"{path}.max_list_cost.amount", "must be an integer string of minor units without leading zeros, e.g. \"2500\"")
    currency = choice(required(cost, "currency", f"{path}.max_list_cost"), f"{path}.max_list_cost.currency", ("USD",))
    return {"type": "limit", "max_list_cost": {"amount": amount, "currency": currency}}

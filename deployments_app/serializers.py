"""Input validation (DRF, field-named errors) and the wire shape of a deployment.

Inputs follow the request params of the official SDK (`deployment_create_params`,
`deployment_update_params` and the types they reference). Every object is strict: unknown keys,
wrong JSON types and over-long strings are 400s naming the field. No message ever echoes the value
of a write-only field (a GitHub `authorization_token`).
"""

import re
from collections.abc import Mapping
from datetime import datetime, timezone as dt_timezone
from urllib.parse import urlsplit

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from core.errors import InvalidRequest
from core.pagination import parse_limit
from core.serializers import iso
from deployments_app import schedule as cron
from deployments_app.models import Deployment

MAX_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 2048
MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 1_000_000
MAX_DESCRIPTION_TEXT_LENGTH = 100_000
MAX_CONTENT_BLOCKS = 100
MAX_INITIAL_EVENTS = 50
MAX_RESOURCES = 500
MAX_VAULT_IDS = 50
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512
MAX_URL_LENGTH = 2048
MAX_PATH_LENGTH = 1024
MAX_TOKEN_LENGTH = 4096
MAX_RUBRIC_LENGTH = 262144
MAX_INSTRUCTIONS_LENGTH = 4096
MAX_OUTCOME_ITERATIONS = 20
MAX_INT32 = 2**31 - 1
UPCOMING_RUNS = 5
MAX_PAUSE_AFTER_FAILURES = 1000

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


# --- strict primitives -------------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A JSON string, nothing else (DRF's CharField turns numbers into strings)."""

    default_error_messages = {
        "required": "is required",
        "null": "must not be null",
        "invalid": "must be a string",
        "blank": "must not be empty",
        "max_length": "must be at most {max_length} characters",
        "min_length": "must be at least {min_length} characters",
        "unicode": "must be valid Unicode text (it contains an unpaired surrogate)",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("unicode")
        return super().to_internal_value(data)


class IdField(StrictCharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", MAX_ID_LENGTH)
        super().__init__(**kwargs)


class UrlField(StrictCharField):
    default_error_messages = {"url": "must be an http or https URL"}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", MAX_URL_LENGTH)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            parts = urlsplit(value)
        except ValueError:
            self.fail("url")
        if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
            self.fail("url")
        return value


class MountPathField(StrictCharField):
    default_error_messages = {"relative": "must be an absolute path (starting with /)"}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", MAX_PATH_LENGTH)
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value.startswith("/"):
            self.fail("relative")
        return value


class StrictChoiceField(StrictCharField):
    """A string from a closed set; the message lists the set instead of echoing the input."""

    default_error_messages = {"invalid_choice": "must be one of: {choices}"}

    def __init__(self, choices, **kwargs):
        self.choices = tuple(choices)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value not in self.choices:
            self.fail("invalid_choice", choices=", ".join(f'"{c}"' for c in self.choices))
        return value


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (not a bool, a float or a numeric string) within [min_value, max_value]."""

    default_error_messages = {
        "required": "is required",
        "null": "must not be null",
        "invalid": "must be an integer",
        "range": "must be between {min_value} and {max_value}",
        "min_value": "must be at least {min_value}",
        "max_value": "must be at most {max_value}",
    }

    def __init__(self, *, min_value: int, max_value: int, **kwargs):
        super().__init__(min_value=min_value, max_value=max_value, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        if not self.min_value <= data <= self.max_value:
            self.fail("range", min_value=self.min_value, max_value=self.max_value)
        return data


class Rfc3339Field(StrictCharField):
    """An RFC 3339 timestamp with a time zone (`2026-05-09T00:00:00Z`), as an aware UTC datetime."""

    default_error_messages = {"timestamp": "must be an RFC 3339 timestamp with a time zone, e.g. 2026-05-09T00:00:00Z"}

    def to_internal_value(self, data):
        # (No max_length: the validators run on the parsed value. rfc3339_or_none bounds the text.)
        value = rfc3339_or_none(super().to_internal_value(data))
        if value is None:
            self.fail("timestamp")
        return value

    def to_representation(self, value):
        return iso(value)


class StrictSerializer(serializers.Serializer):
    """A JSON object with exactly the declared keys; unknown keys are errors, reported together
    with the errors of the known ones."""

    default_error_messages = {"required": "is required", "null": "must not be null"}

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            raise ValidationError({"non_field_errors": ["must be an object"]})
        errors = {}
        value = None
        try:
            value = super().to_internal_value(data)
        except ValidationError as exc:
            errors.update(exc.detail)
        for key in data:
            if key not in self.fields:
                errors[_short(str(key), 64)] = ["unknown field"]
        if errors:
            raise ValidationError(errors)
        return _plain(value)


def _plain(value):
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@extend_schema_field(OpenApiTypes.OBJECT)
class UnionField(serializers.Field):
    """An object discriminated by its `type` key, validated by the serializer for that type."""

    default_error_messages = {
        "required": "is required",
        "null": "must not be null",
        "not_object": "must be an object with a \"type\"",
    }

    def __init__(self, variants: dict, **kwargs):
        self.variants = variants
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            self.fail("not_object")
        if "type" not in data:
            raise ValidationError({"type": ["is required"]})
        kind = data["type"]
        if not isinstance(kind, str) or kind not in self.variants:
            allowed = ", ".join(f'"{name}"' for name in self.variants)
            raise ValidationError({"type": [f"must be one of: {allowed}"]})
        serializer = self.variants[kind](data=data)
        if not serializer.is_valid():
            raise ValidationError(serializer.errors)
        return _plain(serializer.validated_data)

    def to_representation(self, value):
        return value


# --- content blocks and initial events -----------------------------------------------------------


class TextBlockInput(StrictSerializer):
    type = StrictChoiceField(["text"])
    text = StrictCharField(max_length=MAX_TEXT_LENGTH)


class Base64ImageSourceInput(StrictSerializer):
    type = StrictChoiceField(["base64"])
    media_type = StrictChoiceField(IMAGE_MEDIA_TYPES)
    data = StrictCharField()


class Base64DocumentSourceInput(StrictSerializer):
    type = StrictChoiceField(["base64"])
    media_type = StrictCharField(max_length=255)
    data = StrictCharField()


class PlainTextDocumentSourceInput(StrictSerializer):
    type = StrictChoiceField(["text"])
    media_type = StrictChoiceField(["text/plain"])
    data = StrictCharField(allow_blank=True)


class UrlSourceInput(StrictSerializer):
    type = StrictChoiceField(["url"])
    url = UrlField()


class FileSourceInput(StrictSerializer):
    type = StrictChoiceField(["file"])
    file_id = IdField()


class ImageBlockInput(StrictSerializer):
    type = StrictChoiceField(["image"])
    source = UnionField({"base64": Base64ImageSourceInput, "url": UrlSourceInput, "file": FileSourceInput})


class DocumentBlockInput(StrictSerializer):
    type = StrictChoiceField(["document"])
    source = UnionField(
        {
            "base64": Base64DocumentSourceInput,
            "text": PlainTextDocumentSourceInput,
            "url": UrlSourceInput,
            "file": FileSourceInput,
        }
    )
    context = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=MAX_DESCRIPTION_TEXT_LENGTH)
    title = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=500)


class RedactedBlockInput(StrictSerializer):
    type = StrictChoiceField(["redacted"])


class UserMessageEventInput(StrictSerializer):
    type = StrictChoiceField(["user.message"])
    content = serializers.ListField(
        child=UnionField(
            {
                "text": TextBlockInput,
                "image": ImageBlockInput,
                "document": DocumentBlockInput,
                "redacted": RedactedBlockInput,
            }
        ),
        allow_empty=False,
        max_length=MAX_CONTENT_BLOCKS,
        error_messages={"empty": "must contain at least 1 content block", "required": "is required",
                        "null": "must not be null", "max_length": "must contain at most {max_length} content blocks"},
    )


class SystemMessageEventInput(StrictSerializer):
    type = StrictChoiceField(["system.message"])
    content = serializers.ListField(
        child=UnionField({"text": TextBlockInput}),
        allow_empty=False,
        max_length=MAX_CONTENT_BLOCKS,
        error_messages={"empty": "must contain at least 1 text block", "required": "is required",
                        "null": "must not be null", "max_length": "must contain at most {max_length} text blocks"},
    )


class TextRubricInput(StrictSerializer):
    type = StrictChoiceField(["text"])
    content = StrictCharField(max_length=MAX_RUBRIC_LENGTH)


class FileRubricInput(StrictSerializer):
    type = StrictChoiceField(["file"])
    file_id = IdField()


class DefineOutcomeEventInput(StrictSerializer):
    type = StrictChoiceField(["user.define_outcome"])
    description = StrictCharField(max_length=MAX_DESCRIPTION_TEXT_LENGTH)
    rubric = UnionField({"text": TextRubricInput, "file": FileRubricInput})
    max_iterations = StrictIntegerField(min_value=1, max_value=MAX_OUTCOME_ITERATIONS, required=False, allow_null=True)


INITIAL_EVENT_TYPES = {
    "user.message": UserMessageEventInput,
    "system.message": SystemMessageEventInput,
    "user.define_outcome": DefineOutcomeEventInput,
}


def initial_events_field(*, null_message: str = "must not be null", **kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=UnionField(INITIAL_EVENT_TYPES),
        allow_empty=False,
        max_length=MAX_INITIAL_EVENTS,
        error_messages={
            "empty": "must contain at least 1 event",
            "max_length": "must contain at most {max_length} events",
            "not_a_list": "must be an array of events",
            "required": "is required",
            "null": null_message,
        },
        **kwargs,
    )


# --- resources -------------------------------------------------------------------------------------


class BranchCheckoutInput(StrictSerializer):
    type = StrictChoiceField(["branch"])
    name = StrictCharField(max_length=255)


class CommitCheckoutInput(StrictSerializer):
    type = StrictChoiceField(["commit"])
    sha = StrictCharField(max_length=64)

    def validate_sha(self, value: str) -> str:
        if len(value) not in (40, 64) or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValidationError("must be a full commit SHA (40 or 64 hexadecimal characters)")
        return value


class GitHubRepositoryResourceInput(StrictSerializer):
    type = StrictChoiceField(["github_repository"])
    url = UrlField()
    # Write-only: never echoed, not even in an error message (the field's messages do not quote input).
    authorization_token = StrictCharField(required=False, allow_null=True, max_length=MAX_TOKEN_LENGTH)
    checkout = UnionField({"branch": BranchCheckoutInput, "commit": CommitCheckoutInput}, required=False,
                          allow_null=True)
    mount_path = MountPathField()


class FileResourceInput(StrictSerializer):
    type = StrictChoiceField(["file"])
    file_id = IdField()
    mount_path = MountPathField()


class MemoryStoreResourceInput(StrictSerializer):
    type = StrictChoiceField(["memory_store"])
    memory_store_id = IdField()
    access = StrictChoiceField(["read_write", "read_only"], required=False, allow_null=True)
    instructions = StrictCharField(required=False, allow_null=True, allow_blank=True,
                                   max_length=MAX_INSTRUCTIONS_LENGTH)


RESOURCE_TYPES = {
    "github_repository": GitHubRepositoryResourceInput,
    "file": FileResourceInput,
    "memory_store": MemoryStoreResourceInput,
}


def resources_field(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=UnionField(RESOURCE_TYPES),
        max_length=MAX_RESOURCES,
        error_messages={
            "max_length": "must contain at most {max_length} resources",
            "not_a_list": "must be an array of resources",
            "null": "must not be null",
        },
        **kwargs,
    )


class VaultIdsField(serializers.ListField):
    default_error_messages = {
        "max_length": "must contain at most {max_length} vault ids",
        "not_a_list": "must be an array of vault ids",
        "null": "must not be null",
        "duplicate": "vault {vault_id} is listed more than once",
    }

    def __init__(self, **kwargs):
        super().__init__(child=IdField(), max_length=MAX_VAULT_IDS, **kwargs)

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        seen = set()
        for value in values:
            if value in seen:
                self.fail("duplicate", vault_id=_short(value))
            seen.add(value)
        return values


# --- metadata, budget, schedule, agent ----------------------------------------------------------------


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string", "nullable": True}})
class MetadataField(serializers.Field):
    """String keys (1-64 chars) to string values (up to 512 chars). In an update, a null value
    deletes the key; the number of pairs is checked on the resulting bag, by the service."""

    default_error_messages = {
        "required": "is required",
        "null": "must not be null",
        "not_object": "must be an object mapping string keys to string values",
        "too_many": "must have at most {limit} pairs (got {count})",
    }

    def __init__(self, *, patch: bool = False, **kwargs):
        self.patch = patch
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            self.fail("not_object")
        if not self.patch and len(data) > MAX_METADATA_PAIRS:
            self.fail("too_many", limit=MAX_METADATA_PAIRS, count=len(data))
        errors = {}
        for key, value in data.items():
            label = _short(key, MAX_METADATA_KEY_LENGTH + 2)
            if key == "":
                errors["non_field_errors"] = ["keys must not be empty"]
                continue
            if len(key) > MAX_METADATA_KEY_LENGTH:
                errors[label] = [f"keys must be at most {MAX_METADATA_KEY_LENGTH} characters"]
                continue
            if not _is_text(key):
                errors[label] = ["keys must be valid Unicode text without NUL characters"]
                continue
            if value is None and self.patch:
                continue
            if not isinstance(value, str):
                errors[label] = ["must be a string" + (" or null (to delete the key)" if self.patch else "")]
            elif len(value) > MAX_METADATA_VALUE_LENGTH:
                errors[label] = [f"must be at most {MAX_METADATA_VALUE_LENGTH} characters"]
            elif not _is_text(value):
                errors[label] = ["must be valid Unicode text without NUL characters"]
        if errors:
            raise ValidationError(errors)
        return dict(data)

    def to_representation(self, value):
        return value


def _is_text(value: str) -> bool:
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class MonetaryAmountInput(StrictSerializer):
    amount = StrictCharField(max_length=18)
    currency = StrictChoiceField(["USD"])

    def validate_amount(self, value: str) -> str:
        if not value.isascii() or not value.isdigit() or value.startswith("0"):
            raise ValidationError(
                'must be a positive whole number of minor currency units as a string without leading zeros, e.g. "2500"'
            )
        return value


class BudgetInput(StrictSerializer):
    type = StrictChoiceField(["limit"])
    max_list_cost = MonetaryAmountInput()


class ScheduleInput(StrictSerializer):
    """The SDK's cron schedule, plus this service's optional extensions (README "Scheduling
    policies"): an active window, a run limit and the DST fold policy. Absent = the hosted API's
    behaviour."""

    type = StrictChoiceField(["cron"])
    expression = StrictCharField(allow_blank=True, max_length=cron.MAX_EXPRESSION_LENGTH)
    timezone = StrictCharField(allow_blank=True, max_length=cron.MAX_TIMEZONE_LENGTH)
    start_at = Rfc3339Field(required=False, allow_null=True)
    end_at = Rfc3339Field(required=False, allow_null=True)
    max_runs = StrictIntegerField(min_value=1, max_value=MAX_INT32, required=False, allow_null=True)
    dst_fold = StrictChoiceField(cron.DST_FOLDS, required=False)

    def validate(self, attrs):
        problem = schedule_problem(attrs["expression"], attrs["timezone"])
        if problem:
            field, message = problem
            raise ValidationError({field: [message]})
        window_problem(attrs.get("start_at"), attrs.get("end_at"), prefix="schedule.")
        return attrs


def window_problem(start_at: datetime | None, end_at: datetime | None, *, prefix: str = "") -> None:
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise ValidationError({"end_at": [f"must be after {prefix}start_at"]})


class PolicyInput(StrictSerializer):
    """`policy`: what a fire does while the previous run's session is still running, and after how
    many failed scheduled runs in a row the deployment pauses. Omitted keys take their defaults."""

    overlap = StrictChoiceField(Deployment.Overlap.values, required=False)
    pause_after_failures = StrictIntegerField(min_value=1, max_value=MAX_PAUSE_AFTER_FAILURES, required=False,
                                              allow_null=True)


def schedule_problem(expression: str, timezone_name: str) -> tuple[str, str] | None:
    """(field, message) for an invalid cron expression or time zone, else None."""
    try:
        cron.parse(expression)
    except cron.ScheduleError as exc:
        return "expression", str(exc)
    try:
        cron.validate(expression, timezone_name)
    except cron.ScheduleError as exc:
        return "timezone", str(exc)
    return None


class AgentParamsInput(StrictSerializer):
    type = StrictChoiceField(["agent"])
    id = IdField()
    version = StrictIntegerField(min_value=1, max_value=MAX_INT32, required=False, allow_null=True)


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "object"}]})
class AgentField(serializers.Field):
    """An agent id (pins the latest version) or {"type": "agent", "id", "version"}.
    Validated to {"id": str, "version": int | None}."""

    default_error_messages = {
        "required": "is required",
        "null": "must not be null",
        "invalid": 'must be an agent id or an object {{"type": "agent", "id": ..., "version": ...}}',
        "blank": "must not be empty",
        "too_long": f"must be at most {MAX_ID_LENGTH} characters",
    }

    def to_internal_value(self, data):
        if isinstance(data, str):
            if data == "":
                self.fail("blank")
            if len(data) > MAX_ID_LENGTH:
                self.fail("too_long")
            if not _is_text(data):
                self.fail("invalid")
            return {"id": data, "version": None}
        if isinstance(data, Mapping):
            serializer = AgentParamsInput(data=data)
            if not serializer.is_valid():
                raise ValidationError(serializer.errors)
            value = serializer.validated_data
            return {"id": value["id"], "version": value.get("version")}
        self.fail("invalid")

    def to_representation(self, value):
        return value


# --- requests --------------------------------------------------------------------------------------


class DeploymentCreateInput(StrictSerializer):
    """Body of `POST /v1/deployments`."""

    name = StrictCharField(max_length=MAX_NAME_LENGTH, trim_whitespace=True)
    description = StrictCharField(max_length=MAX_DESCRIPTION_LENGTH, required=False, allow_null=True,
                                  allow_blank=True)
    agent = AgentField()
    environment_id = IdField()
    initial_events = initial_events_field()
    resources = resources_field(required=False, allow_null=True)
    vault_ids = VaultIdsField(required=False, allow_null=True)
    metadata = MetadataField(required=False, allow_null=True)
    budget = BudgetInput(required=False, allow_null=True)
    schedule = ScheduleInput(required=False, allow_null=True)
    policy = PolicyInput(required=False, allow_null=True)


_CANNOT_CLEAR = "cannot be cleared (omit it to keep the current value)"


class DeploymentUpdateInput(StrictSerializer):
    """Body of `POST /v1/deployments/{id}`: omitted fields are kept."""

    name = StrictCharField(max_length=MAX_NAME_LENGTH, trim_whitespace=True, required=False,
                           error_messages={"null": _CANNOT_CLEAR})
    description = StrictCharField(max_length=MAX_DESCRIPTION_LENGTH, required=False, allow_null=True,
                                  allow_blank=True)
    agent = AgentField(required=False, error_messages={"null": _CANNOT_CLEAR})
    environment_id = IdField(required=False, error_messages={"null": _CANNOT_CLEAR})
    initial_events = initial_events_field(required=False, null_message=_CANNOT_CLEAR)
    resources = resources_field(required=False, allow_null=True)
    vault_ids = VaultIdsField(required=False, allow_null=True)
    metadata = MetadataField(patch=True, required=False, allow_null=True)
    budget = BudgetInput(required=False, allow_null=True)
    schedule = ScheduleInput(required=False, allow_null=True)
    policy = PolicyInput(required=False, allow_null=True)


class SchedulePreviewInput(StrictSerializer):
    """Body of `POST /v1/deployments/schedule_preview` (the schedule extensions are optional)."""

    expression = StrictCharField(allow_blank=True, max_length=cron.MAX_EXPRESSION_LENGTH)
    timezone = StrictCharField(allow_blank=True, max_length=cron.MAX_TIMEZONE_LENGTH)
    count = StrictIntegerField(min_value=1, max_value=20, required=False)
    start_at = Rfc3339Field(required=False, allow_null=True)
    end_at = Rfc3339Field(required=False, allow_null=True)
    max_runs = StrictIntegerField(min_value=1, max_value=MAX_INT32, required=False, allow_null=True)
    dst_fold = StrictChoiceField(cron.DST_FOLDS, required=False)

    def validate(self, attrs):
        problem = schedule_problem(attrs["expression"], attrs["timezone"])
        if problem:
            field, message = problem
            raise ValidationError({field: [message]})
        window_problem(attrs.get("start_at"), attrs.get("end_at"))
        return attrs


# --- output ----------------------------------------------------------------------------------------


class UpcomingRuns:
    """`upcoming_runs_at` of a schedule, memoized per (expression, time zone, engine options).

    The next fires strictly after `now` are the same for every `now` from the instant they were
    computed after up to (not including) the first of them, so one computation serves every
    deployment sharing a schedule — a page of 100 usually computes a handful — and every request
    until that first fire. Only full answers are kept (fewer than asked means the search gave up
    or the window ends, and a later start could find more). Bounded: the memo is emptied when it
    is full.
    """

    MAX_ENTRIES = 4096

    def __init__(self, count: int):
        self.count = count
        self._memo: dict[tuple, tuple[datetime, datetime, list[str]]] = {}

    def __call__(self, expression: str, timezone_name: str, now: datetime, **options) -> list[str]:
        """`options`: the engine's (`dst_fold`, `start_at`, `end_at`), as `Deployment.schedule_options`."""
        key = (expression, timezone_name, *sorted(options.items()))
        memo = self._memo.get(key)
        if memo is not None and memo[0] <= now < memo[1]:
            return list(memo[2])
        fires = cron.next_fires(expression, timezone_name, now, self.count, **options)
        shown = [iso(at) for at in fires]
        if len(fires) == self.count:
            if len(self._memo) >= self.MAX_ENTRIES:
                self._memo.clear()
            self._memo[key] = (now, fires[0], shown)
        return list(shown)


upcoming_runs = UpcomingRuns(UPCOMING_RUNS)


def schedule_to_dict(deployment: Deployment, *, now: datetime) -> dict | None:
    """The SDK's cron schedule; with any extension set, also the window, the run limit (and the
    runs left under it, when set) and the DST fold policy. `upcoming_runs_at` obeys all of them.
    A schedule without extensions is exactly the hosted API's."""
    if not deployment.has_schedule:
        return None
    upcoming = []
    remaining = deployment.runs_remaining
    if not deployment.is_archived and remaining != 0:
        upcoming = upcoming_runs(deployment.schedule_expression, deployment.schedule_timezone, now,
                                 **deployment.schedule_options)
        if remaining is not None:
            upcoming = upcoming[:remaining]
    data = {
        "type": "cron",
        "expression": deployment.schedule_expression,
        "timezone": deployment.schedule_timezone,
        "last_run_at": iso(deployment.last_run_at),
        "upcoming_runs_at": upcoming,
    }
    if deployment.has_schedule_extensions:
        data["start_at"] = iso(deployment.schedule_start_at)
        data["end_at"] = iso(deployment.schedule_end_at)
        data["max_runs"] = deployment.schedule_max_runs
        data["dst_fold"] = deployment.schedule_dst_fold
        if remaining is not None:
            data["runs_remaining"] = remaining
    return data


def deployment_to_dict(deployment: Deployment, *, now: datetime | None = None) -> dict:
    """The `deployment` object exactly as the API returns it (write-only secrets never included:
    `resources` is stored without them)."""
    now = now or timezone.now()
    archived = deployment.is_archived
    data = {
        "type": "deployment",
        "id": deployment.id,
        "name": deployment.name,
        "description": deployment.description,
        "agent": {"type": "agent", "id": deployment.agent_id, "version": deployment.agent_version},
        "environment_id": deployment.environment_id,
        "initial_events": deployment.initial_events,
        "resources": deployment.resources,
        "vault_ids": deployment.vault_ids,
        "metadata": deployment.metadata,
        "schedule": schedule_to_dict(deployment, now=now),
        # Archived deployments report `active` with `archived_at` set, as the public API does.
        "status": Deployment.Status.ACTIVE.value if archived else deployment.status,
        "paused_reason": None if archived else deployment.paused_reason,
        "archived_at": iso(deployment.archived_at),
        "created_at": iso(deployment.created_at),
        "updated_at": iso(deployment.updated_at),
    }
    if deployment.budget is not None:
        data["budget"] = deployment.budget
    if deployment.has_policy:
        data["policy"] = deployment.policy  # absent with the defaults, as the hosted API's object
    return data


# --- list query ------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
LIST_STATUSES = ("active", "paused")


def rfc3339_or_none(raw) -> datetime | None:
    """An RFC 3339 timestamp with a time zone as an aware UTC datetime, or None when it is not one."""
    if not isinstance(raw, str) or len(raw) > 64 or not _RFC3339.fullmatch(raw):
        return None
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1] in "Zz" else raw)
        return value.astimezone(dt_timezone.utc)  # PostgreSQL accepts offsets only up to ±15:59
    except (ValueError, OverflowError):
        return None


def parse_rfc3339(name: str, raw: str) -> datetime:
    # A "+" in an unencoded query string arrives as a space: "…T00:00:00 00:00".
    if re.fullmatch(r".*T\d{2}:\d{2}:\d{2}(\.\d+)? \d{2}:\d{2}", raw or ""):
        raw = raw[: raw.rindex(" ")] + "+" + raw[raw.rindex(" ") + 1 :]
    value = rfc3339_or_none(raw)
    if value is None:
        raise InvalidRequest(f"{name}: must be an RFC 3339 timestamp with a time zone, e.g. 2026-05-09T00:00:00Z")
    return value


def parse_bool(name: str, raw: str) -> bool:
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise InvalidRequest(f"{name}: must be true or false")


def parse_list_query(query) -> dict:
    """Validate the query of `GET /v1/deployments` (unknown parameters, such as `beta`, are ignored)."""
    params = {"limit": parse_limit(query.get("limit")), "page": query.get("page") or None}
    agent_id = query.get("agent_id")
    if agent_id is not None:
        if agent_id == "" or len(agent_id) > MAX_ID_LENGTH or not _is_text(agent_id):
            raise InvalidRequest(f"agent_id: must be an agent id of 1 to {MAX_ID_LENGTH} characters")
        params["agent_id"] = agent_id
    status = query.get("status")
    if status is not None:
        if status not in LIST_STATUSES:
            raise InvalidRequest('status: must be one of: "active", "paused" (use include_archived for archived ones)')
        params["status"] = status
    include_archived = query.get("include_archived")
    if include_archived is not None:
        params["include_archived"] = parse_bool("include_archived", include_archived)
        if params["include_archived"] and status is not None:
            raise InvalidRequest("include_archived: cannot be combined with status")
    for name, key in (("created_at[gte]", "created_at_gte"), ("created_at[lte]", "created_at_lte")):
        raw = query.get(name)
        if raw is not None:
            params[key] = parse_rfc3339(name, raw)
    return params

"""Input validation (field-named 400s) and the wire shape of a webhook endpoint, following the
official SDK's `client.beta.organization.webhooks` (`webhook_create_params`, `webhook_update_params`,
`BetaOrganizationWebhookEndpoint`, `BetaNewOrganizationWebhookEndpoint`)."""

from collections.abc import Mapping

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from core.errors import InvalidRequest
from core.serializers import iso
from webhooks_app.events import EVENT_TYPES
from webhooks_app.models import WebhookEndpoint

MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 2048
MAX_ENABLED_EVENTS = 64
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20


class StrictString(serializers.CharField):
    """A JSON string, nothing else (DRF's CharField would turn a number into one)."""

    default_error_messages = {
        "required": "is required",
        "null": "must not be null",
        "invalid": "must be a string",
        "blank": "must not be empty",
        "max_length": "must be at most {max_length} characters",
        "unicode": "must be valid Unicode text",
        "nul": "must not contain NUL characters",
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
        if "\x00" in data:
            self.fail("nul")
        return super().to_internal_value(data)


class EventTypeField(StrictString):
    default_error_messages = {"unknown": "unknown event type; must be one of: {choices}"}

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value not in EVENT_TYPES:
            self.fail("unknown", choices=", ".join(EVENT_TYPES))
        return value


class EventTypesField(serializers.ListField):
    default_error_messages = {
        "required": "is required",
        "null": "must not be null",
        "not_a_list": "must be a list of event types",
        "empty": "must list at least one event type",
        "max_length": f"must list at most {MAX_ENABLED_EVENTS} event types",
    }

    def __init__(self, **kwargs):
        super().__init__(child=EventTypeField(), max_length=MAX_ENABLED_EVENTS, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, (str, Mapping)) or not isinstance(data, list):
            self.fail("not_a_list")
        return super().to_internal_value(data)


class StrictInput(serializers.Serializer):
    """A JSON object with exactly the declared keys; unknown keys are errors too."""

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            raise ValidationError({"non_field_errors": ["the request body must be a JSON object"]})
        errors, value = {}, None
        try:
            value = super().to_internal_value(data)
        except ValidationError as exc:
            errors.update(exc.detail)
        for key in data:
            if key not in self.fields:
                errors[str(key)[:64]] = ["unknown field"]
        if errors:
            raise ValidationError(errors)
        return dict(value)


class WebhookEndpointCreateInput(StrictInput):
    url = StrictString(max_length=MAX_URL_LENGTH)
    enabled_events = EventTypesField(allow_empty=False)
    name = StrictString(max_length=MAX_NAME_LENGTH, required=False, allow_blank=True)
    description = StrictString(max_length=MAX_DESCRIPTION_LENGTH, required=False, allow_blank=True)


class WebhookEndpointUpdateInput(StrictInput):
    url = StrictString(max_length=MAX_URL_LENGTH, required=False)
    enabled_events = EventTypesField(required=False)  # [] keeps the set, as the SDK documents
    name = StrictString(max_length=MAX_NAME_LENGTH, required=False, allow_blank=True)
    description = StrictString(max_length=MAX_DESCRIPTION_LENGTH, required=False, allow_blank=True)
    state = serializers.ChoiceField(
        choices=WebhookEndpoint.State.values, required=False,
        error_messages={"invalid_choice": "must be one of: enabled, disabled", "null": "must not be null"},
    )


def validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def parse_list_query(query) -> dict:
    """`limit` (0 or absent = 20, at most 100), `order` (asc | desc, default desc), `after_id`,
    `before_id` (not both)."""
    raw = query.get("limit")
    limit = DEFAULT_LIST_LIMIT
    if raw not in (None, ""):
        if not raw.isascii() or not raw.strip().lstrip("-").isdigit():
            raise InvalidRequest(f"limit: must be an integer between 0 and {MAX_LIST_LIMIT}")
        limit = int(raw)
        if not 0 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit: must be between 0 and {MAX_LIST_LIMIT} (got {limit})")
        limit = limit or DEFAULT_LIST_LIMIT
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest("order: must be asc or desc")
    after_id, before_id = query.get("after_id") or None, query.get("before_id") or None
    for name, value in (("after_id", after_id), ("before_id", before_id)):
        if value is not None and len(value) > 64:
            raise InvalidRequest(f"{name}: must be an id of at most 64 characters")
    if after_id and before_id:
        raise InvalidRequest("after_id and before_id cannot be combined")
    return {"limit": limit, "order": order, "after_id": after_id, "before_id": before_id}


def endpoint_to_dict(endpoint: WebhookEndpoint, *, signing_secret: str | None = None) -> dict:
    """`BetaOrganizationWebhookEndpoint`; with `signing_secret` (create only)
    `BetaNewOrganizationWebhookEndpoint`. The stored secret is never read here."""
    data = {
        "id": endpoint.id,
        "created_at": iso(endpoint.created_at),
        "description": endpoint.description or "",
        "disabled_reason": endpoint.disabled_reason or "",
        "enabled_events": list(endpoint.enabled_events or []),
        "name": endpoint.name or "",
        "state": endpoint.state,
        "updated_at": iso(endpoint.updated_at),
        "url": endpoint.url,
    }
    if signing_secret is not None:
        data["signing_secret"] = signing_secret
    return data

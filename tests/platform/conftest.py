"""Factories for the local platform's rows (through its services, as the API would make them)."""

import pytest

from platform_app import services


def strict(model_cls, obj):
    """Validate an SDK object strictly against its model class: the SDK builds response objects
    leniently, so a missing required field would otherwise go unnoticed."""
    assert isinstance(obj, model_cls), type(obj)
    return model_cls.model_validate(obj.to_dict(mode="json"))


@pytest.fixture
def make_agent(tenant):
    def make(owner=None, **fields):
        owner = owner or tenant
        fields.setdefault("name", "Researcher")
        fields.setdefault("model", "claude-sonnet-4-6")
        return services.agent_create(organization=owner.organization, workspace=owner.workspace, **fields)

    return make


@pytest.fixture
def make_environment(tenant):
    def make(owner=None, **fields):
        owner = owner or tenant
        fields.setdefault("name", "python-env")
        return services.environment_create(organization=owner.organization, workspace=owner.workspace, **fields)

    return make


@pytest.fixture
def make_vault(tenant):
    def make(owner=None, **fields):
        owner = owner or tenant
        fields.setdefault("display_name", "Team credentials")
        return services.vault_create(organization=owner.organization, workspace=owner.workspace, **fields)

    return make


USER_MESSAGE = {"type": "user.message", "content": [{"type": "text", "text": "Summarize the open issues"}]}


def api_message(error) -> str:
    """The envelope's error message of an SDK APIStatusError."""
    return error.body["error"]["message"]

"""client.beta.environments.* and client.beta.vaults.* through the official SDK."""

import anthropic
import pytest
from anthropic.types.beta import BetaEnvironment
from anthropic.types.beta.beta_managed_agents_vault import BetaManagedAgentsVault

from platform_app.models import Environment, Vault
from tests.platform.conftest import api_message, strict


def test_environment_create_defaults_to_an_unrestricted_cloud_config(sdk):
    environment = sdk.beta.environments.create(name="python-env", description="for scripts", metadata={"k": "v"})
    strict(BetaEnvironment, environment)
    assert environment.id.startswith("env_")
    assert environment.type == "environment"
    assert environment.name == "python-env"
    assert environment.description == "for scripts"
    assert environment.metadata == {"k": "v"}
    assert environment.scope == "organization"
    assert environment.archived_at is None
    assert environment.created_at.endswith("Z")
    assert environment.config.type == "cloud"
    assert environment.config.networking.type == "unrestricted"
    assert environment.config.packages.pip == [] and environment.config.packages.apt == []


def test_environment_limited_network_and_packages_round_trip(sdk):
    environment = sdk.beta.environments.create(
        name="locked",
        config={
            "type": "cloud",
            "networking": {"type": "limited", "allowed_hosts": ["api.github.com"], "allow_package_managers": True},
            "packages": {"pip": ["requests==2.32.3"]},
        },
    )
    strict(BetaEnvironment, environment)
    fetched = sdk.beta.environments.retrieve(environment.id)
    assert fetched.config.networking.allowed_hosts == ["api.github.com"]
    assert fetched.config.networking.allow_package_managers is True
    assert fetched.config.networking.allow_mcp_servers is False
    assert fetched.config.packages.pip == ["requests==2.32.3"]


def test_packages_under_limited_network_need_package_managers(sdk):
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk.beta.environments.create(
            name="x", config={"type": "cloud", "networking": {"type": "limited"}, "packages": {"pip": ["rich"]}}
        )
    assert api_message(error.value).startswith("config.packages:")


def test_environment_update_merges_config_and_patches_metadata(sdk):
    environment = sdk.beta.environments.create(
        name="env", metadata={"a": "1", "b": "2"},
        config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["x.example.com"]}},
    )
    updated = sdk.beta.environments.update(
        environment.id, name="renamed", metadata={"a": None, "b": "", "c": "3"},
        config={"type": "cloud", "packages": {"npm": ["left-pad"]}, "networking": {"type": "limited", "allow_package_managers": True}},
    )
    strict(BetaEnvironment, updated)
    assert updated.name == "renamed"
    assert updated.metadata == {"c": "3"}
    assert updated.config.networking.allowed_hosts == ["x.example.com"]
    assert updated.config.packages.npm == ["left-pad"]


def test_environment_archive_and_list(sdk):
    kept = sdk.beta.environments.create(name="kept")
    gone = sdk.beta.environments.create(name="gone")
    archived = sdk.beta.environments.archive(gone.id)
    strict(BetaEnvironment, archived)
    assert archived.archived_at is not None
    assert Environment.objects.get(pk=gone.id).archived_at is not None
    assert [e.id for e in sdk.beta.environments.list()] == [kept.id]
    assert [e.id for e in sdk.beta.environments.list(include_archived=True)] == [gone.id, kept.id]
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk.beta.environments.update(gone.id, name="again")
    assert api_message(error.value) == f"environment {gone.id} is archived and can no longer be updated"


def test_environment_list_pages(sdk):
    ids = [sdk.beta.environments.create(name=f"env {n}").id for n in range(12)]
    page = sdk.beta.environments.list(limit=5)
    assert len(page.data) == 5 and page.next_page
    assert [e.id for e in sdk.beta.environments.list(limit=5)] == list(reversed(ids))


def test_vault_create_retrieve_update_list_archive(sdk):
    vault = sdk.beta.vaults.create(display_name="Team creds", metadata={"owner": "ops"})
    strict(BetaManagedAgentsVault, vault)
    assert vault.id.startswith("vlt_")
    assert (vault.type, vault.display_name, vault.metadata, vault.archived_at) == ("vault", "Team creds", {"owner": "ops"}, None)

    fetched = sdk.beta.vaults.retrieve(vault.id)
    strict(BetaManagedAgentsVault, fetched)
    assert fetched.created_at == vault.created_at

    updated = sdk.beta.vaults.update(vault.id, display_name="Ops creds", metadata={"owner": None, "tier": "1"})
    assert (updated.display_name, updated.metadata) == ("Ops creds", {"tier": "1"})

    other = sdk.beta.vaults.create(display_name="Other")
    archived = sdk.beta.vaults.archive(vault.id)
    strict(BetaManagedAgentsVault, archived)
    assert archived.archived_at is not None
    assert Vault.objects.get(pk=vault.id).archived_at is not None
    assert [v.id for v in sdk.beta.vaults.list()] == [other.id]
    listed = list(sdk.beta.vaults.list(include_archived=True))
    assert [v.id for v in listed] == [other.id, vault.id]
    for item in listed:
        strict(BetaManagedAgentsVault, item)


def test_vault_display_name_is_required_and_bounded(sdk):
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk.beta.vaults.create(display_name="x" * 256)
    assert api_message(error.value).startswith("display_name:")

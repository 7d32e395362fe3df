"""Per-organization credentials for the remote Managed Agents platform: stored encrypted, shown
only by their last characters, chosen before the shared default, set by a command and the admin."""

import io
import logging
import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client, override_settings

from accounts_app.errors import UpstreamCredentialsInvalid
from accounts_app.models import Organization, hash_key
from accounts_app.selectors import active_key_with_workspace
from accounts_app.services import (
    organization_get_or_create,
    organization_upstream_credentials_clear,
    organization_upstream_credentials_set,
)
from accounts_app.upstream import UpstreamCredentials, upstream_credentials, upstream_credentials_for
from core.crypto import decrypt
from tests.conftest import Tenant
from tests.e2e import procs

pytestmark = pytest.mark.django_db

KEY = "sk-ant-api03-OrganizationOwnKeyNeverShown-0123456789abcdWXYZ"
OTHER_KEY = "sk-ant-api03-SecondKeyAlsoNeverShown-9876543210zyxwQRST"
DEFAULT_KEY = "sk-ant-api03-SharedDefaultKeyNeverShown-5555555555DFLT"


@pytest.fixture(autouse=True)
def no_shared_default():
    with override_settings(ANTHROPIC_API_KEY="", ANTHROPIC_BASE_URL=None):
        yield


@pytest.fixture
def organization():
    return organization_get_or_create(name="Acme")


def raw_columns(organization_id: str) -> tuple[str, str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT upstream_api_key_encrypted, upstream_api_key_last4, upstream_base_url "
            "FROM accounts_app_organization WHERE id = %s",
            [organization_id],
        )
        return cursor.fetchone()


# --- storage ---------------------------------------------------------------------------------------


def test_the_stored_column_is_not_the_key_and_decrypts_to_it(organization):
    organization_upstream_credentials_set(organization=organization, api_key=KEY, base_url="https://upstream.example:8443/")
    token, last4, base_url = raw_columns(organization.id)
    assert token and KEY not in token
    assert decrypt(token) == KEY
    assert last4 == "WXYZ"
    assert base_url == "https://upstream.example:8443"


def test_only_the_last_characters_are_kept_in_clear_and_never_more_than_a_quarter(organization):
    organization_upstream_credentials_set(organization=organization, api_key="abcdefgh")
    assert raw_columns(organization.id)[1] == "gh"
    organization_upstream_credentials_set(organization=organization, api_key="abc")
    assert raw_columns(organization.id)[1] == ""
    organization_upstream_credentials_set(organization=organization, api_key=KEY)
    assert raw_columns(organization.id)[1] == KEY[-4:]


def test_setting_again_replaces_and_clearing_removes_key_and_base_url(organization):
    organization_upstream_credentials_set(organization=organization, api_key=KEY, base_url="http://127.0.0.1:9")
    organization_upstream_credentials_set(organization=organization, api_key=OTHER_KEY)
    assert decrypt(raw_columns(organization.id)[0]) == OTHER_KEY
    assert raw_columns(organization.id)[2] == ""
    organization_upstream_credentials_clear(organization=organization)
    assert raw_columns(organization.id) == ("", "", "")
    assert Organization.objects.get(pk=organization.pk).upstream_credentials_updated_at is not None


@pytest.mark.parametrize(
    ("api_key", "message"),
    [
        ("", "api_key: must not be empty"),
        ("sk-with space", "api_key: must not contain whitespace"),
        ("sk-with\ttab", "api_key: must not contain whitespace"),
        ("sk-nul\x00char", "api_key: must contain only printable ASCII characters (no control characters)"),
        ("sk-ünïcode", "api_key: must contain only printable ASCII characters (no control characters)"),
        ("k" * 501, "api_key: must be at most 500 characters"),
    ],
)
def test_unusable_keys_are_refused_with_the_field_named_and_the_key_not_repeated(organization, api_key, message):
    with pytest.raises(UpstreamCredentialsInvalid) as caught:
        organization_upstream_credentials_set(organization=organization, api_key=api_key)
    assert caught.value.message == message
    assert caught.value.status == 400
    assert raw_columns(organization.id) == ("", "", "")


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("ftp://upstream.example", "base_url: must start with http:// or https://"),
        ("upstream.example", "base_url: must start with http:// or https://"),
        ("https://", "base_url: must name a host (https://host[:port][/path])"),
        ("https://user:pw@upstream.example", "base_url: must not contain a user name or password (the key is set on its own)"),
        ("https://upstream.example/?x=1", "base_url: must not have a query string or fragment"),
        ("https://upstream.example:99999", "base_url: is not a valid URL"),
        ("https://upstream .example", "base_url: must not contain whitespace or control characters"),
        ("https://" + "a" * 500 + ".example", "base_url: must be at most 500 characters"),
    ],
)
def test_unusable_base_urls_are_refused(organization, base_url, message):
    with pytest.raises(UpstreamCredentialsInvalid) as caught:
        organization_upstream_credentials_set(organization=organization, api_key=KEY, base_url=base_url)
    assert caught.value.message == message
    assert raw_columns(organization.id) == ("", "", "")


# --- the selector ----------------------------------------------------------------------------------


def test_the_organizations_own_credentials_win_over_the_shared_default(organization):
    organization_upstream_credentials_set(organization=organization, api_key=KEY, base_url="http://127.0.0.1:9001")
    with override_settings(ANTHROPIC_API_KEY=DEFAULT_KEY, ANTHROPIC_BASE_URL="http://127.0.0.1:9002"):
        credentials = upstream_credentials(organization=Organization.objects.get(pk=organization.pk))
        assert credentials == UpstreamCredentials(api_key=KEY, base_url="http://127.0.0.1:9001", source="organization")
        assert upstream_credentials_for(organization_id=organization.id) == credentials


def test_an_own_key_without_base_url_goes_to_the_installations_base_url(organization):
    organization_upstream_credentials_set(organization=organization, api_key=KEY)
    assert upstream_credentials(organization=organization).base_url is None
    with override_settings(ANTHROPIC_BASE_URL="http://127.0.0.1:9002"):
        assert upstream_credentials(organization=organization).base_url == "http://127.0.0.1:9002"


def test_without_own_credentials_the_shared_default_serves(organization):
    with override_settings(ANTHROPIC_API_KEY=DEFAULT_KEY, ANTHROPIC_BASE_URL="http://127.0.0.1:9002"):
        expected = UpstreamCredentials(api_key=DEFAULT_KEY, base_url="http://127.0.0.1:9002", source="default")
        assert upstream_credentials(organization=organization) == expected
        assert upstream_credentials_for(organization_id=organization.id) == expected
        assert upstream_credentials_for(organization_id="org_doesnotexist") is None


def test_without_either_there_are_none(organization):
    assert upstream_credentials(organization=organization) is None
    assert upstream_credentials_for(organization_id=organization.id) is None


def test_the_selector_by_id_reads_with_one_query(organization, django_assert_num_queries):
    organization_upstream_credentials_set(organization=organization, api_key=KEY)
    with django_assert_num_queries(1):
        assert upstream_credentials_for(organization_id=organization.id).api_key == KEY
    with django_assert_num_queries(0):
        assert upstream_credentials(organization=organization).api_key == KEY


def test_credentials_never_show_the_key_and_have_a_stable_fingerprint():
    credentials = UpstreamCredentials(api_key=KEY, base_url="http://127.0.0.1:9001", source="organization")
    for text in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert KEY not in text and KEY[-8:] not in text
    assert "api_key=<hidden>" in repr(credentials)
    same = UpstreamCredentials(api_key=KEY, base_url="http://127.0.0.1:9001", source="default")
    assert credentials.fingerprint == same.fingerprint
    assert len(credentials.fingerprint) == 32 and KEY not in credentials.fingerprint
    other_url = UpstreamCredentials(api_key=KEY, base_url="http://127.0.0.1:9002", source="organization")
    other_key = UpstreamCredentials(api_key=OTHER_KEY, base_url="http://127.0.0.1:9001", source="organization")
    assert len({credentials.fingerprint, other_url.fingerprint, other_key.fingerprint}) == 3


def test_the_auth_lookup_still_loads_the_organization_with_its_credentials(organization):
    """The request path reads the organization with the key (one statement); the new columns come
    with it, so the pass-through needs no query of its own."""
    tenant = Tenant("Acme")
    organization_upstream_credentials_set(organization=tenant.organization, api_key=KEY)
    api_key, _ = active_key_with_workspace(key_hash=hash_key(tenant.key))
    assert upstream_credentials(organization=api_key.organization).api_key == KEY


# --- the management command ------------------------------------------------------------------------


def test_command_reads_the_key_from_stdin_and_prints_only_its_end(organization):
    out = io.StringIO()
    call_command(
        "set_upstream_credentials", "--organization", "Acme", "--base-url", "https://upstream.example",
        stdin=io.StringIO(KEY + "\n"), stdout=out,
    )
    assert out.getvalue().strip() == "upstream credentials of Acme stored (key …WXYZ, base URL https://upstream.example)"
    assert KEY not in out.getvalue()
    assert decrypt(raw_columns(organization.id)[0]) == KEY


def test_command_reads_a_patched_sys_stdin(organization, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("  " + OTHER_KEY + "  \n"))
    out = io.StringIO()
    call_command("set_upstream_credentials", "--organization", "Acme", stdout=out)
    assert out.getvalue().strip() == "upstream credentials of Acme stored (key …QRST)"
    assert decrypt(raw_columns(organization.id)[0]) == OTHER_KEY


def test_command_refuses_empty_input_with_a_clear_message(organization):
    with pytest.raises(CommandError) as caught:
        call_command("set_upstream_credentials", "--organization", "Acme", stdin=io.StringIO(""), stdout=io.StringIO())
    assert "no API key on standard input" in str(caught.value)
    assert raw_columns(organization.id) == ("", "", "")


def test_command_refuses_an_invalid_base_url_without_echoing_the_key(organization):
    with pytest.raises(CommandError) as caught:
        call_command(
            "set_upstream_credentials", "--organization", "Acme", "--base-url", "ftp://x",
            stdin=io.StringIO(KEY), stdout=io.StringIO(),
        )
    assert str(caught.value) == "base_url: must start with http:// or https://"


def test_command_for_an_unknown_organization_fails(db):
    with pytest.raises(CommandError) as caught:
        call_command("set_upstream_credentials", "--organization", "Nobody", stdin=io.StringIO(KEY), stdout=io.StringIO())
    assert str(caught.value) == "organization 'Nobody' does not exist"


def test_command_clear_removes_the_credentials(organization):
    organization_upstream_credentials_set(organization=organization, api_key=KEY, base_url="http://127.0.0.1:9")
    out = io.StringIO()
    call_command("set_upstream_credentials", "--organization", "Acme", "--clear", stdout=out)
    assert out.getvalue().strip() == "upstream credentials of Acme cleared"
    assert raw_columns(organization.id) == ("", "", "")


@pytest.mark.django_db(transaction=True)
def test_command_in_its_own_process_with_the_key_piped_in():
    organization = organization_get_or_create(name="Piped Inc")
    env = {**os.environ, "DATABASE_URL": procs.test_database_url(), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "manage.py", "set_upstream_credentials", "--organization", "Piped Inc",
            "--base-url", "http://127.0.0.1:8001"]
    done = subprocess.run(argv, cwd=procs.ROOT, env=env, input=KEY + "\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        "upstream credentials of Piped Inc stored (key …WXYZ, base URL http://127.0.0.1:8001)"
    )
    assert KEY not in done.stdout + done.stderr
    assert decrypt(raw_columns(organization.id)[0]) == KEY

    unknown = subprocess.run(
        [sys.executable, "manage.py", "set_upstream_credentials", "--organization", "Nobody"],
        cwd=procs.ROOT, env=env, input=KEY, capture_output=True, text=True, timeout=120,
    )
    assert unknown.returncode == 1
    assert "organization 'Nobody' does not exist" in unknown.stderr
    empty = subprocess.run(
        [sys.executable, "manage.py", "set_upstream_credentials", "--organization", "Piped Inc"],
        cwd=procs.ROOT, env=env, input="", capture_output=True, text=True, timeout=120,
    )
    assert empty.returncode == 1
    assert "no API key on standard input" in empty.stderr
    assert decrypt(raw_columns(organization.id)[0]) == KEY


# --- the admin -------------------------------------------------------------------------------------


@pytest.fixture
def operator_client(db):
    get_user_model().objects.create_superuser("operator", "operator@example.com", "operator-password")
    client = Client()
    assert client.login(username="operator", password="operator-password")
    return client


def change_url(organization) -> str:
    return f"/admin/accounts_app/organization/{organization.pk}/change/"


def form_data(organization, **upstream) -> dict:
    return {
        "name": organization.name,
        "scheduled_deployment_limit": "",
        "session_rate_limit_per_minute": "",
        "disabled_at_0": "",
        "disabled_at_1": "",
        "workspaces-TOTAL_FORMS": "0",
        "workspaces-INITIAL_FORMS": "0",
        "workspaces-MIN_NUM_FORMS": "0",
        "workspaces-MAX_NUM_FORMS": "1000",
        "new_upstream_api_key": "",
        "new_upstream_base_url": "",
        **upstream,
    }


def test_admin_says_plainly_which_credentials_are_used(operator_client, organization):
    page = operator_client.get(change_url(organization)).content.decode()
    assert "None: this organization cannot reach a remote Managed Agents platform" in page

    with override_settings(ANTHROPIC_API_KEY=DEFAULT_KEY):
        page = operator_client.get(change_url(organization)).content.decode()
        assert "The shared default ANTHROPIC_API_KEY — shared with every organization that has no credentials of its own" in page
        assert "key …DFLT at https://api.anthropic.com (the public API)" in page
        assert DEFAULT_KEY not in page

        organization_upstream_credentials_set(organization=organization, api_key=KEY, base_url="http://127.0.0.1:8001")
        page = operator_client.get(change_url(organization)).content.decode()
        assert "Its own: key …WXYZ at http://127.0.0.1:8001." in page
        assert KEY not in page and DEFAULT_KEY not in page


def test_admin_sets_a_key_through_the_form_and_never_shows_it(operator_client, organization, caplog):
    caplog.set_level(logging.DEBUG)
    response = operator_client.post(
        change_url(organization),
        form_data(organization, new_upstream_api_key=KEY, new_upstream_base_url="http://127.0.0.1:8001"),
        follow=True,
    )
    assert response.status_code == 200
    assert KEY not in response.content.decode()
    token, last4, base_url = raw_columns(organization.id)
    assert decrypt(token) == KEY and last4 == "WXYZ" and base_url == "http://127.0.0.1:8001"

    page = operator_client.get(change_url(organization)).content.decode()
    assert "Its own: key …WXYZ at http://127.0.0.1:8001." in page
    assert KEY not in page and token not in page
    assert 'name="new_upstream_api_key"' in page and 'type="password"' in page
    listing = operator_client.get("/admin/accounts_app/organization/").content.decode()
    assert "own (key …WXYZ)" in listing and KEY not in listing
    for record in caplog.records:
        assert KEY not in record.getMessage() and KEY not in str(record.__dict__)


def test_admin_empty_key_keeps_the_stored_one_and_may_change_the_base_url(operator_client, organization):
    organization_upstream_credentials_set(organization=organization, api_key=KEY, base_url="http://127.0.0.1:8001")
    response = operator_client.post(
        change_url(organization), form_data(organization, new_upstream_base_url="http://127.0.0.1:8002"), follow=True
    )
    assert response.status_code == 200
    token, last4, base_url = raw_columns(organization.id)
    assert decrypt(token) == KEY and base_url == "http://127.0.0.1:8002"


def test_admin_form_errors_never_render_the_key_back(operator_client, organization):
    response = operator_client.post(
        change_url(organization), form_data(organization, new_upstream_api_key=KEY, new_upstream_base_url="ftp://x")
    )
    page = response.content.decode()
    assert response.status_code == 200  # the form again, with its error
    assert "base_url: must start with http:// or https://" in page
    assert KEY not in page
    assert raw_columns(organization.id) == ("", "", "")

    response = operator_client.post(change_url(organization), form_data(organization, new_upstream_api_key="bad key"))
    assert "api_key: must not contain whitespace" in response.content.decode()
    assert raw_columns(organization.id) == ("", "", "")

    response = operator_client.post(
        change_url(organization), form_data(organization, new_upstream_base_url="http://127.0.0.1:8001")
    )
    assert "A base URL needs a key of the organization&#x27;s own: set one." in response.content.decode()


def test_admin_clear_checkbox_removes_the_credentials(operator_client, organization):
    organization_upstream_credentials_set(organization=organization, api_key=KEY, base_url="http://127.0.0.1:8001")
    response = operator_client.post(
        change_url(organization),
        form_data(organization, new_upstream_base_url="http://127.0.0.1:8001", clear_upstream_credentials="on"),
        follow=True,
    )
    assert response.status_code == 200
    assert raw_columns(organization.id) == ("", "", "")
    page = operator_client.get(change_url(organization)).content.decode()
    assert "None: this organization cannot reach a remote Managed Agents platform" in page


def test_admin_refuses_clear_and_a_new_key_together(operator_client, organization):
    organization_upstream_credentials_set(organization=organization, api_key=KEY)
    response = operator_client.post(
        change_url(organization),
        form_data(organization, new_upstream_api_key=OTHER_KEY, clear_upstream_credentials="on"),
    )
    assert "Either clear the credentials or set a new key, not both." in response.content.decode()
    assert OTHER_KEY not in response.content.decode()
    assert decrypt(raw_columns(organization.id)[0]) == KEY


def test_admin_creates_an_organization_with_its_key(operator_client):
    assert operator_client.get("/admin/accounts_app/organization/add/").status_code == 200
    data = form_data(Organization(name="Initech"), new_upstream_api_key=KEY, new_upstream_base_url="https://up.example/")
    response = operator_client.post("/admin/accounts_app/organization/add/", data, follow=True)
    assert response.status_code == 200 and KEY not in response.content.decode()
    organization = Organization.objects.get(name="Initech")
    token, last4, base_url = raw_columns(organization.id)
    assert decrypt(token) == KEY and last4 == "WXYZ" and base_url == "https://up.example"

import logging
import secrets
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from accounts_app.errors import UpstreamCredentialsInvalid
from accounts_app.models import ApiKey, Organization, Workspace, hash_key
from core.crypto import encrypt

logger = logging.getLogger("accounts_app.services")

KEY_PREFIX = "sk-sd-"
DEFAULT_WORKSPACE_NAME = "Default"


@transaction.atomic
def organization_get_or_create(*, name: str) -> Organization:
    organization, _ = Organization.objects.get_or_create(name=name)
    Workspace.objects.get_or_create(
        organization=organization, is_default=True, defaults={"name": DEFAULT_WORKSPACE_NAME}
    )
    return organization


def workspace_get_or_create(*, organization: Organization, name: str) -> Workspace:
    workspace, _ = Workspace.objects.get_or_create(organization=organization, name=name)
    return workspace


def default_workspace(organization: Organization) -> Workspace:
    return Workspace.objects.get(organization=organization, is_default=True)


def api_key_create(
    *, organization: Organization, workspace: Workspace | None = None, name: str = ""
) -> tuple[ApiKey, str]:
    """Create a key; the plain key is returned once and only its hash is stored."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        organization=organization,
        workspace=workspace,
        name=name,
        prefix=plain[: len(KEY_PREFIX) + 6],
        key_hash=hash_key(plain),
    )
    return api_key, plain


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


# --- upstream credentials (remote Managed Agents platform) ------------------------------------

MAX_UPSTREAM_API_KEY_LENGTH = 500
MAX_UPSTREAM_BASE_URL_LENGTH = 500
UPSTREAM_FIELDS = [
    "upstream_api_key_encrypted", "upstream_api_key_last4", "upstream_base_url", "upstream_credentials_updated_at",
]


def upstream_key_tail(api_key: str) -> str:
    """What may be shown of a key: its last 4 characters, and never more than a quarter of it."""
    shown = min(4, len(api_key) // 4)
    return api_key[-shown:] if shown else ""


def clean_upstream_api_key(api_key: str) -> str:
    """The key as it will be sent in an HTTP header: 1 to 500 printable ASCII characters, no
    whitespace. Messages never repeat the key."""
    if not isinstance(api_key, str) or not api_key:
        raise UpstreamCredentialsInvalid("api_key: must not be empty")
    if len(api_key) > MAX_UPSTREAM_API_KEY_LENGTH:
        raise UpstreamCredentialsInvalid(f"api_key: must be at most {MAX_UPSTREAM_API_KEY_LENGTH} characters")
    if any(character.isspace() for character in api_key):
        raise UpstreamCredentialsInvalid("api_key: must not contain whitespace")
    if not all(0x21 <= ord(character) <= 0x7E for character in api_key):
        raise UpstreamCredentialsInvalid("api_key: must contain only printable ASCII characters (no control characters)")
    return api_key


def clean_upstream_base_url(base_url: str | None) -> str:
    """An http(s) URL with a host and nothing else that could carry a secret or be mistaken for
    part of a path: no user or password, query or fragment. Empty or None: no base URL."""
    if base_url is None:
        return ""
    if not isinstance(base_url, str):
        raise UpstreamCredentialsInvalid("base_url: must be a string")
    value = base_url.strip()
    if not value:
        return ""
    if len(value) > MAX_UPSTREAM_BASE_URL_LENGTH:
        raise UpstreamCredentialsInvalid(f"base_url: must be at most {MAX_UPSTREAM_BASE_URL_LENGTH} characters")
    if any(character.isspace() or not character.isprintable() for character in value):
        raise UpstreamCredentialsInvalid("base_url: must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 — raises ValueError for a port out of range or not a number
    except ValueError:
        raise UpstreamCredentialsInvalid("base_url: is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UpstreamCredentialsInvalid("base_url: must start with http:// or https://")
    if not parts.hostname:
        raise UpstreamCredentialsInvalid("base_url: must name a host (https://host[:port][/path])")
    if parts.username is not None or parts.password is not None:
        raise UpstreamCredentialsInvalid("base_url: must not contain a user name or password (the key is set on its own)")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise UpstreamCredentialsInvalid("base_url: must not have a query string or fragment")
    return value.rstrip("/")


def organization_upstream_credentials_set(
    *, organization: Organization, api_key: str, base_url: str | None = None
) -> Organization:
    """Store the organization's own key for the remote platform (encrypted) and, optionally, the
    platform's base URL; they replace any the organization had."""
    api_key = clean_upstream_api_key(api_key)
    base_url = clean_upstream_base_url(base_url)
    organization.upstream_api_key_encrypted = encrypt(api_key)
    organization.upstream_api_key_last4 = upstream_key_tail(api_key)
    organization.upstream_base_url = base_url
    organization.upstream_credentials_updated_at = timezone.now()
    organization.save(update_fields=UPSTREAM_FIELDS)
    logger.info(
        "upstream credentials stored",
        extra={"organization_id": organization.id, "upstream_base_url": base_url or None},
    )
    return organization


def organization_upstream_credentials_clear(*, organization: Organization) -> Organization:
    """Forget the organization's own key and base URL (it falls back to the shared default, if any)."""
    had_any = organization.has_own_upstream_credentials
    organization.upstream_api_key_encrypted = ""
    organization.upstream_api_key_last4 = ""
    organization.upstream_base_url = ""
    if had_any:
        organization.upstream_credentials_updated_at = timezone.now()
    organization.save(update_fields=UPSTREAM_FIELDS)
    if had_any:
        logger.info("upstream credentials cleared", extra={"organization_id": organization.id})
    return organization

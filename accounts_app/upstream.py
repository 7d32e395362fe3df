"""Which credentials an organization uses on the remote Managed Agents platform (SESSION_GATEWAY=anthropic).

The organization's own key (and base URL) wins. Otherwise the installation's ANTHROPIC_API_KEY
(and ANTHROPIC_BASE_URL) serves as a shared default: every organization without a key of its own
then acts in one upstream account. Without either there are none.

An organization's own key without a base URL goes to ANTHROPIC_BASE_URL when that is set (an
installation pointed at one platform), else to the public API (`base_url` None).

These run once per fire batch per organization and once per forwarded API request, so they take
an Organization already loaded or read two columns with one query, and remember decrypted keys by
their ciphertext.
"""

import functools
import hashlib
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from django.conf import settings

from accounts_app.errors import UpstreamCredentialsUnreadable
from accounts_app.models import Organization
from core.crypto import decrypt

Source = Literal["organization", "default"]

PUBLIC_API = "https://api.anthropic.com"


def display_host(base_url: str) -> str:
    """host[:port] of a base URL, for messages (never a user name or password it might carry)."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return "the configured upstream"
    if not parts.hostname:
        return "the configured upstream"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}" if port else host


@dataclass(frozen=True, repr=False)
class UpstreamCredentials:
    api_key: str
    base_url: str | None
    source: Source

    def __repr__(self) -> str:
        return f"UpstreamCredentials(source={self.source!r}, base_url={self.base_url!r}, api_key=<hidden>)"

    __str__ = __repr__

    @property
    def url(self) -> str:
        """Where the key goes: its base URL, or the public API."""
        return (self.base_url or PUBLIC_API).rstrip("/")

    @functools.cached_property
    def fingerprint(self) -> str:
        """A stable name for (key, base URL), e.g. to cache one SDK client per credentials; a
        one-way hash, never the key."""
        material = f"upstream-credentials\x00{self.api_key}\x00{self.base_url or ''}".encode()
        return hashlib.sha256(material).hexdigest()[:32]


@functools.lru_cache(maxsize=256)
def _decrypted(token: str) -> str:
    try:
        return decrypt(token)
    except ValueError:
        raise UpstreamCredentialsUnreadable(
            "the organization's upstream credentials cannot be decrypted with the configured "
            "FIELD_ENCRYPTION_KEYS: set them again (admin or `manage.py set_upstream_credentials`)"
        ) from None


def _own(token: str, base_url: str) -> UpstreamCredentials:
    return UpstreamCredentials(
        api_key=_decrypted(token), base_url=base_url or settings.ANTHROPIC_BASE_URL or None, source="organization"
    )


def shared_default_credentials() -> UpstreamCredentials | None:
    """The installation's ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL, if a key is set."""
    if not settings.ANTHROPIC_API_KEY:
        return None
    return UpstreamCredentials(
        api_key=settings.ANTHROPIC_API_KEY, base_url=settings.ANTHROPIC_BASE_URL or None, source="default"
    )


def upstream_credentials(*, organization: Organization) -> UpstreamCredentials | None:
    """The credentials this (loaded) organization uses upstream: its own, the shared default, or None.
    Raises UpstreamCredentialsUnreadable when its own key cannot be decrypted."""
    if organization.upstream_api_key_encrypted:
        return _own(organization.upstream_api_key_encrypted, organization.upstream_base_url)
    return shared_default_credentials()


def upstream_credentials_for(*, organization_id: str) -> UpstreamCredentials | None:
    """`upstream_credentials` by organization id, reading only the two columns it needs (one
    query). An organization that does not exist has none (never the shared default)."""
    row = (
        Organization.objects.filter(pk=organization_id)
        .values_list("upstream_api_key_encrypted", "upstream_base_url")
        .first()
    )
    if row is None:
        return None
    token, base_url = row
    if token:
        return _own(token, base_url)
    return shared_default_credentials()

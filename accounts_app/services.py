import secrets

from django.db import transaction
from django.utils import timezone

from accounts_app.models import ApiKey, Organization, Workspace, hash_key

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

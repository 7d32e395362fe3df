"""`x-api-key` authentication, workspace selection and the `anthropic-beta` check."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from core.errors import AuthenticationFailed, InvalidRequest, PermissionDeniedError
from core.logging import bind

LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's organization and the workspace this request acts in."""

    organization: object
    workspace: object
    api_key: object
    is_authenticated: bool = True

    @property
    def organization_id(self) -> str:
        return self.organization.id

    @property
    def workspace_id(self) -> str:
        return self.workspace.id


def check_beta_header(request) -> None:
    raw = request.META.get("HTTP_ANTHROPIC_BETA", "")
    values = {part.strip() for part in raw.split(",") if part.strip()}
    if settings.REQUIRED_BETA not in values:
        raise InvalidRequest(
            f"the anthropic-beta header must include {settings.REQUIRED_BETA}"
            + (f" (got {raw[:200]!r})" if raw else "")
        )


def resolve_principal(request) -> Principal:
    from accounts_app.models import ApiKey, Workspace, hash_key

    plain = request.META.get("HTTP_X_API_KEY", "")
    if not plain:
        # The official SDK (anthropic 2.x) sends its api_key as `Authorization: Bearer <key>`.
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer":
            plain = token.strip()
    if not plain:
        raise AuthenticationFailed("missing x-api-key header")
    if len(plain) > 200:
        raise AuthenticationFailed("invalid x-api-key")
    api_key = (
        ApiKey.objects.select_related("organization", "workspace")
        .filter(key_hash=hash_key(plain), revoked_at__isnull=True)
        .first()
    )
    if api_key is None:
        raise AuthenticationFailed("invalid x-api-key")
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)

    requested = request.META.get("HTTP_ANTHROPIC_WORKSPACE_ID", "").strip()
    if api_key.workspace_id:
        if requested and requested != api_key.workspace_id:
            raise PermissionDeniedError("this API key cannot act in the requested workspace")
        workspace = api_key.workspace
    elif requested:
        workspace = None
        # An id no workspace can have (NUL is not storable in PostgreSQL text) is simply unknown.
        if len(requested) <= 64 and "\x00" not in requested:
            workspace = Workspace.objects.filter(organization_id=api_key.organization_id, pk=requested).first()
        if workspace is None:
            raise PermissionDeniedError("this API key cannot act in the requested workspace")
    else:
        workspace = Workspace.objects.filter(organization_id=api_key.organization_id, is_default=True).first()
        if workspace is None:
            raise PermissionDeniedError("the organization has no default workspace")
    bind(organization_id=api_key.organization_id, workspace_id=workspace.id)
    return Principal(organization=api_key.organization, workspace=workspace, api_key=api_key)


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        principal = resolve_principal(request)
        check_beta_header(request)
        return principal, principal.api_key

    def authenticate_header(self, request):
        return "x-api-key"


class HasApiKey(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, Principal)

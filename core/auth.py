"""`x-api-key` authentication, workspace selection and the `anthropic-beta` check.

A key is looked up with one statement (the key, its organization and its workspace together; by
its SHA-256, never the plain key), and each process remembers the answer for AUTH_CACHE_SECONDS
(default 1 s; 0 turns the memo off). A change to a key, an organization or a workspace saved in a
process forgets everything that process remembered at once; other processes see it when their
entry expires, so a revoked key is refused everywhere at most AUTH_CACHE_SECONDS later. The memo
lives in process memory only: no shared cache is involved, so a Redis outage cannot affect
authentication.
"""

import threading
import time
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


def check_beta_header(request, required: str | None = None) -> None:
    required = required or settings.REQUIRED_BETA
    raw = request.META.get("HTTP_ANTHROPIC_BETA", "")
    values = {part.strip() for part in raw.split(",") if part.strip()}
    if required not in values:
        raise InvalidRequest(
            f"the anthropic-beta header must include {required}"
            + (f" (got {raw[:200]!r})" if raw else "")
        )


def _plain_key(request) -> str:
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
    return plain


def _record_use(api_key, now) -> bool:
    """Keep `last_used_at` within a minute of the last use while writing it at most once a minute.
    The condition is checked again in the statement, so processes whose remembered value is older
    than the stored one (another process wrote it) do not move it. True when a write was sent."""
    from django.db.models import Q

    from accounts_app.models import ApiKey

    if api_key.last_used_at is not None and now - api_key.last_used_at <= LAST_USED_RESOLUTION:
        return False
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
    return True


@dataclass
class _Remembered:
    api_key: object
    workspace: object
    expires_at: float


class PrincipalMemo:
    """Process-local memo of successful key lookups, keyed by (key hash, requested workspace id).

    Entries expire after AUTH_CACHE_SECONDS of the monotonic clock; `forget_all` drops every entry
    (called when a key, an organization or a workspace is saved or deleted in this process). Each
    hit hands out copies of the remembered rows, so a request never shares model instances with
    another. Unknown and revoked keys are never remembered; the workspace checks run on every
    request, remembered or not.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._entries: dict[tuple[str, str], _Remembered] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]):
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() >= entry.expires_at:
            self._entries.pop(key, None)
            return None
        return entry

    def put(self, key: tuple[str, str], api_key, workspace, seconds: float) -> _Remembered:
        entry = _Remembered(api_key, workspace, self.clock() + seconds)
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = entry
        return entry

    def forget_all(self) -> None:
        with self._lock:
            self._entries.clear()


principals = PrincipalMemo()


def forget_principals(**kwargs) -> None:
    """Signal receiver: a key, organization or workspace changed. Forget now, and again when the
    surrounding transaction commits, so no request of this process can remember the old rows."""
    from django.db import transaction
    from django.db.transaction import TransactionManagementError

    principals.forget_all()
    try:
        transaction.on_commit(principals.forget_all)
    except TransactionManagementError:  # manual transaction management: forgetting now is all we can do
        pass


def _clone(instance):
    """A shallow copy of a loaded model instance with a state of its own (cheaper than copy.copy,
    which goes through pickling support)."""
    from django.db.models.base import ModelState

    clone = instance.__class__.__new__(instance.__class__)
    clone.__dict__ = instance.__dict__.copy()
    clone._state = ModelState()
    clone._state.db, clone._state.adding = instance._state.db, False
    return clone


def _copies(api_key, workspace):
    """Fresh instances for one request, related to each other as the remembered ones are."""
    organization = _clone(api_key.organization)
    api_key = _clone(api_key)
    if workspace is not None:
        workspace = _clone(workspace)
        workspace._state.fields_cache = {"organization": organization}
    bound = workspace if api_key.workspace_id else None
    api_key._state.fields_cache = {"organization": organization, "workspace": bound}
    return api_key, workspace


def _look_up(key_hash: str, requested: str):
    """(memo entry or None, api_key, workspace or None) for this key and workspace header,
    remembered or read. Raises AuthenticationFailed for an unknown or revoked key."""
    from accounts_app.selectors import active_key_with_workspace

    seconds = settings.AUTH_CACHE_SECONDS
    if seconds > 0:
        entry = principals.get((key_hash, requested))
        if entry is not None:
            return (entry, *_copies(entry.api_key, entry.workspace))
    found = active_key_with_workspace(key_hash=key_hash, requested_workspace_id=requested)
    if found is None:
        raise AuthenticationFailed("invalid x-api-key")
    if seconds <= 0:
        return (None, *found)
    entry = principals.put((key_hash, requested), *found, seconds)
    return (entry, *_copies(*found))


def _check_workspace(api_key, workspace, requested: str) -> None:
    if api_key.workspace_id and requested and requested != api_key.workspace_id:
        raise PermissionDeniedError("this API key cannot act in the requested workspace")
    if workspace is None:
        if requested or api_key.workspace_id:
            raise PermissionDeniedError("this API key cannot act in the requested workspace")
        raise PermissionDeniedError("the organization has no default workspace")


def resolve_principal(request) -> Principal:
    """The caller: its key (unrevoked), organization and the workspace the request acts in."""
    from accounts_app.models import hash_key

    plain = _plain_key(request)
    requested = request.META.get("HTTP_ANTHROPIC_WORKSPACE_ID", "").strip()
    entry, api_key, workspace = _look_up(hash_key(plain), requested)
    now = timezone.now()
    if _record_use(api_key, now) and entry is not None:
        entry.api_key.last_used_at = now
    _check_workspace(api_key, workspace, requested)
    bind(organization_id=api_key.organization_id, workspace_id=workspace.id)
    return Principal(organization=api_key.organization, workspace=workspace, api_key=api_key)


class ApiKeyAuthentication(BaseAuthentication):
    def __init__(self, required_beta: str | None = None):
        # The beta this route's requests must name (None: settings.REQUIRED_BETA).
        self.required_beta = required_beta

    def authenticate(self, request):
        principal = resolve_principal(request)
        check_beta_header(request, self.required_beta)
        return principal, principal.api_key

    def authenticate_header(self, request):
        return "x-api-key"


class HasApiKey(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, Principal)

"""Reads of accounts on the request path.

Every API request authenticates, so the lookup of its key is one hand-written statement instead
of several ORM queries: compiling them cost more CPU than the rest of a typical read request.
The column lists come from the models, so the statement follows their fields.
"""

from functools import cache

from django.db import connection

from accounts_app.models import ApiKey, Organization, Workspace

# A workspace id longer than this, or holding NUL (which PostgreSQL text cannot store), names no
# workspace: it is never sent to the database.
MAX_WORKSPACE_ID_LENGTH = 64


class RowLoader:
    """Builds instances of `model` from the columns a statement selected for it, with the same
    conversions the ORM applies (JSON decoding, SQLite's datetimes)."""

    def __init__(self, model, alias: str):
        self.model = model
        self.fields = model._meta.concrete_fields
        quote = connection.ops.quote_name
        self.columns = [f"{alias}.{quote(field.column)}" for field in self.fields]
        self.converters = []
        for index, field in enumerate(self.fields):
            column = field.get_col(model._meta.db_table)
            functions = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if functions:
                self.converters.append((index, column, functions))

    def load(self, values):
        values = list(values)
        for index, column, functions in self.converters:
            for function in functions:
                values[index] = function(values[index], column, connection)
        return self.model.from_db(connection.alias, None, values)


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@cache
def _key_statement(by_id: bool):
    """(SQL, loaders) for a key with its organization, the workspace the key is bound to and, for a
    key bound to none, the workspace it would act in: the requested one (by_id) or the default."""
    loaders = (
        RowLoader(ApiKey, "k"), RowLoader(Organization, "o"), RowLoader(Workspace, "bw"), RowLoader(Workspace, "sw")
    )
    selected = ", ".join(column for loader in loaders for column in loader.columns)
    chosen = 'sw."id" = %s' if by_id else 'sw."is_default" = %s'
    sql = (
        f"SELECT {selected} FROM {_table(ApiKey)} k "
        f'JOIN {_table(Organization)} o ON o."id" = k."organization_id" '
        f'LEFT JOIN {_table(Workspace)} bw ON bw."id" = k."workspace_id" '
        f'LEFT JOIN {_table(Workspace)} sw ON k."workspace_id" IS NULL '
        f'AND sw."organization_id" = k."organization_id" AND {chosen} '
        'WHERE k."key_hash" = %s AND k."revoked_at" IS NULL'
    )
    return sql, loaders


def active_key_with_workspace(*, key_hash: str, requested_workspace_id: str = ""):
    """(api_key, workspace or None) for an unrevoked key, or None when there is no such key; one
    statement. `api_key.organization` and `api_key.workspace` come loaded.

    The workspace is the key's own when it is bound to one; otherwise the requested workspace if it
    belongs to the key's organization, or the organization's default when none is requested. The
    caller decides what a bound key sending another workspace's id means.
    """
    by_id = bool(requested_workspace_id)
    if by_id and (len(requested_workspace_id) > MAX_WORKSPACE_ID_LENGTH or "\x00" in requested_workspace_id):
        return _unknown_workspace(key_hash)
    sql, loaders = _key_statement(by_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, [requested_workspace_id if by_id else True, key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    return _assemble(row, loaders)


def _unknown_workspace(key_hash: str):
    """The key alone, for a requested workspace id no row can have: the workspace is None unless
    the key is bound (the caller then refuses the mismatch)."""
    found = active_key_with_workspace(key_hash=key_hash)
    if found is None:
        return None
    api_key, workspace = found
    return api_key, workspace if api_key.workspace_id else None


def _assemble(row, loaders):
    widths = [len(loader.fields) for loader in loaders]
    parts, start = [], 0
    for width in widths:
        parts.append(row[start : start + width])
        start += width
    key_loader, organization_loader, workspace_loader, _ = loaders
    api_key = key_loader.load(parts[0])
    organization = organization_loader.load(parts[1])
    bound = workspace_loader.load(parts[2]) if parts[2][0] is not None else None
    selected = workspace_loader.load(parts[3]) if parts[3][0] is not None else None
    for workspace in (bound, selected):
        if workspace is not None:
            workspace._state.fields_cache["organization"] = organization
    api_key._state.fields_cache["organization"] = organization
    api_key._state.fields_cache["workspace"] = bound
    return api_key, bound if api_key.workspace_id else selected

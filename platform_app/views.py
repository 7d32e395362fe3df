"""HTTP endpoints of the local platform (SPEC §9), shaped like the public Managed Agents API."""

from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidRequest
from core.pagination import page_response, parse_limit
from core.params import parse_bool, parse_choice, parse_created_filters, parse_id
from platform_app import selectors, serializers, services
from platform_app.serializers import parse


def _tenant(request) -> dict:
    return {"organization": request.user.organization, "workspace": request.user.workspace}


def _page_args(request) -> dict:
    page = request.query_params.get("page")
    if page is not None and len(page) > 1024:
        raise InvalidRequest("page: invalid or expired pagination cursor")
    return {"page": page or None, "limit": parse_limit(request.query_params.get("limit"))}


def _include_archived(request) -> bool:
    return bool(parse_bool("include_archived", request.query_params.get("include_archived")))


def _positive_int(name: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise InvalidRequest(f"{name}: must be a positive integer (got {raw[:20]!r})")
    return int(raw)


# --- agents ------------------------------------------------------------------------------------


class AgentListCreateView(APIView):
    def get(self, request):
        agents, versions, next_page = selectors.agent_list(
            **_tenant(request),
            include_archived=_include_archived(request),
            created=parse_created_filters(request.query_params, ops=("gte", "lte")),
            **_page_args(request),
        )
        data = [serializers.agent_json(agent, versions[agent.id]) for agent in agents if agent.id in versions]
        return Response(page_response(data, next_page))

    def post(self, request):
        fields = parse(serializers.AgentCreateInput, request.data)
        agent = services.agent_create(**_tenant(request), **fields)
        return Response(serializers.agent_json(agent, selectors.agent_version_get(agent=agent)))


class AgentDetailView(APIView):
    def get(self, request, agent_id):
        agent = selectors.agent_get(**_tenant(request), agent_id=agent_id)
        version = _positive_int("version", request.query_params.get("version"))
        return Response(serializers.agent_json(agent, selectors.agent_version_get(agent=agent, version=version)))

    def post(self, request, agent_id):
        agent = selectors.agent_get(**_tenant(request), agent_id=agent_id)
        fields = parse(serializers.AgentUpdateInput, request.data)
        agent = services.agent_update(agent=agent, **fields)
        return Response(serializers.agent_json(agent, selectors.agent_version_get(agent=agent)))


class AgentArchiveView(APIView):
    def post(self, request, agent_id):
        agent = services.agent_archive(agent=selectors.agent_get(**_tenant(request), agent_id=agent_id))
        return Response(serializers.agent_json(agent, selectors.agent_version_get(agent=agent)))


class AgentVersionListView(APIView):
    def get(self, request, agent_id):
        agent = selectors.agent_get(**_tenant(request), agent_id=agent_id)
        versions, next_page = selectors.agent_version_list(agent=agent, **_page_args(request))
        return Response(page_response([serializers.agent_json(agent, v) for v in versions], next_page))


# --- environments ------------------------------------------------------------------------------


class EnvironmentListCreateView(APIView):
    def get(self, request):
        rows, next_page = selectors.environment_list(
            **_tenant(request), include_archived=_include_archived(request), **_page_args(request)
        )
        return Response(page_response([serializers.environment_json(row) for row in rows], next_page))

    def post(self, request):
        fields = parse(serializers.EnvironmentCreateInput, request.data)
        environment = services.environment_create(**_tenant(request), **fields)
        return Response(serializers.environment_json(environment))


class EnvironmentDetailView(APIView):
    def get(self, request, environment_id):
        environment = selectors.environment_get(**_tenant(request), environment_id=environment_id)
        return Response(serializers.environment_json(environment))

    def post(self, request, environment_id):
        environment = selectors.environment_get(**_tenant(request), environment_id=environment_id)
        fields = parse(serializers.EnvironmentUpdateInput, request.data)
        return Response(serializers.environment_json(services.environment_update(environment=environment, **fields)))


class EnvironmentArchiveView(APIView):
    def post(self, request, environment_id):
        environment = selectors.environment_get(**_tenant(request), environment_id=environment_id)
        return Response(serializers.environment_json(services.environment_archive(environment=environment)))


# --- vaults ------------------------------------------------------------------------------------


class VaultListCreateView(APIView):
    def get(self, request):
        rows, next_page = selectors.vault_list(
            **_tenant(request), include_archived=_include_archived(request), **_page_args(request)
        )
        return Response(page_response([serializers.vault_json(row) for row in rows], next_page))

    def post(self, request):
        fields = parse(serializers.VaultCreateInput, request.data)
        return Response(serializers.vault_json(services.vault_create(**_tenant(request), **fields)))


class VaultDetailView(APIView):
    def get(self, request, vault_id):
        return Response(serializers.vault_json(selectors.vault_get(**_tenant(request), vault_id=vault_id)))

    def post(self, request, vault_id):
        vault = selectors.vault_get(**_tenant(request), vault_id=vault_id)
        fields = parse(serializers.VaultUpdateInput, request.data)
        return Response(serializers.vault_json(services.vault_update(vault=vault, **fields)))


class VaultArchiveView(APIView):
    def post(self, request, vault_id):
        vault = selectors.vault_get(**_tenant(request), vault_id=vault_id)
        return Response(serializers.vault_json(services.vault_archive(vault=vault)))


# --- sessions ----------------------------------------------------------------------------------

SESSION_STATUSES = ("rescheduling", "running", "idle", "terminated")


def _statuses(request) -> list[str] | None:
    raw = request.query_params.getlist("statuses[]") + request.query_params.getlist("statuses")
    values = [part for item in raw for part in item.split(",") if part]
    return [parse_choice("statuses", value, SESSION_STATUSES) for value in values] or None


class SessionListCreateView(APIView):
    def get(self, request):
        query = request.query_params
        parse_bool("include_archived", query.get("include_archived"))
        sessions, next_page = selectors.session_list(
            **_tenant(request),
            agent_id=parse_id("agent_id", query.get("agent_id")),
            agent_version=_positive_int("agent_version", query.get("agent_version")),
            deployment_id=parse_id("deployment_id", query.get("deployment_id")),
            memory_store_id=parse_id("memory_store_id", query.get("memory_store_id")),
            statuses=_statuses(request),
            created=parse_created_filters(query),
            order=parse_choice("order", query.get("order"), ("asc", "desc")) or "desc",
            **_page_args(request),
        )
        return Response({**page_response(serializers.sessions_json(sessions), next_page), "prev_page": None})

    def post(self, request):
        fields = parse(serializers.SessionCreateInput, request.data)
        key = request.headers.get("Idempotency-Key")
        session, _created = services.session_create(**_tenant(request), idempotency_key=key or None, **fields)
        return Response(serializers.session_json(session))


class SessionDetailView(APIView):
    def get(self, request, session_id):
        return Response(serializers.session_json(selectors.session_get(**_tenant(request), session_id=session_id)))

"""`/v1/organizations/webhooks`, driven unchanged by the SDK's `client.beta.organization.webhooks`:
parse, call one service or selector, render.

An organization-wide API key manages the organization's endpoints; a key bound to one workspace
manages endpoints of that workspace only (which receive only that workspace's events).
"""

from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import ApiKeyAuthentication
from webhooks_app import selectors, services
from webhooks_app.auth import WEBHOOKS_BETA
from webhooks_app.serializers import (
    WebhookEndpointCreateInput,
    WebhookEndpointUpdateInput,
    endpoint_to_dict,
    parse_list_query,
    validated,
)


def _scope(request) -> dict:
    api_key = request.user.api_key
    return {"organization": request.user.organization, "workspace": api_key.workspace if api_key.workspace_id else None}


def _endpoint(request, endpoint_id: str):
    return selectors.webhook_endpoint_get(**_scope(request), endpoint_id=endpoint_id)


class WebhooksView(APIView):
    def get_authenticators(self):
        return [ApiKeyAuthentication(required_beta=WEBHOOKS_BETA)]


class WebhookEndpointListCreateView(WebhooksView):
    def get(self, request):
        """Newest first by default (`order=asc` for oldest first); `after_id` / `before_id` page."""
        params = parse_list_query(request.query_params)
        rows, has_more = selectors.webhook_endpoint_page(**_scope(request), **params)
        return Response({
            "data": [endpoint_to_dict(row) for row in rows],
            "has_more": has_more,
            "first_id": rows[0].pk if rows else None,
            "last_id": rows[-1].pk if rows else None,
        })

    def post(self, request):
        """The response carries the signing secret (`whsec_…`); no other read returns it."""
        data = validated(WebhookEndpointCreateInput, request.data)
        endpoint, secret = services.webhook_endpoint_create(**_scope(request), **data)
        return Response(endpoint_to_dict(endpoint, signing_secret=secret))


class WebhookEndpointDetailView(WebhooksView):
    def get(self, request, endpoint_id):
        return Response(endpoint_to_dict(_endpoint(request, endpoint_id)))

    def post(self, request, endpoint_id):
        """Only the fields sent change; `state: enabled` clears `disabled_reason`."""
        endpoint = _endpoint(request, endpoint_id)
        data = validated(WebhookEndpointUpdateInput, request.data)
        return Response(endpoint_to_dict(services.webhook_endpoint_update(endpoint=endpoint, data=data)))

    def delete(self, request, endpoint_id):
        deleted = services.webhook_endpoint_delete(endpoint=_endpoint(request, endpoint_id))
        return Response({"id": deleted, "type": "webhook_endpoint_deleted"})


class WebhookEndpointSigningSecretView(WebhooksView):
    def post(self, request, endpoint_id):
        """A new secret, returned only here; the previous one keeps signing deliveries too for
        WEBHOOK_SECRET_ROTATION_GRACE_SECONDS."""
        secret = services.webhook_endpoint_regenerate_secret(endpoint=_endpoint(request, endpoint_id))
        return Response({"signing_secret": secret})

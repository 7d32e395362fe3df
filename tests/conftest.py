"""Shared fixtures. Tests run against the real PostgreSQL and Redis that `make test` points
DATABASE_URL and CELERY_BROKER_URL at."""

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer
from rest_framework.test import APIClient

from accounts_app.services import api_key_create, organization_get_or_create, workspace_get_or_create

BETA = "managed-agents-2026-04-01"

# The live server's listen backlog (socketserver's default is 5): tests that open 50 connections
# at once must not see refused connections on a busy machine, as no production server would.
ThreadedWSGIServer.request_queue_size = 128


class Tenant:
    """An organization, its default workspace and a plain API key for it."""

    def __init__(self, name: str, workspace_name: str | None = None):
        self.organization = organization_get_or_create(name=name)
        self.workspace = (
            workspace_get_or_create(organization=self.organization, name=workspace_name)
            if workspace_name
            else self.organization.workspaces.get(is_default=True)
        )
        self.api_key, self.key = api_key_create(
            organization=self.organization, workspace=self.workspace if workspace_name else None
        )

    def client(self, **extra_headers) -> APIClient:
        client = APIClient()
        headers = {"HTTP_X_API_KEY": self.key, "HTTP_ANTHROPIC_BETA": BETA, "HTTP_ANTHROPIC_VERSION": "2023-06-01"}
        headers.update(extra_headers)
        client.credentials(**headers)
        return client

    def sdk(self, base_url: str, **kwargs):
        import anthropic

        return anthropic.Anthropic(base_url=base_url, api_key=self.key, max_retries=0, **kwargs)


@pytest.fixture
def tenant(db) -> Tenant:
    return Tenant("Acme")


@pytest.fixture
def other_tenant(db) -> Tenant:
    return Tenant("Globex")


@pytest.fixture
def api(tenant) -> APIClient:
    return tenant.client()


@pytest.fixture
def sdk(live_server, tenant):
    """The official SDK pointed at a live server of this service (closed afterwards, so its
    keep-alive connection does not hold a database connection of the live server open)."""
    client = tenant.sdk(live_server.url)
    yield client
    client.close()

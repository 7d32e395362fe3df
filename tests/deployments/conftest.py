"""Fixtures for the deployments API tests."""

import pytest

from platform_app.models import Agent
from tests.deployments.helpers import base_body
from tests.factories import make_agent, make_environment, make_vault


@pytest.fixture
def agent(tenant) -> Agent:
    return make_agent(tenant)


@pytest.fixture
def environment(tenant):
    return make_environment(tenant)


@pytest.fixture
def vault(tenant):
    return make_vault(tenant)


@pytest.fixture
def body(agent, environment) -> dict:
    """A minimal valid create body (a fresh copy per test)."""
    return base_body(agent, environment)

"""Fixtures for the upstream simulators: a recording upstream, proxies and stubs on background
threads of the test process, each stopped after its test. No database is needed."""

import http.client
from urllib.parse import urlsplit

import pytest

from tests.upstream_sim.upstream import RecordingUpstream
from upstream_sim import start_proxy, start_stub


@pytest.fixture
def upstream():
    server = RecordingUpstream()
    yield server
    server.stop()


@pytest.fixture
def make_proxy():
    handles = []

    def make(**kwargs):
        handle = start_proxy(**kwargs)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.stop()


@pytest.fixture
def make_stub():
    handles = []

    def make(**kwargs):
        handle = start_stub(**kwargs)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.stop()


@pytest.fixture
def stub(make_stub):
    return make_stub()


def connect(url: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def sdk(url: str, **kwargs):
    import anthropic

    return anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, **kwargs)

"""The agent's config fetch honours HTTP_PROXY/http_proxy and NO_PROXY (agent.md §4): a real
forwarding proxy on 127.0.0.1 records the absolute-URI GET, and the agent becomes available;
with NO_PROXY naming the server it connects directly. Real server and agents."""

from __future__ import annotations

import pytest

from tests.support.agents import AgentFactory
from tests.support.proxy import recording_proxy
from tests.support.server import ServerProcess

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")


def _start_with(
    monkeypatch: pytest.MonkeyPatch, agent_factory: AgentFactory, env: dict[str, str]
) -> str:
    """Start an agent whose environment holds exactly these proxy variables; its node name.
    Only the agent process sees them (the test's own HTTP client connects directly)."""
    agent = agent_factory(start=False)
    with monkeypatch.context() as patch:
        for name in PROXY_VARIABLES:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        agent.start(wait=False)
    agent.wait_available()
    return agent.name


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
def test_config_fetch_goes_through_the_proxy(
    server: ServerProcess,
    agent_factory: AgentFactory,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    with recording_proxy() as proxy:
        node = _start_with(monkeypatch, agent_factory, {variable: proxy.url})
        fetches = [r for r in proxy.requests if f"/pushy/config/{node}?" in r]
    assert fetches, proxy.requests
    assert all(r.startswith(f"GET {server.http_url}/organizations/") for r in fetches)


def test_no_proxy_naming_the_server_connects_directly(
    server: ServerProcess, agent_factory: AgentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with recording_proxy() as proxy:
        _start_with(
            monkeypatch,
            agent_factory,
            {"HTTP_PROXY": proxy.url, "NO_PROXY": "example.com, 127.0.0.1"},
        )
        assert proxy.requests == []

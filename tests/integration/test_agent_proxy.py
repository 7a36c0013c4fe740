"""The agent's config fetch honours HTTPS_PROXY/HTTP_PROXY (either case) and NO_PROXY (agent.md
§4): a real forwarding proxy on 127.0.0.1 records the absolute-URI GET (http) or the CONNECT
tunnel (https, the server with a TLS certificate), and the agent becomes available; with
NO_PROXY naming the server it connects directly. Real server and agents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.agents import AgentFactory
from tests.support.proxy import recording_proxy
from tests.support.server import ServerProcess
from tests.support.tls import self_signed_certificate

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")


def _start_with(
    monkeypatch: pytest.MonkeyPatch,
    agent_factory: AgentFactory,
    env: dict[str, str],
    on: ServerProcess | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """Start an agent whose environment holds exactly these proxy variables; its node name.
    Only the agent process sees them (the test's own HTTP client connects directly)."""
    agent = agent_factory(start=False, on=on, extra=extra)
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


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
def test_https_config_fetch_tunnels_through_the_proxy(
    server_factory: Callable[..., ServerProcess],
    agent_factory: AgentFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    variable: str,
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the test's own HTTP client trusts it too
    srv = server_factory(http={"tls_cert": str(cert), "tls_key": str(key)})
    assert srv.http_url.startswith("https://")
    port = srv.http_url.rsplit(":", 1)[1]
    with recording_proxy() as proxy:
        _start_with(
            monkeypatch, agent_factory, {variable: proxy.url}, on=srv, extra={"ca_file": str(cert)}
        )
        tunnels = list(proxy.requests)
    assert tunnels, "no request reached the proxy"
    assert set(tunnels) == {f"CONNECT 127.0.0.1:{port}"}

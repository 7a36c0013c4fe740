"""Proxy choice for the config fetch (agent.md §4), and the fetch itself through a real local
proxy: CONNECT tunnel to a real TLS server (certificate checked against the server's name)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushjobs.agent.config import AgentConfig
from pushjobs.agent.proxy import Proxy, ProxyError, parse_proxy, proxy_for
from pushjobs.agent.session import FetchError, fetch_config_document
from pushjobs.protocol.keys import generate_rsa_key
from tests.support.proxy import recording_proxy
from tests.support.tls import self_signed_certificate

URL = "https://push.example.com:10003/organizations/acme"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_scheme_picks_the_variable() -> None:
    proxies = {"https": "http://proxy:3128", "http": "http://plain:8080"}
    assert proxy_for(URL, proxies) == Proxy("proxy", 3128, None)
    assert proxy_for("http://push.example.com/x", proxies) == Proxy("plain", 8080, None)
    assert proxy_for(URL, {"http": "http://plain:8080"}) is None


@pytest.mark.parametrize(
    "no_proxy", ["example.com", ".example.com", "push.example.com", "*", "a.org, push.example.com"]
)
def test_no_proxy_matches_host_and_domain_suffix(no_proxy: str) -> None:
    assert proxy_for(URL, {"https": "http://proxy:3128", "no": no_proxy}) is None


@pytest.mark.parametrize("no_proxy", ["other.com", "ample.com", "push.example.co"])
def test_no_proxy_other_names_still_use_the_proxy(no_proxy: str) -> None:
    assert proxy_for(URL, {"https": "http://proxy:3128", "no": no_proxy}) is not None


def test_localhost_gets_no_special_treatment() -> None:
    # unlike browsers, urllib's rules on Linux bypass only what NO_PROXY names
    assert proxy_for("http://127.0.0.1:10003/x", {"http": "http://p:1"}) == Proxy("p", 1, None)
    assert proxy_for("http://localhost:10003/x", {"http": "http://p:1", "no": "localhost"}) is None


def test_proxy_url_forms() -> None:
    assert parse_proxy("proxy.corp:3128") == Proxy("proxy.corp", 3128, None)
    assert parse_proxy("http://proxy.corp") == Proxy("proxy.corp", 80, None)
    with_user = parse_proxy("http://bob:s%40cret@proxy.corp:3128/")
    assert with_user.authorization == "Basic Ym9iOnNAY3JldA=="  # bob:s@cret
    assert "cret" not in with_user.shown
    for bad in ("socks5://proxy:1080", "https://proxy:443", "http://proxy:port", "http://"):
        with pytest.raises(ProxyError):
            parse_proxy(bad)


class _ConfigHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "host": self.headers["Host"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(https URL, CA file) of a TLS server that answers every GET with its path as JSON."""
    cert, key = self_signed_certificate(tmp_path)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ConfigHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/organizations/acme", cert
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def _fetch(url: str, ca_file: Path) -> object:
    cfg = AgentConfig(server_url=url, org="acme", node_name="web1", ca_file=str(ca_file))
    return fetch_config_document(cfg, generate_rsa_key(), "ccpk")


def test_https_fetch_tunnels_through_connect(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file = tls_server
    port = url.split(":")[2].split("/")[0]
    with recording_proxy() as proxy:
        user_url = proxy.url.replace("http://", "http://bob:pw@")
        monkeypatch.setenv("https_proxy", user_url)
        doc = _fetch(url, ca_file)
    assert proxy.requests == [f"CONNECT 127.0.0.1:{port}"]
    assert proxy.authorizations == ["Basic Ym9iOnB3"]  # bob:pw, to the proxy only
    assert isinstance(doc, dict)
    assert doc["path"].startswith("/organizations/acme/pushy/config/web1?")
    assert doc["host"] == f"127.0.0.1:{port}"


def test_https_fetch_without_proxy_variables_is_direct(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file = tls_server
    with recording_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        doc = _fetch(url, ca_file)
    assert proxy.requests == []
    assert isinstance(doc, dict)


def test_unusable_proxy_variable_is_a_permanent_fetch_error(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file = tls_server
    monkeypatch.setenv("https_proxy", "socks5://127.0.0.1:1080")
    with pytest.raises(FetchError) as caught:
        _fetch(url, ca_file)
    assert not caught.value.transient
    assert "only http:// proxies" in caught.value.message

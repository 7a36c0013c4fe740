"""The HTTP proxy of the config fetch, from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (agent.md §4).

Pure: the caller passes the proxy table (`urllib.request.getproxies_environment()`, which reads
both the upper- and lower-case variables, lower-case first). ZeroMQ connections never use it.
"""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request
from collections.abc import Mapping

from pushjobs.protocol.compat import dataclass

DEFAULT_PROXY_PORT = 80  # as urllib and http.client: a proxy URL without a port means port 80


@dataclass(frozen=True)
class Proxy:
    """A forwarding proxy: plain HTTP requests go to it with absolute URIs, HTTPS through a
    CONNECT tunnel."""

    host: str
    port: int
    authorization: str | None  # the `Proxy-Authorization` value when the URL has credentials

    @property
    def shown(self) -> str:
        """`host:port`, for log lines (never the credentials)."""
        return f"{self.host}:{self.port}"


class ProxyError(ValueError):
    """A proxy variable that cannot be used."""


def parse_proxy(value: str) -> Proxy:
    """`http://[user:password@]host[:port]` (the scheme may be left out) → a Proxy."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "http":
        raise ProxyError(f"proxy {value!r}: only http:// proxies are supported")
    try:
        port = parts.port or DEFAULT_PROXY_PORT
    except ValueError:
        raise ProxyError(f"proxy {value!r}: bad port") from None
    if not parts.hostname:
        raise ProxyError(f"proxy {value!r}: no host")
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return Proxy(parts.hostname, port, authorization)


def proxy_for(url: str, proxies: Mapping[str, str]) -> Proxy | None:
    """The proxy a request for `url` goes through, or None for a direct connection.

    `proxies` maps a scheme (`http`, `https`) to a proxy URL and `no` to the `NO_PROXY` list:
    comma-separated host names, domain suffixes (`example.com` also matches `a.example.com`),
    `host:port` entries, or `*` for everything — matched by `urllib.request`'s rules, which
    know no address ranges.
    """
    parts = urllib.parse.urlsplit(url)
    chosen = proxies.get(parts.scheme)
    if not chosen:
        return None
    host = parts.hostname or ""
    target = f"{host}:{parts.port}" if parts.port else host
    # what `urllib.request.proxy_bypass` runs on Linux, given the table (typeshed lacks it)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(target, dict(proxies)):
        return None
    return parse_proxy(chosen)

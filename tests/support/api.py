"""Chef-signed HTTP requests to a test server, blocking and from trio code.

`prepare` builds one request the way every test client here sends it: a JSON body for a dict or
list (with `Content-Type: application/json`), `Accept: application/json` unless `headers` say
otherwise, and the `X-Ops-*` headers of a Chef signature (protocol 1.3 by default) over the path
without its query string. `Prepared.send` sends it, blocking; `Prepared.send_async` from trio code
(on a given `httpx.AsyncClient` or a fresh one). `api` is a request as the org admin of a test
server from trio code, with org-relative paths (`jobs/...` means
`/organizations/<org>/pushy/jobs/...`); `ServerProcess.request` is the blocking one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from pushjobs.protocol.chef_auth import sign_request
from pushjobs.protocol.keys import load_private_key

KeyLike = RSAPrivateKey | str | Path | bytes
Body = bytes | dict[str, Any] | list[Any] | None


class AdminView(Protocol):
    """What `api` needs of a test server (`tests.support.server.ServerProcess` has it)."""

    @property
    def http_url(self) -> str: ...

    org: str
    admin_user: str
    admin_key: RSAPrivateKey


def load_key(key: KeyLike) -> RSAPrivateKey:
    """A private key from a key object, PEM bytes or the path of a PEM file."""
    if isinstance(key, str | Path):
        return load_private_key(Path(key).read_bytes())
    if isinstance(key, bytes):
        return load_private_key(key)
    return key


def org_path(org: str, path: str) -> str:
    """`path` when absolute, else the org-relative path under `/organizations/<org>/pushy/`."""
    return path if path.startswith("/") else f"/organizations/{org}/pushy/{path}"


def signed_headers(
    method: str, path: str, body: bytes, user: str, key: KeyLike, *, version: str = "1.3"
) -> dict[str, str]:
    """The `X-Ops-*` headers signing a request for exactly `path` (give it without a query)."""
    return sign_request(
        method=method,
        path=path,
        body=body,
        user_id=user,
        private_key=load_key(key),
        version=version,
    )


@dataclass(frozen=True)
class Prepared:
    """A signed request ready for httpx."""

    method: str
    url: str
    content: bytes
    headers: dict[str, str]

    def send(self, timeout: float = 30.0) -> httpx.Response:
        """Send it, blocking."""
        return httpx.request(
            self.method, self.url, content=self.content, headers=self.headers, timeout=timeout
        )

    async def send_async(
        self,
        *,
        params: dict[str, str] | None = None,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        """Send it from trio code, on `client` (with its own timeout) or on a fresh client;
        `params`: a query string httpx adds to the URL."""
        if client is None:
            async with httpx.AsyncClient(timeout=timeout) as fresh:
                return await self.send_async(params=params, client=fresh)
        return await client.request(
            self.method, self.url, params=params, content=self.content, headers=self.headers
        )


def prepare(
    http_url: str,
    method: str,
    path: str,
    *,
    user: str,
    key: KeyLike,
    body: Body = None,
    headers: dict[str, str] | None = None,
    version: str = "1.3",
) -> Prepared:
    """Sign `method path` (absolute path, may carry a query) as `user`; see the module doc."""
    raw = json.dumps(body).encode() if isinstance(body, dict | list) else (body or b"")
    signed = signed_headers(method, path.split("?")[0], raw, user, key, version=version)
    all_headers = {"Accept": "application/json", **signed}
    if isinstance(body, dict | list):
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    return Prepared(method, http_url + path, raw, all_headers)


async def api(
    srv: AdminView,
    method: str,
    path: str,
    *,
    body: Body = None,
    headers: dict[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> httpx.Response:
    """A request signed as the org admin, from trio code; `path` absolute or org-relative."""
    p = prepare(
        srv.http_url,
        method,
        org_path(srv.org, path),
        user=srv.admin_user,
        key=srv.admin_key,
        body=body,
        headers=headers,
    )
    return await p.send_async(client=client)


async def server_status(srv: AdminView) -> dict[str, Any]:
    """The unsigned `GET /pushy/_status` document, from trio code."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(srv.http_url + "/pushy/_status")
    assert response.status_code == 200
    return response.json()

"""Shared set-up for the HTTP layer tests: real parts behind `HttpDeps`, and signed requests.

The Starlette app runs in-process through `httpx.ASGITransport`; the store is a real
`SqliteStore` in a temp dir behind `AsyncStore`; session keys, node registry, job manager and
principals are the real ones; keys are real RSA keys and every request is signed with the
protocol library's `sign_request`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pushjobs.protocol.chef_auth import sign_request
from pushjobs.protocol.keys import generate_rsa_key, public_key_pem
from pushjobs.protocol.timestamps import StrictClock
from pushjobs.server.config import Settings
from pushjobs.server.http.app import create_app
from pushjobs.server.http.deps import HttpDeps
from pushjobs.server.http.routes import ROUTES
from pushjobs.server.http.routing import Route
from pushjobs.server.jobs.manager import JobManager
from pushjobs.server.nodes.registry import NodeRegistry
from pushjobs.server.nodes.sessions import SessionKeys
from pushjobs.server.principals.embedded import EmbeddedPrincipals
from pushjobs.server.store.interfaces import AsyncStore
from pushjobs.server.store.sqlite import SqliteStore

BASE_URL = "http://push.test"
ORG = "acme"
OTHER_ORG = "globex"
INCARNATION_ID = "e0d96969-db1a-4df5-aabd-a029de131ca3"
SERVER_CURVE_PUBLIC = "zjIPNB<)E:/l5xh^4eo-Uu8rajEB=@wSr>VGMFRY"
# A real Z85 CURVE public key (from the Ruby client vectors) and its URL-encoded form.
CLIENT_CCPK = "88UPpcf#SZFHVBSne^zXWnt<F^6PvP*^:%5G.Z<y"


@functools.cache
def rsa_key(index: int) -> Any:
    """A real 2048-bit RSA key, generated once per index for the whole test session."""
    return generate_rsa_key(2048)


def client_for(deps: HttpDeps, routes: tuple[Route, ...] = ROUTES) -> httpx.AsyncClient:
    """An HTTP client talking to `create_app(deps, routes)` in-process."""
    transport = httpx.ASGITransport(app=create_app(deps, routes))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


@dataclass
class Harness:
    """The real parts, the `HttpDeps` built from them, the store and a client bound to the app."""

    deps: HttpDeps
    sessions: SessionKeys
    nodes: NodeRegistry
    jobs: JobManager
    store: SqliteStore
    db_path: Path
    client: httpx.AsyncClient
    keys: dict[str, Any] = field(default_factory=dict)  # principal name -> private key

    async def serve(self, deps: HttpDeps, routes: tuple[Route, ...] = ROUTES) -> None:
        """Answer further requests with an app built from `deps` and `routes`."""
        await self.client.aclose()
        self.deps = deps
        self.client = client_for(deps, routes)

    async def serve_with(self, **changes: Any) -> None:
        """Answer further requests with the same dependencies but for `changes`."""
        await self.serve(dataclasses.replace(self.deps, **changes))

    async def request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = None,
        key: Any = None,
        body: bytes = b"",
        version: str = "1.3",
        query: str = "",
        headers: Mapping[str, str] | None = None,
        sign_path: str | None = None,
        sign_body: bytes | None = None,
        timestamp: str | None = None,
        server_api_version: str | None = None,
    ) -> httpx.Response:
        """Send a request, Chef-signed as `user` (with `key` or the user's own key) if given."""
        all_headers: dict[str, str] = {}
        if user is not None:
            all_headers.update(
                sign_request(
                    method=method,
                    path=sign_path if sign_path is not None else path,
                    body=body if sign_body is None else sign_body,
                    user_id=user,
                    private_key=key if key is not None else self.keys[user],
                    version=version,
                    timestamp=timestamp,
                    server_api_version=server_api_version,
                )
            )
        all_headers.update(headers or {})
        url = BASE_URL + path + (f"?{query}" if query else "")
        return await self.client.request(method, url, content=body, headers=all_headers)

    def add_user(
        self, name: str, key_index: int, *, orgs: tuple[str, ...] = (ORG,), admin: bool = False
    ) -> None:
        self.store.create_user(name, public_key_pem(rsa_key(key_index).public_key()))
        self.keys[name] = rsa_key(key_index)
        for org in orgs:
            self.store.add_org_user(org, name, admin=admin)

    def add_client(self, name: str, key_index: int, *, org: str = ORG, admin: bool = False) -> None:
        self.store.create_client(
            org, name, public_key_pem(rsa_key(key_index).public_key()), admin=admin
        )
        self.keys[name] = rsa_key(key_index)


def make_harness(
    tmp_path: Path, *, curve: bool = True, heartbeat_interval: float = 10.0
) -> Harness:
    """A harness with orgs `acme` and `globex` (each with its `admins` group), no principals."""
    settings = Settings(server_name="push.example.com", data_dir=tmp_path)
    settings.timing.heartbeat_interval = heartbeat_interval
    settings.zeromq.disable_curve_encryption = not curve
    db_path = tmp_path / "pushjobs.db"
    store = SqliteStore(db_path)
    async_store = AsyncStore(store)
    sessions = SessionKeys(lifetime=settings.timing.config_lifetime)
    nodes = NodeRegistry(timing=settings.timing, sessions=sessions)
    jobs = JobManager(settings=settings, store=async_store, nodes=nodes, clock=StrictClock())
    deps = HttpDeps(
        settings=settings,
        store=async_store,
        principals=EmbeddedPrincipals(async_store),
        sessions=sessions,
        nodes=nodes,
        jobs=jobs,
        incarnation_id=INCARNATION_ID,
        server_public_pem=public_key_pem(rsa_key(0).public_key()),
        curve_public=SERVER_CURVE_PUBLIC if curve else None,
        heartbeat_port=10000,
        command_port=10002,
    )
    store.create_org(ORG, "Acme")
    store.create_org(OTHER_ORG, "Globex")
    return Harness(
        deps=deps,
        sessions=sessions,
        nodes=nodes,
        jobs=jobs,
        store=store,
        db_path=db_path,
        client=client_for(deps),
    )


def error_of(response: httpx.Response) -> Any:
    """The `error` member of a JSON error body, after checking the error Content-Type."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]

"""A fake Chef Server for servers with `[principals] backend = "chef-server"`.

The Chef Server is an external system, so tests serve a small fake of it: the Chef Server API
and the internal principals endpoint, two Starlette apps on ephemeral loopback ports, in a
thread, checking the superuser's signatures with the protocol library. Its users, clients and
groups exist only in the fake (`add`, `groups`). `chef_settings` is the `[principals]` table
of a server that uses it; fixture `fake_chef` gives a private one (import
`fake_chef_fixture` into a test module to use it).
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pushjobs.protocol.chef_auth import validate_auth_headers, verify_request
from pushjobs.protocol.errors import ChefAuthError
from pushjobs.protocol.keys import generate_rsa_key, private_key_pem, public_key_pem
from tests.support.procs import started

if TYPE_CHECKING:
    from hypercorn.typing import Framework

ORG = "chefco"
GROUP_ORG = "groupco"  # its own org: the groups of one test must not restrict the others
SUPERUSER = "pivotal"


@functools.cache
def rsa_key(index: int) -> Any:
    """RSA key number `index` of this test session (made once: key generation is slow)."""
    return generate_rsa_key(2048)


class FakeChefServer:
    """Chef Server API + principals endpoint served by hypercorn in a background thread."""

    def __init__(self, superuser_key: Any) -> None:
        self.superuser_public = superuser_key.public_key()
        self.orgs: dict[str, str] = {ORG: uuid.uuid4().hex, GROUP_ORG: uuid.uuid4().hex}
        self.principals: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.groups: dict[tuple[str, str], dict[str, list[str]]] = {}
        self.signed_ok = 0
        self.signed_bad = 0
        self.principal_requests = 0
        self.chef_url = ""
        self.principals_url = ""
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._shutdown: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- data ------------------------------------------------------------------------------------
    def add(self, name: str, kind: str, key: Any, *, member: bool = True, org: str = ORG) -> None:
        self.principals.setdefault((org, name), []).append(
            {
                "name": name,
                "type": kind,
                "public_key": public_key_pem(key.public_key()),
                "authz_id": uuid.uuid4().hex,
                "org_member": member,
            }
        )

    # -- the two apps ----------------------------------------------------------------------------
    async def _chef_api(self, request: Request) -> JSONResponse:
        path = request.scope["raw_path"].decode()
        headers = {k.decode("latin-1").lower(): v.decode() for k, v in request.headers.raw}
        try:
            auth = validate_auth_headers(headers, time.time())
        except ChefAuthError as exc:
            self.signed_bad += 1
            return JSONResponse({"error": [exc.message]}, status_code=exc.status)
        body = await request.body()
        if auth.user_id != SUPERUSER or not verify_request(
            auth, method=request.method, path=path, body=body, public_key=self.superuser_public
        ):
            self.signed_bad += 1
            return JSONResponse({"error": ["Invalid signature"]}, status_code=401)
        self.signed_ok += 1
        parts = path.strip("/").split("/")
        guid = self.orgs.get(parts[1]) if len(parts) >= 2 else None
        if parts[0] != "organizations" or guid is None:
            return JSONResponse({"error": ["not found"]}, status_code=404)
        if len(parts) == 2:
            return JSONResponse({"name": parts[1], "full_name": parts[1].title(), "guid": guid})
        group = self.groups.get((parts[1], parts[3])) if len(parts) == 4 else None
        if parts[2] != "groups" or group is None:
            return JSONResponse({"error": ["Cannot load group"]}, status_code=404)
        return JSONResponse({"actors": [], "groupname": parts[3], "orgname": parts[1], **group})

    async def _principals_api(self, request: Request) -> JSONResponse:
        self.principal_requests += 1
        if request.headers.get("x-ops-server-api-version") != "1":
            return JSONResponse({"error": ["api version"]}, status_code=406)
        parts = request.scope["raw_path"].decode().strip("/").split("/")
        if len(parts) != 4 or parts[0] != "organizations" or parts[2] != "principals":
            return JSONResponse({"error": ["not found"]}, status_code=404)
        if parts[1] not in self.orgs:
            return JSONResponse({"not_found": "org"}, status_code=404)
        found = self.principals.get((parts[1], parts[3]))
        if not found:
            return JSONResponse({"not_found": "principal"}, status_code=404)
        return JSONResponse({"principals": found})

    # -- process control -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fake-chef", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise AssertionError(f"fake Chef Server did not start: {self._error!r}")

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test thread through start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._shutdown = trio.Event()
        route = "/{path:path}"
        apps = [
            Starlette(routes=[Route(route, self._chef_api)]),
            Starlette(routes=[Route(route, self._principals_api)]),
        ]
        urls = []
        async with trio.open_nursery() as nursery:
            for app in apps:
                config = Config()
                config.bind = ["127.0.0.1:0"]
                config.accesslog = None
                config.graceful_timeout = 1.0
                # Starlette types ASGI scopes as plain mappings, hypercorn as TypedDicts.
                framework = cast("Framework", app)
                binds = await nursery.start(
                    functools.partial(
                        serve, framework, config, shutdown_trigger=self._shutdown.wait
                    )
                )
                urls.append(binds[0])
            self.chef_url, self.principals_url = urls
            self._ready.set()

    def stop(self) -> None:
        if self._thread is None or self._token is None or self._shutdown is None:
            return
        if self._thread.is_alive():
            trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
        self._thread.join(15)
        assert not self._thread.is_alive(), "fake Chef Server did not stop"


@pytest.fixture(name="fake_chef")
def fake_chef_fixture() -> Iterator[FakeChefServer]:
    """A private fake Chef Server (for tests that stop it)."""
    with started(FakeChefServer(rsa_key(0))) as fake:
        yield fake


def chef_settings(fake: FakeChefServer, base: Path, **extra: Any) -> dict[str, Any]:
    key_path = base / "pivotal.pem"
    key_path.write_bytes(private_key_pem(rsa_key(0)))
    return {
        "backend": "chef-server",
        "chef_server_url": fake.chef_url,
        "principals_url": fake.principals_url,
        "superuser_name": SUPERUSER,
        "superuser_key": str(key_path),
        "cache_ttl": 1,
        **extra,
    }

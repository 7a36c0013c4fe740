"""A real pushjobs server with `[principals] backend = "chef-server"` against a fake Chef Server.

The Chef Server is an external system, so this module serves a small fake of it (Chef Server API
and the internal principals endpoint, two Starlette apps on ephemeral loopback ports, in a
thread) that checks the superuser's signatures with the protocol library. Our server is the real
`pushjobs-server run` process; the users, clients and groups exist only in the fake.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from tests.support.peer import open_peer
from tests.support.server import ServerProcess, wait_for

ORG = "chefco"
GROUP_ORG = "groupco"  # its own org: the groups of one test must not restrict the others
SUPERUSER = "pivotal"


@functools.cache
def rsa_key(index: int) -> Any:
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
                binds = await nursery.start(
                    functools.partial(serve, app, config, shutdown_trigger=self._shutdown.wait)
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


@pytest.fixture
def fake_chef() -> Iterator[FakeChefServer]:
    """A private fake Chef Server (for tests that stop it)."""
    fake = FakeChefServer(rsa_key(0))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def shared_chef() -> Iterator[FakeChefServer]:
    """One fake Chef Server for the module's non-destructive tests (unique names per test)."""
    fake = FakeChefServer(rsa_key(0))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


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


@pytest.fixture(scope="module")
def chef_server(
    shared_chef: FakeChefServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real server using the shared fake Chef Server as its principal backend."""
    base = tmp_path_factory.mktemp("chef-server")
    srv = ServerProcess(base, {"principals": chef_settings(shared_chef, base)})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def api_path(resource: str, org: str = ORG) -> str:
    return f"/organizations/{org}/pushy/{resource}"


def error(response: Any) -> list[str]:
    assert response.headers["content-type"] == "application/json", response.text
    return response.json()["error"]


def test_principals_known_only_to_chef(shared_chef: FakeChefServer, chef_server: ServerProcess):
    fake_chef = shared_chef
    fake_chef.add("chefuser", "user", rsa_key(1))
    fake_chef.add("node1", "client", rsa_key(2))
    fake_chef.add("outsider", "user", rsa_key(3), member=False)
    srv = chef_server

    as_user = srv.get(api_path("node_states"), user="chefuser", key=rsa_key(1))
    assert as_user.status_code == 200, as_user.text
    assert isinstance(as_user.json(), list)
    # A plain client (a node's key) may not read: only its own config (security issue 15, F4).
    as_client = srv.get(api_path("node_states"), user="node1", key=rsa_key(2))
    assert as_client.status_code == 403, as_client.text
    assert error(as_client) == [
        "User or client 'node1' does not have access to that action on this server."
    ]

    outsider = srv.get(api_path("node_states"), user="outsider", key=rsa_key(3))
    assert outsider.status_code == 403
    assert error(outsider) == [f"'outsider' is not associated with organization '{ORG}'"]
    unknown = srv.get(api_path("node_states"), user="ghost", key=rsa_key(3))
    assert unknown.status_code == 401
    assert error(unknown) == [
        "Failed to authenticate as 'ghost'. Ensure that your node_name and client key are correct."
    ]
    wrong_key = srv.get(api_path("node_states"), user="chefuser", key=rsa_key(2))
    assert wrong_key.status_code == 401
    assert error(wrong_key) == ["Invalid signature for user or client 'chefuser'"]

    # The embedded registry is not consulted: the locally created org and admin are unknown.
    local = srv.get(api_path("node_states", org=srv.org))
    assert local.status_code == 404
    assert error(local) == [f"organization '{srv.org}' does not exist."]

    assert fake_chef.signed_ok > 0 and fake_chef.signed_bad == 0
    assert fake_chef.principal_requests > 0


def test_chef_groups_decide_access(shared_chef: FakeChefServer, chef_server: ServerProcess):
    fake_chef = shared_chef
    fake_chef.add("reader", "user", rsa_key(1), org=GROUP_ORG)
    fake_chef.add("boss", "user", rsa_key(4), org=GROUP_ORG)
    fake_chef.add("node1", "client", rsa_key(2), org=GROUP_ORG)
    fake_chef.groups[(GROUP_ORG, "admins")] = {"users": ["boss"], "clients": [], "groups": []}
    fake_chef.groups[(GROUP_ORG, "pushy_job_readers")] = {
        "users": [],
        "clients": ["node1"],
        "groups": ["ops"],
    }
    fake_chef.groups[(GROUP_ORG, "ops")] = {"users": ["boss"], "clients": [], "groups": []}
    srv = chef_server
    denied_text = ["User or client 'reader' does not have access to that action on this server."]

    denied = srv.get(api_path("node_states", GROUP_ORG), user="reader", key=rsa_key(1))
    assert denied.status_code == 403
    assert error(denied) == denied_text
    assert (
        srv.get(api_path("node_states", GROUP_ORG), user="node1", key=rsa_key(2)).status_code == 200
    )
    # Transitive through the nested group `ops`.
    assert (
        srv.get(api_path("node_states", GROUP_ORG), user="boss", key=rsa_key(4)).status_code == 200
    )

    # Write rule without pushy_job_writers: Chef's `admins` decides. The job is stored against
    # the organization mirrored into the server's database.
    job = {"command": "chef-client", "nodes": ["node1"]}
    refused = srv.post(api_path("jobs", GROUP_ORG), body=job, user="reader", key=rsa_key(1))
    assert refused.status_code == 403
    assert error(refused) == denied_text
    created = srv.post(api_path("jobs", GROUP_ORG), body=job, user="boss", key=rsa_key(4))
    assert created.status_code == 201, created.text
    job_id = created.json()["uri"].rsplit("/", 1)[1]
    shown = srv.get(api_path(f"jobs/{job_id}", GROUP_ORG), user="boss", key=rsa_key(4))
    assert shown.status_code == 200 and shown.json()["command"] == "chef-client"

    # Membership changes in Chef take effect once the cache entry expires (cache_ttl = 1 s).
    fake_chef.groups[(GROUP_ORG, "ops")] = {
        "users": ["boss", "reader"],
        "clients": [],
        "groups": [],
    }
    wait_for(
        lambda: (
            srv.get(api_path("node_states", GROUP_ORG), user="reader", key=rsa_key(1)).status_code
            == 200
        ),
        timeout=15,
        what="reader admitted through the updated group",
    )


async def test_node_of_a_chef_client_connects(
    shared_chef: FakeChefServer, chef_server: ServerProcess
) -> None:
    fake_chef = shared_chef
    # Config (client name = node name), session key, ZeroMQ handshake: the broker's
    # organization check also goes through the Chef backend.
    fake_chef.add("web1", "client", rsa_key(2))
    fake_chef.add("watcher", "user", rsa_key(1))  # reads node_states: a client may not
    srv = chef_server
    reader = ("watcher", rsa_key(1))
    async with open_peer(
        srv.http_url, ORG, "web1", rsa_key(2), answer_aborts=True, reader=reader
    ) as peer:
        peer.start_heartbeats()
        state = await peer.wait_node_state(availability="available", timeout=15)
        assert state == {"node_name": "web1", "status": "online", "availability": "available"}
        assert peer.errors == []


def test_502_when_chef_is_gone(fake_chef: FakeChefServer, server_factory: Any, tmp_path: Path):
    fake_chef.add("chefuser", "user", rsa_key(1))
    srv = server_factory(principals=chef_settings(fake_chef, tmp_path))
    assert srv.get(api_path("node_states"), user="chefuser", key=rsa_key(1)).status_code == 200
    fake_chef.stop()
    expected = {
        "error": ["Failed to connect to the principal backend: cannot connect to the Chef Server"]
    }
    last: list[Any] = []

    def gone() -> bool:
        response = srv.get(api_path("node_states"), user="chefuser", key=rsa_key(1))
        last[:] = [response.status_code, response.text]
        return response.status_code == 502 and response.json() == expected

    try:
        wait_for(gone, timeout=15, what="502 from the stopped Chef Server")
    except AssertionError:
        raise AssertionError(f"last answer: {last}") from None
    assert srv.proc is not None and srv.proc.poll() is None  # the server keeps running


def test_startup_error_for_unreadable_superuser_key(
    fake_chef: FakeChefServer, server_factory: Any, tmp_path: Path
) -> None:
    settings = chef_settings(fake_chef, tmp_path, superuser_key=str(tmp_path / "absent.pem"))
    srv = server_factory(start=False, principals=settings)
    result = srv.admin("run", check=False)
    assert result.returncode == 1
    assert f"error: superuser key {tmp_path / 'absent.pem'} not found" in result.stderr

    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    srv.config_path.write_text(
        srv.config_path.read_text().replace(
            json.dumps(str(tmp_path / "absent.pem")), json.dumps(str(junk))
        )
    )
    result = srv.admin("run", check=False)
    assert result.returncode == 1
    assert f"error: superuser key {junk} is not an RSA private key" in result.stderr

"""A real pushjobs server with `[principals] backend = "chef-server"` against a fake Chef Server.

The Chef Server is an external system, so it is a small fake (`tests.support.chef`: Chef Server
API and the internal principals endpoint, two Starlette apps on ephemeral loopback ports, in a
thread) that checks the superuser's signatures with the protocol library. Our server is the real
`pushjobs-server run` process; the users, clients and groups exist only in the fake.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chef import (  # noqa: F401
    GROUP_ORG,
    ORG,
    FakeChefServer,
    chef_settings,
    fake_chef_fixture,
    rsa_key,
)
from tests.support.peer import open_peer
from tests.support.procs import started
from tests.support.server import ServerProcess
from tests.support.waits import wait_for


@pytest.fixture(scope="module")
def shared_chef() -> Iterator[FakeChefServer]:
    """One fake Chef Server for the module's non-destructive tests (unique names per test)."""
    with started(FakeChefServer(rsa_key(0))) as fake:
        yield fake


@pytest.fixture(scope="module")
def chef_server(
    shared_chef: FakeChefServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real server using the shared fake Chef Server as its principal backend."""
    base = tmp_path_factory.mktemp("chef-server")
    with started(ServerProcess(base, {"principals": chef_settings(shared_chef, base)})) as srv:
        yield srv


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

"""Revocation and CURVE key binding (security issue 15: F2, F5, F10) against a real server.

Key changes and deletions are made by `pushjobs-server client set-key|delete` in separate
processes against the server's SQLite database, exactly as an operator does; the server must
notice them by itself (within 60 s) and drop the node's session.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
import zmq

from pushjobs.protocol.keys import load_private_key
from tests.support.api import prepare
from tests.support.clients import unique_name
from tests.support.peer import PeerError, open_peer
from tests.support.server import ORG, ServerProcess
from tests.support.waits import wait_for

REVOKE_WITHIN = 60.0  # the bound; the server polls every 10 s


def new_key(srv: ServerProcess, name: str) -> Path:
    """`client set-key` from another process; returns the new private key's path."""
    path = srv.keys_dir / f"{name}-{time.monotonic_ns()}.pem"
    srv.admin("client", "set-key", ORG, name, "--key-out", str(path))
    return path


def stays_offline(srv: ServerProcess, node: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert srv.node_state(node)["status"] == "offline", f"{node} came back"
        time.sleep(0.2)


async def admin_state(srv: ServerProcess, node: str) -> dict[str, Any]:
    """`node_states/<node>` as the admin user, from trio code."""
    return await trio.to_thread.run_sync(srv.node_state, node)


async def wait_admin_state(srv: ServerProcess, node: str, status: str, timeout: float) -> float:
    """Wait for the node's status; returns the seconds it took."""
    started = time.monotonic()
    with trio.move_on_after(timeout):
        while (await admin_state(srv, node))["status"] != status:
            await trio.sleep(0.1)
        return time.monotonic() - started
    raise AssertionError(f"{node} not {status} after {timeout}s:\n{srv.log_tail()}")


async def config(srv: ServerProcess, node: str, key: Any, ccpk: str, *, user: str | None = None):
    path = f"/organizations/{ORG}/pushy/config/{node}"
    request = prepare(srv.http_url, "GET", path, user=user or node, key=key)
    return await request.send_async(params={"ccpk": ccpk, "version": "3.0"})


def curve_public() -> str:
    return zmq.curve_keypair()[0].decode("ascii")


# -- F2: revocation -------------------------------------------------------------------------------


def test_set_key_takes_a_connected_agent_offline_until_it_uses_the_new_key(
    server: ServerProcess, agent_factory: Any
) -> None:
    agent = agent_factory()
    started = time.monotonic()
    agent.key_path = new_key(server, agent.name)
    # The agent keeps heartbeating on its old connection with its old session key.
    server.wait_node(agent.name, "offline", timeout=REVOKE_WITHIN)
    assert time.monotonic() - started < REVOKE_WITHIN
    assert "revoked the session of node" in server.log_path.read_text()
    stays_offline(server, agent.name, 3.0)
    agent.stop()
    agent.write_config()  # now with the new key
    agent.start()  # waits until available


def test_client_delete_takes_a_connected_agent_offline_for_good(
    server: ServerProcess, agent_factory: Any
) -> None:
    agent = agent_factory()
    old_key = load_private_key(agent.key_path.read_bytes())
    server.admin("client", "delete", ORG, agent.name)
    server.wait_node(agent.name, "offline", timeout=REVOKE_WITHIN)
    stays_offline(server, agent.name, 5.0)
    response = server.get(
        f"config/{agent.name}?ccpk={quote(curve_public(), safe='')}", user=agent.name, key=old_key
    )
    assert response.status_code == 401, response.text


async def test_revoked_session_key_is_refused_and_the_new_key_gets_a_new_one(
    server: ServerProcess,
) -> None:
    name, old_path = server.make_client(unique_name("revoke"))
    async with open_peer(server.http_url, ORG, name, old_path, answer_aborts=True) as peer:
        old_session = peer.session_key
        peer.start_heartbeats()
        await wait_admin_state(server, name, "online", 20)
        new_path = await trio.to_thread.run_sync(new_key, server, name)
        took = await wait_admin_state(server, name, "offline", REVOKE_WITHIN)
        assert took < REVOKE_WITHIN
        # Heartbeats under the old session key keep coming and are dropped.
        await trio.sleep(2.0)
        assert (await admin_state(server, name))["status"] == "offline"
        # The old key cannot fetch config any more; the new key gets another session key.
        stale = await config(server, name, old_path, peer.curve_public)
        assert stale.status_code == 401, stale.text
        peer.key = load_private_key(new_path.read_bytes())
        await peer.fetch_config()
        assert peer.session_key is not None and peer.session_key != old_session
        await wait_admin_state(server, name, "online", 20)  # heartbeats now signed anew
        assert peer.errors == []


async def test_config_with_the_new_key_rotates_the_session_at_once(
    server: ServerProcess,
) -> None:
    name, old_path = server.make_client(unique_name("rotate"))
    async with open_peer(server.http_url, ORG, name, old_path, answer_aborts=True) as peer:
        old_session = peer.session_key
        await wait_admin_state(server, name, "online", 20)
        new_path = await trio.to_thread.run_sync(new_key, server, name)
        # Before the background check runs: the config endpoint sees the new key itself.
        async with open_peer(server.http_url, ORG, name, new_path, hello=False) as fresh:
            assert fresh.session_key is not None and fresh.session_key != old_session
            await wait_admin_state(server, name, "offline", 5)
            # The old session key no longer counts: its heartbeats do not bring the node back.
            for _ in range(4):
                await peer.send("heartbeat")
                await trio.sleep(0.25)
            assert (await admin_state(server, name))["status"] == "offline"
            await fresh.send("heartbeat")
            await wait_admin_state(server, name, "online", 20)


# -- F5: a CURVE key bound to another node --------------------------------------------------------


async def test_ccpk_registered_to_another_node_is_refused_with_409(server: ServerProcess) -> None:
    a, a_key = server.make_client(unique_name("ccpk-a"))
    b, b_key = server.make_client(unique_name("ccpk-b"))
    shared = curve_public()
    first = await config(server, a, a_key, shared)
    assert first.status_code == 200, first.text
    stolen = await config(server, b, b_key, shared)
    assert stolen.status_code == 409
    assert stolen.json() == {"error": ["ccpk is registered to another node"]}
    assert "encoded_session_key" not in stolen.text
    again = await config(server, a, a_key, shared)  # the owner renews it
    assert again.status_code == 200, again.text
    own = await config(server, b, b_key, curve_public())
    assert own.status_code == 200, own.text


async def test_a_stolen_ccpk_keeps_connecting_as_its_own_node(server: ServerProcess) -> None:
    """The node whose ccpk another client tried to claim still connects with it."""
    a, a_key = server.make_client(unique_name("own-a"))
    b, b_key = server.make_client(unique_name("own-b"))
    async with open_peer(server.http_url, ORG, a, a_key, connect=False, answer_aborts=True) as peer:
        await peer.fetch_config()
        claim = await config(server, b, b_key, peer.curve_public)
        assert claim.status_code == 409
        await peer.connect()
        await wait_admin_state(server, a, "online", 20)


# -- F10: at most 4 live CURVE keys per node ------------------------------------------------------


async def test_a_fifth_curve_key_evicts_the_nodes_oldest(server: ServerProcess) -> None:
    name, key_path = server.make_client(unique_name("five"))
    pairs = [tuple(k.decode("ascii") for k in zmq.curve_keypair()) for _ in range(5)]
    for public, _ in pairs:
        response = await config(server, name, key_path, public)
        assert response.status_code == 200, response.text
    async with open_peer(
        server.http_url, ORG, name, key_path, connect=False, answer_aborts=True
    ) as peer:
        # One more registration for the session key: the node's keys are now pairs[2:] + it.
        await peer.fetch_config(ccpk=curve_public())
        peer.curve_public, peer.curve_secret = pairs[0]  # evicted by the fifth registration
        await peer.connect()
        with pytest.raises(PeerError):
            await peer.expect("abort", timeout=3)
        assert (await admin_state(server, name))["status"] == "offline"
        peer.curve_public, peer.curve_secret = pairs[4]
        await peer.reconnect()
        await peer.expect("abort", timeout=15)
        await wait_admin_state(server, name, "online", 20)


# -- F10: a private key readable by others is named in the log ------------------------------------


def test_server_warns_when_its_private_key_is_readable_by_others(server_factory: Any) -> None:
    srv = server_factory(start=False)
    key = srv.data_dir / "server_key.pem"
    assert key.exists()
    os.chmod(key, 0o644)
    srv.start()
    wait_for(lambda: "readable by group or others" in srv.log_path.read_text(), 10)
    line = next(
        x for x in srv.log_path.read_text().splitlines() if "readable by group or others" in x
    )
    assert "WARNING" in line and str(key) in line and "0644" in line
    srv.stop()
    os.chmod(key, 0o600)
    srv.log_path.write_text("")
    srv.start()
    assert "readable by group or others" not in srv.log_path.read_text()

"""Revocation through the chef-server backend (security issue 15, F2): a client's key replaced or
the client deleted in Chef ends the node's session once the backend's cache (`cache_ttl`) expires.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from tests.support.chef import (  # noqa: F401
    ORG,
    FakeChefServer,
    chef_settings,
    fake_chef_fixture,
    rsa_key,
)
from tests.support.peer import open_peer

REVOKE_WITHIN = 60.0


async def test_key_replaced_then_client_deleted_in_chef_revokes_the_session(
    fake_chef: FakeChefServer, server_factory: Any, tmp_path: Path
) -> None:
    node = "revoked-web"
    old, new = rsa_key(7), rsa_key(8)
    fake_chef.add(node, "client", old)
    fake_chef.add("revoke-watcher", "user", rsa_key(1))
    srv = await trio.to_thread.run_sync(
        lambda: server_factory(principals=chef_settings(fake_chef, tmp_path))
    )
    reader = ("revoke-watcher", rsa_key(1))
    async with open_peer(srv.http_url, ORG, node, old, answer_aborts=True, reader=reader) as peer:
        old_session = peer.session_key
        peer.start_heartbeats()
        await peer.wait_node_state(status="online", timeout=20)
        fake_chef.principals[(ORG, node)] = []
        fake_chef.add(node, "client", new)
        started = time.monotonic()
        await peer.wait_node_state(status="offline", timeout=REVOKE_WITHIN)
        assert time.monotonic() - started < REVOKE_WITHIN
        await trio.sleep(2.0)  # heartbeats under the old session key do not bring it back
        assert (await peer.node_state())["status"] == "offline"
        peer.key = new
        await peer.fetch_config()
        assert peer.session_key is not None and peer.session_key != old_session
        await peer.wait_node_state(status="online", timeout=20)
        del fake_chef.principals[(ORG, node)]
        await peer.wait_node_state(status="offline", timeout=REVOKE_WITHIN)
        await trio.sleep(2.0)
        assert (await peer.node_state())["status"] == "offline"
        assert peer.errors == []

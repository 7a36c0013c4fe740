"""Scripted peers (`tests.support.peer`) brought to the state most tests start from: connected,
idle (the first `abort` answered) and heartbeating like an agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from tests.support.clients import node_name
from tests.support.peer import Peer, open_peer
from tests.support.server import ServerProcess


async def idle_peer(peer: Peer) -> None:
    """Complete the handshake: abort → aborted → available; then heartbeat like an agent, so
    liveness cannot end the node however slowly a loaded machine runs the rest of the test."""
    await peer.expect("abort")
    await peer.send("aborted")
    await peer.wait_node_state(status="online", availability="available")
    peer.start_heartbeats()


@asynccontextmanager
async def ready_peers(
    srv: ServerProcess, count_: int, prefix: str = "node", **options: Any
) -> AsyncIterator[list[Peer]]:
    """`count_` fake agents with new clients, connected, idle and heartbeating; by default they
    answer every abort (`answer_aborts`). On a clean exit each must have seen no protocol error."""
    options.setdefault("answer_aborts", True)
    async with AsyncExitStack() as stack:
        peers = []
        for _ in range(count_):
            name = node_name(prefix)
            _, key = await trio.to_thread.run_sync(srv.make_client, name)
            peer = await stack.enter_async_context(
                open_peer(srv.http_url, srv.org, name, key, **options)
            )
            await peer.expect("abort")
            if not options["answer_aborts"]:
                await peer.send("aborted", job_id=None)
            peer.start_heartbeats()
            peers.append(peer)
        for peer in peers:
            await peer.wait_node_state(availability="available")
        yield peers
        for peer in peers:
            assert peer.errors == []

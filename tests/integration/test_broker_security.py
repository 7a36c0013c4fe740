"""Security issue 15, the server's ZeroMQ side: F8 (heartbeat-port subscriptions), F6 (CURVE binding
before the organization look-up), F7 (replays on a new connection without CURVE).

F8 uses a hand-written ZMTP client (`tests/support/zmtp_raw.py`), not a libzmq SUB: libzmq keeps
every topic it subscribes to in a trie on its own side too.
"""

from __future__ import annotations

import os

import pytest
import trio

from pushjobs.protocol.envelope import open_envelope
from pushjobs.protocol.signing import RSA2048_SHA1, verify_rsa_sha1
from tests.support.api import server_status
from tests.support.clients import pooled_client
from tests.support.peer import open_peer
from tests.support.peers import idle_peer
from tests.support.procs import memory_kib
from tests.support.server import ServerProcess
from tests.support.waits import log_count, wait_log
from tests.support.zmtp_raw import RawSubscriber

RSS_GROWTH_LIMIT_KB = 50 * 1024


# -- F8: the heartbeat port keeps no subscription but "" ----------------------------------------


def _verify_heartbeat(parts: list[bytes], public_key) -> None:
    assert len(parts) == 2
    env = open_envelope(parts[0], parts[1], 1 << 16, RSA2048_SHA1)
    assert env.fields["type"] == "heartbeat"
    assert verify_rsa_sha1(public_key, env.body, env.header.signature)


async def _assert_serving(srv: ServerProcess, peer) -> None:
    """HTTP answers, the peer's real SUB still gets signed heartbeats, the node is available."""
    await server_status(srv)
    await peer.server_heartbeats(2)
    assert (await peer.node_state())["availability"] == "available"
    assert peer.errors == []


async def test_huge_subscription_closes_the_connection(server):
    name, key = pooled_client(server, "f8big")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        await peer.server_heartbeats(1)
        pid = server.proc.pid
        before = memory_kib(pid)
        size = 100 * 1024 * 1024

        def attack() -> tuple[int, bool]:
            raw = RawSubscriber("127.0.0.1", server.heartbeat_port, timeout=5)
            try:
                raw.handshake()
                sent = raw.send_huge_subscription(size)
                return sent, raw.closed_by_server()
            finally:
                raw.close()

        sent, closed = await trio.to_thread.run_sync(attack)
        growth = memory_kib(pid) - before
        assert closed, "the server kept a connection that sent a 100 MB subscription"
        assert sent < size, "the server read the whole 100 MB frame"
        assert growth < RSS_GROWTH_LIMIT_KB, f"server RSS grew by {growth} KiB"
        await wait_log(server, "heartbeat port: closing a connection: frame of")
        await _assert_serving(server, peer)


@pytest.mark.parametrize("minor", [0, 1], ids=["zmtp3.0", "zmtp3.1"])
async def test_many_subscriptions_are_ignored(server, minor):
    name, key = pooled_client(server, f"f8many{minor}")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        await peer.server_heartbeats(1)
        pid = server.proc.pid
        before = memory_kib(pid)
        public_key = peer.server_public_key
        count, length = 100_000, 200

        def attack() -> int:
            raw = RawSubscriber("127.0.0.1", server.heartbeat_port, minor=minor, timeout=30)
            try:
                raw.handshake()
                for start in range(0, count, 10_000):
                    raw.subscribe(
                        (b"%09d-" % i).ljust(length, b"t") for i in range(start, start + 10_000)
                    )
                    # Stop early when memory runs away (the unfixed server took ~1 GB).
                    if memory_kib(pid) - before > 4 * RSS_GROWTH_LIMIT_KB:
                        break
            except OSError:
                pass  # the server closed the flooding connection: what it should do
            finally:
                raw.close()
            # A new subscriber to "" is still served: the first heartbeat proves the server
            # processed (and dropped) everything before it.
            fresh = RawSubscriber("127.0.0.1", server.heartbeat_port, minor=minor, timeout=30)
            try:
                fresh.handshake()
                fresh.subscribe([b""])
                _verify_heartbeat(fresh.read_message(), public_key)
            finally:
                fresh.close()
            return memory_kib(pid) - before

        growth = await trio.to_thread.run_sync(attack)
        assert growth < RSS_GROWTH_LIMIT_KB, f"server RSS grew by {growth} KiB"
        await wait_log(server, "heartbeat port: ignored a subscription to b'000000")
        await wait_log(server, "heartbeat port: closing a connection that floods it")
        await _assert_serving(server, peer)


async def test_ping_flood_is_cut_off(server):
    """PINGs faster than heartbeats: one PONG per read, and the connection is closed once the
    flood passes the input budget, so it can neither fill libzmq's buffers nor busy the loop."""
    name, key = pooled_client(server, "f8ping")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        pid = server.proc.pid
        before = memory_kib(pid)

        def flood() -> bool:
            raw = RawSubscriber("127.0.0.1", server.heartbeat_port, minor=1, timeout=10)
            ping = bytes((0x04, 6)) + b"\x04PING\x00\x00"  # command frame: PING, TTL 0
            try:
                raw.handshake()
                for _ in range(2000):
                    raw.sock.sendall(ping * 512)
            except OSError:
                return True  # closed by the server
            finally:
                raw.close()
            return False

        closed = await trio.to_thread.run_sync(flood)
        assert closed, "the server kept a connection flooding it with PINGs"
        await wait_log(server, "heartbeat port: closing a connection that floods it")
        assert memory_kib(pid) - before < RSS_GROWTH_LIMIT_KB
        await _assert_serving(server, peer)


async def test_raw_subscriber_to_everything_gets_heartbeats_others_do_not(server):
    """The ZMTP handshake by hand, as a Ruby or non-libzmq client would do it."""
    name, key = pooled_client(server, "f8raw")
    async with open_peer(server.http_url, server.org, name, key, connect=False) as peer:
        await peer.fetch_config()

        def listen(topic: bytes, minor: int) -> list[bytes] | None:
            raw = RawSubscriber("127.0.0.1", server.heartbeat_port, minor=minor, timeout=3)
            try:
                raw.handshake()
                raw.subscribe([topic])
                return raw.read_message()
            except TimeoutError:
                return None
            finally:
                raw.close()

        for minor in (0, 1):
            beat = await trio.to_thread.run_sync(listen, b"", minor)
            _verify_heartbeat(beat, peer.server_public_key)
        # A prefix that every heartbeat header starts with: still nothing for this peer.
        assert await trio.to_thread.run_sync(listen, b"Version", 0) is None


# -- F6: the CURVE binding is checked before any organization look-up ---------------------------


async def test_bogus_org_flood_over_curve_makes_no_org_lookups(server):
    legit_name, legit_key = pooled_client(server, "f6legit")
    name, key = pooled_client(server, "f6flood")
    async with (
        open_peer(server.http_url, server.org, legit_name, legit_key) as legit,
        open_peer(server.http_url, server.org, name, key, hello=False) as flooder,
    ):
        await idle_peer(legit)
        tag = f"bogus{os.getpid()}x"
        for i in range(3000):
            # Authenticated connection, valid HMAC: only the claimed organization is made up.
            await flooder.send_frames(flooder.seal("heartbeat", org=f"{tag}{i}"))
            if i % 200 == 199:
                await trio.sleep(0.01)
        # In order after the flood: the flooder's own heartbeat still works.
        await flooder.send("heartbeat")
        await flooder.expect("abort")
        sender = repr(f"{server.org}/{name}")
        await wait_log(
            server,
            f"dropped message from {sender} (CURVE key): message for '{tag}",
        )
        assert log_count(server, f"organization '{tag}") == 0  # never looked up
        assert log_count(server, "organization look-up") == 0
        # One line per binding and interval, not one per made-up name.
        assert log_count(server, f"message for '{tag}") <= 2
        assert (await legit.node_state())["availability"] == "available"
        newcomer_name, newcomer_key = pooled_client(server, "f6new")
        async with open_peer(server.http_url, server.org, newcomer_name, newcomer_key) as newcomer:
            await idle_peer(newcomer)
        assert legit.errors == [] and flooder.errors == []


# -- F7: without CURVE, a captured message cannot be replayed on a new connection ---------------


async def test_replay_on_a_new_connection_is_dropped(plain_server):
    srv = plain_server
    name, key = pooled_client(srv, "f7replay")
    async with open_peer(srv.http_url, srv.org, name, key) as peer:
        await peer.expect("abort")
        captured = peer.seal("heartbeat")  # sequence 2 on the first connection
        await peer.send_frames(captured)
        await peer.send("aborted")
        await peer.wait_node_state(status="online", availability="available")
        await peer.reconnect(hello=False)  # new DEALER: new routing id
        await peer.send_frames(captured)  # accepted, it would move the node to this connection
        await wait_log(
            srv, f"dropped message from {srv.org!r}/{name!r}: replayed on a new connection"
        )
        assert [m.type for m in peer.drain()] == []  # no ack: the server did not switch
        # A message newer than everything accepted before works on the new connection.
        await peer.send("heartbeat", sequence=10)
        reply = await peer.recv()
        assert reply.type in ("ack", "abort")  # abort if liveness ended the state meanwhile
        assert peer.errors == []

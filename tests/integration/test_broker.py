"""The server's ZeroMQ side against a real server process, driven by the scripted peer.

Drops are observed positively: the server logs one line per dropped message naming the node
and the reason (wire-protocol.md §16), and a test waits for that line before checking that the
node state did not change — so no test relies on "nothing happened within N seconds".
"""

from __future__ import annotations

import secrets
import time
import uuid

import pytest
import trio

from pushjobs.protocol.envelope import seal_hmac
from pushjobs.protocol.timestamps import format_rfc1123
from tests.support.api import api, server_status
from tests.support.clients import node_name, pooled_client
from tests.support.peer import open_peer
from tests.support.peers import idle_peer
from tests.support.server import ServerProcess
from tests.support.waits import log_count, wait_log

# -- connecting, rehab, liveness --------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.0", "2.0"])
async def test_peer_gets_abort_becomes_available_then_goes_offline(server, version):
    name, key = pooled_client(server, f"live{version[0]}")
    async with open_peer(server.http_url, server.org, name, key, version=version) as peer:
        abort = await peer.expect("abort")
        assert abort.version == version
        assert abort.sequence == 1
        state = await peer.node_state()
        assert state == {"node_name": name, "status": "online", "availability": "unavailable"}
        peer.start_heartbeats()
        await peer.send("aborted")
        await peer.wait_node_state(status="online", availability="available")
        assert name in [n["node_name"] for n in (await _node_states(server, peer))]
        assert (await server_status(server))["node_fsm_count"] >= 1
        peer.stop_heartbeats()
        state = await peer.wait_node_state(status="offline", timeout=20)
        assert state["availability"] == "unavailable"
        assert peer.errors == []
    await wait_log(server, f"node {server.org!r}/{name!r} down: liveness")


async def _node_states(srv: ServerProcess, peer) -> list[dict]:
    # as the org admin: a node's key may not read node_states (security issue 15, F4)
    response = await api(srv, "GET", "node_states")
    assert response.status_code == 200
    return response.json()


async def test_rehab_resends_abort_until_aborted(server):
    name, key = pooled_client(server, "rehab")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        first = await peer.expect("abort")
        second = await peer.expect("abort")  # rehab_interval later, no answer yet
        assert second.sequence > first.sequence
        await peer.send("aborted")
        await peer.wait_node_state(availability="available")
        assert peer.errors == []


async def test_peer_answering_aborts_like_an_agent_becomes_available(server):
    name, key = pooled_client(server, "auto")
    async with open_peer(server.http_url, server.org, name, key, answer_aborts=True) as peer:
        await peer.wait_node_state(availability="available")
        assert (await peer.expect("abort")).sequence == 1  # answered, and still queued


async def test_heartbeating_peer_stays_online(server):
    name, key = pooled_client(server, "steady")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        peer.start_heartbeats()
        await idle_peer(peer)
        # Steady heartbeats: never declared down.
        down_line = f"node {server.org!r}/{name!r} down"
        with trio.move_on_after(2.5):  # longer than one scan period (I·S = 2 s)
            while True:
                assert log_count(server, down_line) == 0
                assert (await peer.node_state())["availability"] == "available"
                await trio.sleep(0.5)
        assert peer.errors == []


async def test_server_heartbeats_are_signed_and_sequenced(server):
    name, key = pooled_client(server, "sub")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        beats = await peer.server_heartbeats(3)  # signatures verified inside
        assert [b.incarnation_id for b in beats] == [server.incarnation_id] * 3
        assert beats[1].sequence == beats[0].sequence + 1
        assert beats[2].sequence == beats[1].sequence + 1
        assert all(b.server for b in beats)


async def test_reconnect_with_same_incarnation_gets_ack(server):
    name, key = pooled_client(server, "reconn")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        first_abort = peer.received[0]
        await peer.reconnect()
        ack = await peer.expect("ack")
        assert ack.sequence > first_abort.sequence  # per-node counter, not per connection
        state = await peer.node_state()
        assert state["availability"] == "available"
        assert peer.errors == []


async def test_reconfigure_fetches_config_again_and_keeps_state(server):
    name, key = pooled_client(server, "reconf")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        session_key = peer.session_key
        await peer.fetch_config()
        assert peer.session_key == session_key  # same key for the life of the process
        await peer.reconnect()
        await peer.expect("ack")
        assert (await peer.node_state())["availability"] == "available"


async def test_new_incarnation_gets_new_abort(server):
    name, key = pooled_client(server, "reinc")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        await peer.reconnect(new_incarnation=True)
        abort = await peer.expect("abort")
        assert abort.sequence == 2  # the counter survived the state re-creation
        assert (await peer.node_state())["availability"] == "unavailable"
        await peer.send("aborted")
        await peer.wait_node_state(availability="available")
    await wait_log(server, f"node {server.org!r}/{name!r} down: new client incarnation")


async def test_new_incarnation_on_the_same_connection_replaces_the_state(server):
    name, key = pooled_client(server, "reinc2")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        peer.incarnation_id = str(uuid.uuid4())
        await peer.send("heartbeat")
        abort = await peer.expect("abort")
        assert abort.sequence == 2
        assert (await peer.node_state())["availability"] == "unavailable"


async def test_message_100_seconds_old_is_processed(server):
    name, key = pooled_client(server, "old100")
    async with open_peer(server.http_url, server.org, name, key, hello=False) as peer:
        await peer.send("heartbeat", timestamp=format_rfc1123(time.time() - 100))
        await peer.expect("abort")


# -- dispatch -------------------------------------------------------------------------------


async def test_heartbeat_naming_an_unknown_job_rehabs_the_node(server):
    name, key = pooled_client(server, "hbjob")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        await peer.send("heartbeat", job_state="running", job_id=secrets.token_hex(16))
        await peer.expect("abort")
        assert (await peer.node_state())["availability"] == "unavailable"


@pytest.mark.parametrize("msg_type", ["ack_commit", "nack_run", "succeeded"])
async def test_job_message_for_an_unknown_job_rehabs_the_node(server, msg_type):
    name, key = pooled_client(server, msg_type.replace("_", ""))
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        await peer.send(msg_type, job_id=secrets.token_hex(16))
        await peer.expect("abort")


# -- dropped messages ---------------------------------------------------------------------------


async def assert_dropped_then_serving(srv, peer, reason: str, *, by_curve: bool = False) -> None:
    """Wait for the drop's log line, check the node is still offline, then prove it works.

    `by_curve`: the message was dropped before its fields named the node, so the log names
    the sender by its CURVE key binding.
    """
    sender = repr(f"{srv.org}/{peer.node}") + " (CURVE key)" if by_curve else None
    who = f"dropped message from {sender or f'{srv.org!r}/{peer.node!r}'}: {reason}"
    await wait_log(srv, who)
    assert (await peer.node_state())["status"] == "offline"
    await server_status(srv)
    await peer.send("heartbeat")
    await peer.expect("abort")
    assert peer.errors == []


async def test_forged_signature_is_dropped(server):
    name, key = pooled_client(server, "forged")
    async with open_peer(server.http_url, server.org, name, key, hello=False) as peer:
        await peer.send("heartbeat", hmac_key=secrets.token_bytes(32))
        await assert_dropped_then_serving(server, peer, "bad signature")


@pytest.mark.parametrize(
    ("offset", "text", "reason"),
    [
        (-1000, None, "timestamp '"),
        (1000, None, "timestamp '"),
        (0, "Fri, 27 Nov 2026 10:00:00 UTC", "bad timestamp"),
        (0, "Friday, 27-Nov-26 10:00:00 GMT", "bad timestamp"),
    ],
)
async def test_bad_timestamps_are_dropped(server, offset, text, reason):
    name, key = pooled_client(server, "stamp")
    async with open_peer(server.http_url, server.org, name, key, hello=False) as peer:
        await peer.send("heartbeat", timestamp=text or format_rfc1123(time.time() + offset))
        await assert_dropped_then_serving(server, peer, reason)


async def test_replayed_sequence_is_dropped(server):
    name, key = pooled_client(server, "replay")
    async with open_peer(server.http_url, server.org, name, key) as peer:
        await idle_peer(peer)
        # Would rehab the node if accepted; its sequence was already used on this connection.
        await peer.send("heartbeat", job_id=secrets.token_hex(16), sequence=2)
        await wait_log(
            server, f"dropped message from {server.org!r}/{name!r}: sequence 2 not after"
        )
        assert (await peer.node_state())["availability"] == "available"


async def test_2_0_messages_skip_the_sequence_check(server):
    name, key = pooled_client(server, "seq20")
    async with open_peer(server.http_url, server.org, name, key, version="2.0") as peer:
        await idle_peer(peer)
        await peer.send("heartbeat", job_id=secrets.token_hex(16), sequence=1)
        abort = await peer.expect("abort")
        assert abort.version == "2.0"


async def test_missing_sequence_in_3_0_is_dropped(server):
    name, key = pooled_client(server, "noseq")
    async with open_peer(server.http_url, server.org, name, key, hello=False) as peer:
        await peer.send("heartbeat", omit=("sequence",))
        await assert_dropped_then_serving(server, peer, "missing field 'sequence'", by_curve=True)


async def test_oversized_body_is_dropped(server):
    name, key = pooled_client(server, "big")
    async with open_peer(server.http_url, server.org, name, key, hello=False) as peer:
        await peer.send("heartbeat", padding="x" * 70_000)
        await assert_dropped_then_serving(server, peer, "bad body", by_curve=True)


async def test_unknown_org_is_dropped(plain_server):
    """(Over CURVE the key binding is checked first: see test_broker_security.py.)"""
    server = plain_server
    name, key = pooled_client(server, "noorg")
    async with open_peer(server.http_url, server.org, name, key, hello=False) as peer:
        await peer.send("heartbeat", org="no-such-org")
        await wait_log(
            server, f"dropped message from 'no-such-org'/{name!r}: organization 'no-such-org'"
        )
        assert (await peer.node_state())["status"] == "offline"
        await peer.send("heartbeat")
        await peer.expect("abort")


async def test_wrong_nodes_key_over_curve_is_dropped(server):
    """Node A's CURVE connection cannot speak for node B, even with B's session key."""
    name_a, key_a = pooled_client(server, "curve-a")
    name_b, key_b = pooled_client(server, "curve-b")
    async with (
        open_peer(server.http_url, server.org, name_b, key_b, connect=False) as peer_b,
        open_peer(server.http_url, server.org, name_a, key_a, hello=False) as peer_a,
    ):
        await peer_b.fetch_config()  # B's key registered, B's session key known
        await peer_a.send("heartbeat", node=name_b, hmac_key=peer_b.session_key)
        reason = (
            f"dropped message from {f'{server.org}/{name_a}'!r} (CURVE key): "
            f"message for {server.org!r}/{name_b!r} does not match its CURVE key"
        )
        await wait_log(server, reason)
        assert (await peer_a.node_state(name_b))["status"] == "offline"
        assert (await peer_a.node_state(name_a))["status"] == "offline"
        await peer_a.send("heartbeat")
        await peer_a.expect("abort")


async def test_unregistered_curve_key_is_refused_by_zap(server):
    name, key = pooled_client(server, "zap")
    async with open_peer(server.http_url, server.org, name, key, connect=False) as peer:
        await peer.fetch_config()  # registers the peer's own key ...
        before = log_count(server, "ZAP denied")
        peer.curve_public, peer.curve_secret = _other_curve_pair()  # ... but uses another
        await peer.connect()
        await wait_log(server, "ZAP denied", at_least=before + 1)
        assert (await peer.node_state())["status"] == "offline"


def _other_curve_pair() -> tuple[str, str]:
    import zmq

    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"Version:3.0;SigningMethod:hmac_sha256;Signature:AAAA"], "2 frames instead of 3"),
        ([b"a", b"b", b"c"], "4 frames instead of 3"),
        ([b"garbage", b"\x00\x01\x02"], "bad header"),
        ([b"Version:3.0;SigningMethod:rsa2048_sha1;Signature:AAAA", b"\x80"], "bad header"),
        ([b"Version:3.0;SigningMethod:hmac_sha256;Signature:AAAA", b"\xc1\xff"], "bad body"),
        ([b"Version:2.0;SigningMethod:hmac_sha256;Signature:AAAA", b"[1,2]"], "bad body"),
        ([b"Version:1.0;SigningMethod:hmac_sha256;Signature:AAAA", b"{}"], "bad header"),
        (
            [b"Version:3.0;SigningMethod:hmac_sha256;Signature:" + b"A" * 2100, b"\x80"],
            "bad header",
        ),
    ],
)
async def test_garbage_frames_are_dropped(server, frames, reason):
    name, key = pooled_client(server, "garbage")
    async with open_peer(server.http_url, server.org, name, key, hello=False) as peer:
        before = log_count(server, reason)
        await peer.send_frames(frames)
        await wait_log(server, reason, at_least=before + 1)
        assert (await peer.node_state())["status"] == "offline"
        await peer.send("heartbeat")
        await peer.expect("abort")


async def test_missing_common_field_is_dropped(server):
    name, key = pooled_client(server, "nofield")
    async with open_peer(server.http_url, server.org, name, key, hello=False) as peer:
        body = peer.build_fields("heartbeat", omit=("incarnation_id",))
        header, payload = seal_hmac("3.0", body, peer.session_key)
        before = log_count(server, "missing field 'incarnation_id'")
        await peer.send_frames([header, payload])
        await wait_log(server, "missing field 'incarnation_id'", at_least=before + 1)
        assert (await peer.node_state())["status"] == "offline"


# -- CURVE disabled --------------------------------------------------------------------------
# Without CURVE one connection may carry messages of several nodes, which gives a deterministic
# synchronisation point: a message for a second node, sent after the message under test on the
# same connection, is processed after it; once that node shows online, the first was handled.


async def sync_via(peer, helper) -> None:
    """Send a heartbeat for `helper`'s node on `peer`'s connection; wait until it is online."""
    await peer.send(
        "heartbeat",
        node=helper.node,
        hmac_key=helper.session_key,
        incarnation_id=helper.incarnation_id,
    )
    await peer.wait_node_state(node=helper.node, status="online")


async def test_plain_command_socket_when_curve_is_disabled(plain_server):
    srv = plain_server
    name, key = pooled_client(srv, "plain")
    async with open_peer(srv.http_url, srv.org, name, key) as peer:
        assert "curve_public_key" not in peer.config
        assert not peer.uses_curve
        await idle_peer(peer)
        await peer.reconnect()
        await peer.expect("ack")
        assert peer.errors == []


async def test_aborted_naming_an_unknown_job_does_not_rehab(plain_server):
    srv = plain_server
    name, key = pooled_client(srv, "abjob")
    helper_name, helper_key = pooled_client(srv, "abjob-sync")
    async with (
        open_peer(srv.http_url, srv.org, helper_name, helper_key, connect=False) as helper,
        open_peer(srv.http_url, srv.org, name, key) as peer,
    ):
        await helper.fetch_config()
        await idle_peer(peer)
        await peer.send("aborted", job_id=secrets.token_hex(16))
        await sync_via(peer, helper)
        assert (await peer.node_state())["availability"] == "available"
        # Control: a heartbeat naming an unknown job does rehab.
        await peer.send("heartbeat", job_id="x" * 65)  # over-long id: an unknown job
        await peer.wait_node_state(availability="unavailable")


async def test_message_for_a_node_without_session_key_is_dropped(plain_server):
    """A node that never fetched config has no session key: its messages cannot verify."""
    srv = plain_server
    name, key = pooled_client(srv, "nokey")
    other = node_name("nokey-other")
    async with open_peer(srv.http_url, srv.org, name, key, hello=False) as peer:
        await peer.send("heartbeat", node=other, hmac_key=secrets.token_bytes(32))
        await wait_log(srv, f"dropped message from {srv.org!r}/{other!r}: no session key")
        assert (await peer.node_state(other))["status"] == "offline"
        await peer.send("heartbeat")
        await peer.expect("abort")


async def test_plain_socket_accepts_any_node_with_its_session_key(plain_server):
    """Without CURVE there is no key binding: the HMAC alone decides (wire-protocol.md §10)."""
    srv = plain_server
    name, key = pooled_client(srv, "anyn")
    helper_name, helper_key = pooled_client(srv, "anyn-b")
    async with (
        open_peer(srv.http_url, srv.org, helper_name, helper_key, connect=False) as helper,
        open_peer(srv.http_url, srv.org, name, key, hello=False) as peer,
    ):
        await helper.fetch_config()
        await peer.send("heartbeat", node=helper.node, hmac_key=secrets.token_bytes(32))
        await wait_log(srv, f"dropped message from {srv.org!r}/{helper.node!r}: bad signature")
        assert (await peer.node_state(helper.node))["status"] == "offline"
        await sync_via(peer, helper)

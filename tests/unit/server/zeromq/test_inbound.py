"""The server's pure inbound validation (wire-protocol.md §16 steps 1–10) and its sequence table.

Messages are sealed with the real envelope and HMAC code; session keys come from the real
`SessionKeys`.
"""

from __future__ import annotations

from typing import Any

import pytest

from pushjobs.protocol.envelope import seal_hmac
from pushjobs.protocol.messages import Aborted, AckCommit, Output
from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.server.nodes.sessions import SessionKeys
from pushjobs.server.zeromq.inbound import Accepted, Drop, Inbound, SequenceTable, Waiting
from pushjobs.server.zeromq.org_cache import OrgCache

ORG = "acme"
NODE = "web1"
WALL = 1_800_000_000.0  # wall clock (skew check)
MONO = 500.0  # monotonic clock (org cache, log keys)
RID = b"\x00\x01"
SKEW = 300.0


@pytest.fixture
def sessions() -> SessionKeys:
    return SessionKeys(lifetime=3600)


@pytest.fixture
def key(sessions: SessionKeys) -> bytes:
    return sessions.session_key(ORG, NODE)


def make_inbound(sessions: SessionKeys, *, curve: bool = False, org_known: bool = True) -> Inbound:
    inbound = Inbound(sessions=sessions, curve=curve, max_body=65536, max_skew=SKEW)
    if org_known:
        inbound.orgs.resolve(ORG, True, MONO)
    return inbound


@pytest.fixture
def inbound(sessions: SessionKeys) -> Inbound:
    return make_inbound(sessions)


def body(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "node": NODE,
        "client": NODE,
        "protocol_version": "3.0",
        "org": ORG,
        "type": "heartbeat",
        "sequence": 1,
        "timestamp": format_rfc1123(WALL),
        "incarnation_id": "inc-1",
        "job_state": "idle",
        "job_id": None,
    }
    fields.update(over)
    return {name: value for name, value in fields.items() if value is not ...}


def frames(key: bytes, *, version: str = "3.0", rid: bytes = RID, **over: Any) -> list[bytes]:
    header, raw = seal_hmac(version, body(**over), key)
    return [rid, header, raw]


def check(
    inbound: Inbound,
    message: list[bytes],
    *,
    user_id: str | None = None,
    wall: float = WALL,
) -> Accepted | Drop | Waiting:
    return inbound.check(message, user_id, MONO, wall)


def dropped(result: object) -> Drop:
    assert isinstance(result, Drop), result
    return result


def accepted(result: object) -> Accepted:
    assert isinstance(result, Accepted), result
    return result


# -- accepted ---------------------------------------------------------------------------------


def test_a_heartbeat_is_accepted_unparsed(inbound: Inbound, key: bytes) -> None:
    msg = accepted(check(inbound, frames(key, job_id="j1")))
    assert (msg.org, msg.node, msg.incarnation_id, msg.routing_id) == (ORG, NODE, "inc-1", RID)
    assert (msg.version, msg.type, msg.job_id) == ("3.0", "heartbeat", "j1")
    assert msg.message is None and msg.problem is None


def test_a_2_0_message_needs_no_sequence(inbound: Inbound, key: bytes) -> None:
    msg = accepted(check(inbound, frames(key, version="2.0", sequence=..., protocol_version=...)))
    assert msg.version == "2.0"


def test_a_job_message_is_parsed(inbound: Inbound, key: bytes) -> None:
    msg = accepted(check(inbound, frames(key, type="ack_commit", job_id="j1", job_state=...)))
    assert isinstance(msg.message, AckCommit) and msg.message.job_id == "j1"
    assert msg.problem is None


def test_aborted_is_parsed_only_when_it_names_a_job(inbound: Inbound, key: bytes) -> None:
    bare = accepted(check(inbound, frames(key, type="aborted", job_state=...)))
    assert bare.message is None and bare.problem is None
    named = accepted(check(inbound, frames(key, type="aborted", job_id="j1", sequence=2)))
    assert isinstance(named.message, Aborted)


def test_output_is_parsed(inbound: Inbound, key: bytes) -> None:
    fields = {"type": "output", "job_id": "j1", "channel": "stdout", "offset": 0, "data": b"hi"}
    msg = accepted(check(inbound, frames(key, job_state=..., **fields)))
    assert isinstance(msg.message, Output) and msg.message.data == b"hi"


@pytest.mark.parametrize(
    "version, over, problem",
    [
        ("3.0", {"type": "bogus"}, "unknown message type 'bogus'"),
        ("3.0", {"type": "x" * 60}, f"unknown message type {'x' * 40!r}"),
        ("3.0", {"type": "succeeded", "exit_status": "zero"}, "invalid succeeded: "),
        ("3.0", {"type": "aborted", "job_id": "j", "client": 5}, "invalid aborted: "),
        (
            "2.0",
            {"type": "output", "channel": "stdout", "offset": 0, "data": "x"},
            "output messages need protocol 3.0",
        ),
    ],
)
def test_unusable_content_still_counts_for_the_node(
    inbound: Inbound, key: bytes, version: str, over: dict[str, Any], problem: str
) -> None:
    msg = accepted(check(inbound, frames(key, version=version, **over)))
    assert msg.message is None
    assert msg.problem is not None
    assert msg.problem.key == (ORG, NODE)
    assert msg.problem.sender == f"{ORG!r}/{NODE!r}"
    assert msg.problem.reason.startswith(problem)


# -- steps 1-5: before the message names a node --------------------------------------------------


@pytest.mark.parametrize(
    "message, reason",
    [
        ([RID, b"x"], "2 frames instead of 3"),
        ([RID, b"a", b"b", b"c"], "4 frames instead of 3"),
        ([RID, b"nonsense", b"{}"], "bad header: header has no Version"),
        (
            [RID, b"Version:3.0;SigningMethod:rsa2048_sha1;Signature:x", b"\x80"],
            "bad header: signing method 'rsa2048_sha1' not accepted here",
        ),
        ([RID, b"Version:2.0;SigningMethod:hmac_sha256;Signature:x", b"[1]"], "bad body: "),
        ([RID, b"Version:2.0;SigningMethod:hmac_sha256;Signature:x", b"{" * 70000], "bad body: "),
    ],
)
def test_frames_header_and_body(inbound: Inbound, message: list[bytes], reason: str) -> None:
    drop = dropped(check(inbound, message))
    assert drop.reason.startswith(reason)
    assert drop.key == RID
    assert drop.sender == "connection 0001"


def test_no_frames_at_all(inbound: Inbound) -> None:
    assert dropped(check(inbound, [])) == Drop(
        b"", "connection ", "0 frames instead of 3", "malformed"
    )


@pytest.mark.parametrize(
    "over, version, reason",
    [
        ({"node": ...}, "3.0", "missing field 'node'"),
        ({"org": 7}, "3.0", "field 'org' must be a string"),
        ({"type": None}, "3.0", "missing field 'type'"),
        ({"incarnation_id": ["x"]}, "2.0", "field 'incarnation_id' must be a string"),
        ({"sequence": ...}, "3.0", "missing field 'sequence'"),
        ({"sequence": "1"}, "2.0", "field 'sequence' must be an integer"),
        ({"sequence": True}, "3.0", "field 'sequence' must be an integer"),
        ({"job_id": 12}, "3.0", "field 'job_id' must be a string or null"),
    ],
)
def test_common_fields(
    inbound: Inbound, key: bytes, over: dict[str, Any], version: str, reason: str
) -> None:
    drop = dropped(check(inbound, frames(key, version=version, **over)))
    assert drop == Drop(RID, "connection 0001", reason, "malformed")


# -- step 6: the CURVE binding -----------------------------------------------------------------


def test_over_curve_anonymous_drops_name_the_key(sessions: SessionKeys) -> None:
    inbound = make_inbound(sessions, curve=True)
    drop = dropped(check(inbound, [RID, b"x"], user_id="acme/web1"))
    assert drop == Drop(RID, "'acme/web1' (CURVE key)", "2 frames instead of 3", "malformed")


def test_without_curve_the_binding_is_not_checked(inbound: Inbound, key: bytes) -> None:
    accepted(check(inbound, frames(key), user_id=None))


def test_over_curve_the_message_names_its_keys_node(sessions: SessionKeys, key: bytes) -> None:
    inbound = make_inbound(sessions, curve=True)
    accepted(check(inbound, frames(key), user_id="acme/web1"))
    drop = dropped(check(inbound, frames(key, node="web2"), user_id="acme/web1"))
    assert drop == Drop(
        ("curve", "acme/web1"),
        "'acme/web1' (CURVE key)",
        "message for 'acme'/'web2' does not match its CURVE key",
        "curve_mismatch",
    )
    # No binding (the frame had none): still a mismatch, limited under the same key.
    drop = dropped(check(inbound, frames(key), user_id=None))
    assert drop.key == ("curve", None) and drop.sender == "None (CURVE key)"


def test_a_made_up_org_over_the_wrong_key_is_never_looked_up(sessions: SessionKeys) -> None:
    inbound = make_inbound(sessions, curve=True, org_known=False)
    for i in range(5):
        dropped(check(inbound, frames(b"k" * 32, org=f"made-up-{i}"), user_id="acme/web1"))
    assert list(inbound.orgs.take_lookups()) == []
    assert len(inbound.orgs) == 0


# -- step 7: the organization ----------------------------------------------------------------


def test_an_unknown_org_waits_for_its_look_up(sessions: SessionKeys, key: bytes) -> None:
    inbound = make_inbound(sessions, org_known=False)
    first = check(inbound, frames(key, sequence=1))
    second = check(inbound, frames(key, sequence=2))
    assert isinstance(first, Waiting) and isinstance(second, Waiting)
    assert first.received == MONO
    assert list(inbound.orgs.take_lookups()) == [ORG]
    waiting = inbound.orgs.resolve(ORG, True, MONO + 1)
    assert waiting == [first, second]
    results = [accepted(inbound.resume(w, True, WALL)) for w in waiting]
    assert [r.routing_id for r in results] == [RID, RID]
    accepted(check(inbound, frames(key, sequence=3)))  # cached now


@pytest.mark.parametrize(
    "exists, reason",
    [
        (None, "cannot look up organization 'acme'"),
        (False, "organization 'acme' does not exist"),
    ],
)
def test_parked_messages_of_a_missing_org_are_dropped(
    sessions: SessionKeys, key: bytes, exists: bool | None, reason: str
) -> None:
    inbound = make_inbound(sessions, org_known=False)
    waiting = check(inbound, frames(key))
    assert isinstance(waiting, Waiting)
    [back] = inbound.orgs.resolve(ORG, exists, MONO)
    assert inbound.resume(back, exists, WALL) == Drop(
        (ORG, NODE), "'acme'/'web1'", reason, "unknown_org"
    )


def test_a_known_missing_org_is_dropped_at_once(sessions: SessionKeys, key: bytes) -> None:
    inbound = make_inbound(sessions, org_known=False)
    inbound.orgs.resolve(ORG, False, MONO)
    drop = dropped(check(inbound, frames(key)))
    assert drop == Drop(
        (ORG, NODE), "'acme'/'web1'", "organization 'acme' does not exist", "unknown_org"
    )


def test_look_up_limits(sessions: SessionKeys, key: bytes) -> None:
    orgs: OrgCache[Waiting] = OrgCache(max_lookups=1, max_parked=2)
    inbound = Inbound(sessions=sessions, curve=False, max_body=65536, max_skew=SKEW, orgs=orgs)
    assert isinstance(check(inbound, frames(key)), Waiting)
    drop = dropped(check(inbound, frames(key, org="other")))
    assert drop == Drop(
        ("other", NODE),
        "'other'/'web1'",
        "too many organization look-ups in progress",
        "org_lookup_busy",
    )
    assert isinstance(check(inbound, frames(key, sequence=2)), Waiting)
    drop = dropped(check(inbound, frames(key, sequence=3)))
    assert drop.reason == "organization look-up backlog full"


# -- steps 8-9: session key, HMAC, timestamp ---------------------------------------------------


def test_a_node_without_session_key_is_dropped(inbound: Inbound, key: bytes) -> None:
    drop = dropped(check(inbound, frames(key, node="web2")))
    assert drop == Drop(
        (ORG, "web2"), "'acme'/'web2'", "no session key (config not fetched)", "no_session_key"
    )


def test_a_forged_signature_is_dropped(inbound: Inbound, key: bytes) -> None:
    assert key != b"f" * 32
    drop = dropped(check(inbound, frames(b"f" * 32)))
    assert drop == Drop((ORG, NODE), "'acme'/'web1'", "bad signature", "bad_signature")


def test_an_unparsable_timestamp_is_dropped(inbound: Inbound, key: bytes) -> None:
    drop = dropped(check(inbound, frames(key, timestamp="yesterday " * 10)))
    assert drop.reason == f"bad timestamp {('yesterday ' * 10)[:40]!r}"
    assert drop.kind == "bad_timestamp"


@pytest.mark.parametrize("offset", [SKEW, -SKEW, SKEW + 50])
def test_timestamps_outside_the_window_are_dropped(
    inbound: Inbound, key: bytes, offset: float
) -> None:
    text = format_rfc1123(WALL)
    drop = dropped(check(inbound, frames(key), wall=WALL + offset))
    assert drop.reason == f"timestamp {text!r} outside the skew window"
    assert drop.kind == "bad_timestamp"


def test_timestamps_inside_the_window_are_accepted(inbound: Inbound, key: bytes) -> None:
    accepted(check(inbound, frames(key, sequence=1), wall=WALL + SKEW - 1))
    accepted(check(inbound, frames(key, sequence=2), wall=WALL - SKEW + 1))
    # The same text again (served from the one-entry cache), then another one.
    accepted(check(inbound, frames(key, sequence=3)))
    later = format_rfc1123(WALL + 1)
    accepted(check(inbound, frames(key, sequence=4, timestamp=later)))


# -- step 10: sequences ------------------------------------------------------------------------


def test_sequences_increase_per_connection(inbound: Inbound, key: bytes) -> None:
    accepted(check(inbound, frames(key, sequence=1)))
    accepted(check(inbound, frames(key, sequence=2)))
    drop = dropped(check(inbound, frames(key, sequence=2)))
    assert drop == Drop((ORG, NODE), "'acme'/'web1'", "sequence 2 not after 2", "replay")


def test_a_replay_on_a_new_connection_is_dropped(inbound: Inbound, key: bytes) -> None:
    for seq in (1, 2, 3):
        accepted(check(inbound, frames(key, sequence=seq)))
    drop = dropped(check(inbound, frames(key, sequence=2, rid=b"other")))
    assert drop.reason.startswith("replayed on a new connection: sequence 2 not after 3")


def test_a_reconnect_continues_across_connections(inbound: Inbound, key: bytes) -> None:
    accepted(check(inbound, frames(key, sequence=5)))
    accepted(check(inbound, frames(key, sequence=6, rid=b"new")))
    # The new connection restarting at 1 a second later is fine too.
    accepted(
        check(inbound, frames(key, sequence=1, rid=b"3rd", timestamp=format_rfc1123(WALL + 1)))
    )


def test_sequences_are_kept_per_org_node_and_incarnation(sessions: SessionKeys, key: bytes) -> None:
    inbound = make_inbound(sessions)
    inbound.orgs.resolve("beta", True, MONO)
    other_node = sessions.session_key(ORG, "web2")
    other_org = sessions.session_key("beta", NODE)
    accepted(check(inbound, frames(key, sequence=9)))
    accepted(check(inbound, frames(other_node, node="web2", sequence=1)))
    accepted(check(inbound, frames(other_org, org="beta", sequence=1)))
    accepted(check(inbound, frames(key, sequence=1, incarnation_id="inc-2", rid=b"B")))
    assert len(inbound.sequences) == 3


def test_2_0_messages_keep_no_sequence(inbound: Inbound, key: bytes) -> None:
    for _ in range(2):
        accepted(check(inbound, frames(key, version="2.0", sequence=1)))
    assert len(inbound.sequences) == 0


def test_a_dropped_message_does_not_move_the_sequence(inbound: Inbound, key: bytes) -> None:
    dropped(check(inbound, frames(b"f" * 32, sequence=50)))
    dropped(check(inbound, frames(key, sequence=40), wall=WALL + SKEW))
    accepted(check(inbound, frames(key, sequence=1)))


# -- the sequence table alone --------------------------------------------------------------------

KEY = ("acme", "web1")
T0 = 1_800_000_000.0


def test_each_connection_must_increase() -> None:
    table = SequenceTable()
    assert table.check(KEY, "inc", b"A", 1, T0) is None
    assert table.check(KEY, "inc", b"A", 2, T0) is None
    assert table.check(KEY, "inc", b"A", 2, T0) == "sequence 2 not after 2"


def test_replay_on_a_new_connection_is_refused() -> None:
    table = SequenceTable()
    for seq in (1, 2, 3):
        assert table.check(KEY, "inc", b"A", seq, T0 + seq) is None
    problem = table.check(KEY, "inc", b"B", 2, T0 + 2)
    assert problem is not None and problem.startswith("replayed on a new connection")
    # Not even the newest message can be replayed there.
    assert table.check(KEY, "inc", b"C", 3, T0 + 3) is not None


def test_a_new_connection_restarting_at_1_later_is_accepted() -> None:
    table = SequenceTable()
    table.check(KEY, "inc", b"A", 5, T0)
    assert table.check(KEY, "inc", b"B", 1, T0 + 1) is None
    assert table.check(KEY, "inc", b"B", 2, T0 + 1) is None
    # ... and the old connection's series still holds.
    assert table.check(KEY, "inc", b"A", 5, T0 + 2) == "sequence 5 not after 5"


def test_restart_in_the_same_second() -> None:
    table = SequenceTable()
    table.check(KEY, "inc", b"A", 1, T0)
    table.check(KEY, "inc", b"A", 2, T0 + 1)
    table.check(KEY, "inc", b"A", 3, T0 + 1)
    assert table.check(KEY, "inc", b"B", 1, T0 + 1) is None  # 1 was sent a second earlier
    # A connection's first message is always 1: accepted in the same second (the one copy left).
    assert table.check(KEY, "inc", b"C", 1, T0 + 1) is None
    assert table.check(KEY, "inc", b"D", 3, T0 + 1) is not None
    assert table.check(KEY, "inc", b"E", 2, T0 + 1) is not None  # A sent 2 in that second


def test_a_new_connection_continuing_the_count_is_accepted_in_the_same_second() -> None:
    table = SequenceTable()
    table.check(KEY, "inc", b"A", 5, T0)
    assert table.check(KEY, "inc", b"B", 6, T0) is None


def test_a_new_incarnation_starts_afresh_and_nodes_are_separate() -> None:
    table = SequenceTable()
    table.check(KEY, "inc1", b"A", 9, T0)
    assert table.check(KEY, "inc2", b"B", 1, T0) is None
    assert table.check(("acme", "web2"), "inc1", b"C", 1, T0 - 100) is None


def test_forgotten_connections_cannot_be_replayed_either() -> None:
    table = SequenceTable(series_per_incarnation=2)
    table.check(KEY, "inc", b"A", 3, T0)
    table.check(KEY, "inc", b"B", 1, T0 + 1)
    table.check(KEY, "inc", b"C", 1, T0 + 2)  # evicts A's series
    assert table.check(KEY, "inc", b"A", 3, T0) is not None


def test_late_data_of_a_replaced_connection_is_not_the_latest() -> None:
    """A lossy link delivers an old connection's queued messages after the agent reconnected:
    they are fresh (never seen) but not the node's latest, so nothing is routed back there."""
    table = SequenceTable()
    assert table.check_route(KEY, "inc", b"old", 25, T0) == (None, True)
    assert table.check_route(KEY, "inc", b"new", 29, T0 + 4) == (None, True)  # reconnected
    assert table.check_route(KEY, "inc", b"old", 26, T0 + 1) == (None, False)  # sent earlier
    assert table.check_route(KEY, "inc", b"old", 27, T0 + 4) == (None, False)  # same second
    assert table.check_route(KEY, "inc", b"new", 30, T0 + 5) == (None, True)
    # A newer message on a known connection leads again (timestamps of a later second).
    assert table.check_route(KEY, "inc", b"old", 31, T0 + 6) == (None, True)
    # A refused message is never the latest.
    assert table.check_route(KEY, "inc", b"new", 30, T0 + 7)[1] is False


# -- labels (wire-protocol.md §15.1) ------------------------------------------------------------


def test_a_3_0_heartbeat_carries_validated_labels(inbound: Inbound, key: bytes) -> None:
    msg = accepted(check(inbound, frames(key, labels={"role": "web", "dc": "fra1"})))
    assert msg.labels == {"role": "web", "dc": "fra1"} and msg.problem is None


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({f"k{i}": "v" for i in range(65)}, "invalid labels: more than 64 labels (65)"),
        ({"Role": "web"}, "invalid labels: label key 'Role' must be"),
        ({"role": 7}, "invalid labels: label 'role' must be a string"),
        (["role"], "invalid labels: labels must be a map"),
    ],
)
def test_bad_labels_are_dropped_but_the_heartbeat_counts(
    inbound: Inbound, key: bytes, labels: Any, reason: str
) -> None:
    msg = accepted(check(inbound, frames(key, labels=labels)))
    assert msg.labels is None and msg.type == "heartbeat"
    assert msg.problem is not None and msg.problem.reason.startswith(reason)
    assert msg.problem.key == (ORG, NODE)


def test_2_0_heartbeats_have_no_labels(inbound: Inbound, key: bytes) -> None:
    msg = accepted(check(inbound, frames(key, version="2.0", sequence=..., labels={"role": "web"})))
    assert msg.labels is None and msg.problem is None

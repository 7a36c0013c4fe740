"""Validation of the messages the server receives on its command socket. Pure: no I/O, no clock.

`Inbound.check` runs wire-protocol.md §16 steps 1–10 in that order on one message — its frames
as bytes, the CURVE binding (`User-Id`) the broker read from them, `now` (monotonic: node-state
and log time) and `wall_now` (the skew check) — and answers:

- `Drop`: log one rate-limited line (`key` is what it is limited by) and forget the message;
- `Waiting`: its organization is being looked up (step 7). The broker starts the look-ups
  `orgs.take_lookups()` names, reports each answer to `orgs.resolve`, and `resume`s the
  messages that waited;
- `Accepted`: bind it to its node state (step 11) and dispatch it (step 12). `message` is the
  parsed body when dispatch needs one; `problem` is set when the message counts for its node
  state but its content is unusable (an unknown type, a malformed job message).

The state kept between messages: the sequence table (`SequenceTable`), the organization cache
(`OrgCache`) and the last timestamp parsed (agents of one second all send the same text). Session
keys are read from the in-memory table the config endpoint fills (`SessionKeyLookup`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pushjobs.protocol.envelope import Envelope, open_envelope
from pushjobs.protocol.errors import BodyError, HeaderError, MessageError, ProtocolError
from pushjobs.protocol.labels import label_problem
from pushjobs.protocol.messages import AgentMessage, parse_agent_message
from pushjobs.protocol.signing import HMAC_SHA256, HmacKey, verify_hmac
from pushjobs.protocol.timestamps import parse_rfc1123
from pushjobs.protocol.vocabulary import MessageType
from pushjobs.server.zeromq.org_cache import Gate, OrgCache

# Forwarded to the job (wire-protocol.md §16 step 12); a malformed one is dropped unseen.
JOB_MESSAGES: frozenset[MessageType] = frozenset(
    {
        MessageType.ACK_COMMIT,
        MessageType.NACK_COMMIT,
        MessageType.ACK_RUN,
        MessageType.NACK_RUN,
        MessageType.SUCCEEDED,
        MessageType.FAILED,
    }
)
_HEARTBEAT = MessageType.HEARTBEAT  # an enum attribute look-up costs ~0.1 µs on the hot path
_REQUIRED_STRINGS = ("node", "org", "type", "timestamp", "incarnation_id")
SERIES_PER_INCARNATION = 8  # connections remembered per (org, node, incarnation)
NEWEST_SEQUENCES_MAX = 64  # sequences remembered for the newest second; beyond, new series wait

Key = tuple[str, str]

# Why messages are dropped, as a small fixed set (the `reason` label of
# `pushjobs_zeromq_dropped_messages_total`; `Drop.reason` is the free-text log line).
MALFORMED = "malformed"  # steps 1-5: frames, header, body, common fields
CURVE_MISMATCH = "curve_mismatch"  # step 6
UNKNOWN_ORG = "unknown_org"  # step 7: no such organization, or its look-up failed
ORG_LOOKUP_BUSY = "org_lookup_busy"  # step 7: too many look-ups or parked messages
NO_SESSION_KEY = "no_session_key"  # step 8
BAD_SIGNATURE = "bad_signature"  # step 8
BAD_TIMESTAMP = "bad_timestamp"  # step 9: unreadable, or outside the skew window
REPLAY = "replay"  # step 10: sequence not after the last one
INVALID = "invalid"  # step 12: unknown type, malformed job message, output on 2.0
INTERNAL_ERROR = "internal_error"  # a bug hit by the message (logged with a traceback)
DROP_KINDS = (
    MALFORMED,
    CURVE_MISMATCH,
    UNKNOWN_ORG,
    ORG_LOOKUP_BUSY,
    NO_SESSION_KEY,
    BAD_SIGNATURE,
    BAD_TIMESTAMP,
    REPLAY,
    INVALID,
    INTERNAL_ERROR,
)


class SessionKeyLookup(Protocol):
    """What validation needs of the session keys: the key a node's messages are signed with."""

    def existing_key(self, org: str, node: str) -> HmacKey | None: ...


# The results are plain (not frozen) dataclasses: building a frozen one costs about 1 µs, a
# noticeable share of a heartbeat's processing. They are values: nothing changes them.


@dataclass(slots=True)
class Drop:
    """Log `dropped message from <sender>: <reason>`, rate-limited per `key`.

    `key` is the connection (routing id) until the fields are trusted to name a node, then
    ("curve", User-Id) for a binding mismatch (so made-up names cost one line), then the
    claimed (org, node).
    """

    key: Hashable
    sender: str
    reason: str
    kind: str = "invalid"  # one of `DROP_KINDS`: the metrics label (the reason is free text)


@dataclass(slots=True)
class Accepted:
    """A message that passed steps 1–10: for node state (step 11) and dispatch (step 12)."""

    org: str
    node: str
    incarnation_id: str
    routing_id: bytes
    version: str
    type: str
    job_id: str | None
    message: AgentMessage | None = None  # job messages, `aborted` naming a job, `output`
    problem: Drop | None = None  # counts for node state, but its content is dropped
    # False for a late 3.0 message on an older connection of the node (data a lossy link
    # delivered after the agent had reconnected): replies must not be routed back to it.
    latest: bool = True
    # The validated `labels` of a 3.0 heartbeat that carries them (wire-protocol.md §15.1).
    labels: dict[str, str] | None = None


@dataclass(slots=True)
class Waiting:
    """A message parked until its organization's look-up answers (see `Inbound.resume`)."""

    routing_id: bytes
    envelope: Envelope
    received: float  # the `now` it was checked with


class Inbound:
    """Steps 1–10 of wire-protocol.md §16 and the state they keep."""

    def __init__(
        self,
        *,
        sessions: SessionKeyLookup,
        curve: bool,
        max_body: int,
        max_skew: float,
        orgs: OrgCache[Waiting] | None = None,
    ) -> None:
        self.sessions = sessions
        self.curve = curve
        self.max_body = max_body
        self.max_skew = max_skew
        self.orgs: OrgCache[Waiting] = OrgCache() if orgs is None else orgs
        self.sequences = SequenceTable()
        self._ts_text = ""
        self._ts_value = 0.0

    def check(
        self, frames: Sequence[bytes], user_id: str | None, now: float, wall_now: float
    ) -> Accepted | Drop | Waiting:
        """Validate one message; `user_id` is its CURVE binding (None without CURVE)."""
        # Step 1: frames.
        if len(frames) != 3:
            return self._anonymous(frames, user_id, f"{len(frames)} frames instead of 3")
        routing_id = frames[0]
        # Steps 2-4: header, body size, decoding.
        try:
            env = open_envelope(frames[1], frames[2], self.max_body, HMAC_SHA256)
        except HeaderError as exc:
            return self._anonymous(frames, user_id, f"bad header: {exc}")
        except BodyError as exc:
            return self._anonymous(frames, user_id, f"bad body: {exc}")
        except ProtocolError as exc:
            return self._anonymous(frames, user_id, f"invalid message: {exc}")
        fields = env.fields
        # Step 5: common fields.
        problem = common_field_problem(fields, env.version)
        if problem is not None:
            return self._anonymous(frames, user_id, problem)
        # Step 6: over CURVE the message names the node its key is bound to — before the
        # organization is looked up, so one connection cannot make the server look up (and
        # cache) names without end. A mismatch is limited per binding, not per claimed name.
        if self.curve and user_id != f"{fields['org']}/{fields['node']}":
            return Drop(
                ("curve", user_id),
                f"{user_id!r} (CURVE key)",
                f"message for {_who(fields)} does not match its CURVE key",
                CURVE_MISMATCH,
            )
        # Step 7: the organization exists.
        org = fields["org"]
        gate = self.orgs.admit(org, now)
        if gate is Gate.EXISTS:
            return self._verify(routing_id, env, wall_now)
        if gate is Gate.UNKNOWN:
            waiting = Waiting(routing_id, env, now)
            refused = self.orgs.park(org, waiting)
            return waiting if refused is None else _claimed(fields, refused, ORG_LOOKUP_BUSY)
        return _claimed(fields, gate, UNKNOWN_ORG)

    def _anonymous(self, frames: Sequence[bytes], user_id: str | None, reason: str) -> Drop:
        """A drop before the fields name a node: from its CURVE binding, else its connection."""
        routing_id = frames[0] if frames else b""
        if self.curve and user_id:
            return Drop(routing_id, f"{user_id!r} (CURVE key)", reason, MALFORMED)
        return Drop(routing_id, f"connection {routing_id.hex()}", reason, MALFORMED)

    def resume(self, waiting: Waiting, exists: bool | None, wall_now: float) -> Accepted | Drop:
        """Go on with a parked message once its organization's look-up answered `exists`
        (None: the look-up failed)."""
        fields = waiting.envelope.fields
        org = fields["org"]
        if exists:
            return self._verify(waiting.routing_id, waiting.envelope, wall_now)
        if exists is None:
            return _claimed(fields, f"cannot look up organization {org!r}", UNKNOWN_ORG)
        return _claimed(fields, f"organization {org!r} does not exist", UNKNOWN_ORG)

    def _verify(self, routing_id: bytes, env: Envelope, wall_now: float) -> Accepted | Drop:
        """Steps 8-10 for a message whose organization exists, then its content."""
        fields = env.fields
        org = fields["org"]
        node = fields["node"]
        key = (org, node)
        # Step 8: session key and HMAC.
        session_key = self.sessions.existing_key(org, node)
        if session_key is None:
            return _claimed(fields, "no session key (config not fetched)", NO_SESSION_KEY)
        if not verify_hmac(session_key, env.body, env.header.signature):
            return _claimed(fields, "bad signature", BAD_SIGNATURE)
        # Step 9: timestamp within the skew window.
        text = fields["timestamp"]
        if text == self._ts_text:
            ts = self._ts_value
        else:
            try:
                ts = parse_rfc1123(text)
            except ProtocolError:
                return _claimed(fields, f"bad timestamp {text[:40]!r}", BAD_TIMESTAMP)
            self._ts_text, self._ts_value = text, ts
        if abs(wall_now - ts) >= self.max_skew:
            return _claimed(fields, f"timestamp {text!r} outside the skew window", BAD_TIMESTAMP)
        incarnation = fields["incarnation_id"]
        version = env.version
        # Step 10: 3.0 sequences strictly increase per connection, and a new connection
        # cannot replay what another one of the same incarnation sent (`SequenceTable`).
        latest = True
        if version == "3.0":
            problem, latest = self.sequences.check_route(
                key, incarnation, routing_id, fields["sequence"], ts
            )
            if problem is not None:
                return _claimed(fields, problem, REPLAY)
        accepted = _content(fields, org, node, incarnation, routing_id, version)
        accepted.latest = latest
        return accepted


def _content(
    fields: dict[str, Any],
    org: str,
    node: str,
    incarnation: str,
    routing_id: bytes,
    version: str,
) -> Accepted:
    """The accepted message with what step 12 needs: its parsed body, or why it is unusable.

    Heartbeats are not parsed (the hot path builds no message objects for them).
    """
    msg_type = fields["type"]
    job_id = fields.get("job_id")
    if msg_type == _HEARTBEAT:
        beat = Accepted(org, node, incarnation, routing_id, version, msg_type, job_id)
        labels = fields.get("labels")
        if labels is not None and version == "3.0":
            problem = label_problem(labels)
            if problem is None:
                beat.labels = dict(labels)
            else:  # the heartbeat still counts; its labels are dropped
                beat.problem = _claimed(fields, f"invalid labels: {problem}")
        return beat
    parsed: AgentMessage | Drop | None = None
    if msg_type in JOB_MESSAGES or (msg_type == MessageType.ABORTED and job_id is not None):
        parsed = _parse(fields, version)
    elif msg_type == MessageType.OUTPUT:
        if version != "3.0":
            parsed = _claimed(fields, "output messages need protocol 3.0")
        else:
            parsed = _parse(fields, version)
    elif msg_type != MessageType.ABORTED:
        parsed = _claimed(fields, f"unknown message type {msg_type[:40]!r}")
    if isinstance(parsed, Drop):
        return Accepted(org, node, incarnation, routing_id, version, msg_type, job_id, None, parsed)
    return Accepted(org, node, incarnation, routing_id, version, msg_type, job_id, parsed)


def _parse(fields: dict[str, Any], version: str) -> AgentMessage | Drop:
    try:
        return parse_agent_message(fields, version)
    except MessageError as exc:
        return _claimed(fields, f"invalid {fields['type']}: {exc}")


def common_field_problem(fields: Mapping[str, Any], version: str) -> str | None:
    """Why the common fields (wire-protocol.md §13) are unusable, or None when they are fine."""
    for name in _REQUIRED_STRINGS:
        value = fields.get(name)
        if value is None:
            return f"missing field '{name}'"
        if type(value) is not str:
            return f"field '{name}' must be a string"
    sequence = fields.get("sequence")
    if sequence is None:
        if version == "3.0":
            return "missing field 'sequence'"
    elif type(sequence) is not int:
        return "field 'sequence' must be an integer"
    job_id = fields.get("job_id")
    if job_id is not None and type(job_id) is not str:
        return "field 'job_id' must be a string or null"
    return None


def _who(fields: Mapping[str, Any]) -> str:
    """The claimed org/node of a message, quoted: they are untrusted until verified."""
    return f"{fields['org']!r}/{fields['node']!r}"


def _claimed(fields: Mapping[str, Any], reason: str, kind: str = INVALID) -> Drop:
    """A drop limited per the (org, node) the message claims."""
    return Drop((fields["org"], fields["node"]), _who(fields), reason, kind)


# -- replay protection (wire-protocol.md §8, tightened) ------------------------------------------


@dataclass(slots=True)
class _Track:
    incarnation: str
    high: int = -1  # highest sequence accepted on any connection
    newest: float = float("-inf")  # newest timestamp accepted on any connection
    newest_seqs: set[int] = field(default_factory=set)  # sequences accepted with `newest`
    series: dict[bytes, int] = field(default_factory=dict)  # routing id -> last sequence


class SequenceTable:
    """3.0 sequences per (org, node, client incarnation): `check` returns None when a message
    is fresh (and records it), else why it is not.

    Agents number their messages from 1 on every connection, so the table keeps one series per
    routing id — but a series alone lets anyone who captured a message replay it on a new
    connection (a new routing id starts a new series). So it also keeps, per (org, node,
    incarnation), the highest sequence and the newest timestamp accepted over all its
    connections, with the sequences accepted in that newest second. A message on a connection
    not seen before is accepted only when it cannot be a copy of one already accepted: its
    sequence is above the high-water (agents that keep counting across connections), or its
    timestamp is later than the newest, or it is of the newest second under a sequence not
    accepted in that second (agents that restart at 1, reconnecting within a second of their
    last message). Sequence 1 of the newest second is always accepted on a new connection:
    agents number every connection from 1, so their first message after a quick reconnect
    looks like that.
    """

    def __init__(self, series_per_incarnation: int = SERIES_PER_INCARNATION) -> None:
        self.series_limit = series_per_incarnation
        self._tracks: dict[Key, _Track] = {}

    def check(
        self,
        key: Key,
        incarnation: str,
        routing_id: bytes,
        sequence: int,
        timestamp: float,
    ) -> str | None:
        """Why the message is not fresh, or None (then it is recorded)."""
        return self.check_route(key, incarnation, routing_id, sequence, timestamp)[0]

    def check_route(
        self,
        key: Key,
        incarnation: str,
        routing_id: bytes,
        sequence: int,
        timestamp: float,
    ) -> tuple[str | None, bool]:
        """`check`, and whether a fresh message is the incarnation's latest: False for a
        message on a connection seen before that is older than one already accepted on
        another (older timestamp, or the same second under a lower sequence) — data of a
        replaced connection arriving late, to which nothing must be routed any more."""
        track = self._tracks.get(key)
        if track is None or track.incarnation != incarnation:
            track = self._tracks[key] = _Track(incarnation)
        last = track.series.get(routing_id)
        latest = (
            last is None
            or timestamp > track.newest
            or (timestamp == track.newest and sequence > track.high)
        )
        if last is not None:
            if sequence <= last:
                return f"sequence {sequence} not after {last}", False
        elif sequence <= track.high and not _fresh_in_time(track, sequence, timestamp):
            return (
                f"replayed on a new connection: sequence {sequence} not after {track.high} "
                "and not newer than the messages accepted before"
            ), False
        elif len(track.series) >= self.series_limit:
            del track.series[next(iter(track.series))]
        track.series[routing_id] = sequence
        if sequence > track.high:
            track.high = sequence
        if timestamp > track.newest:
            track.newest = timestamp
            track.newest_seqs = {sequence}
        elif timestamp == track.newest and len(track.newest_seqs) < NEWEST_SEQUENCES_MAX:
            track.newest_seqs.add(sequence)
        return None, latest

    def __len__(self) -> int:
        return len(self._tracks)


def _fresh_in_time(track: _Track, sequence: int, timestamp: float) -> bool:
    if timestamp > track.newest:
        return True
    if timestamp < track.newest:
        return False
    # The first message of every connection is 1: a reconnect within the same second must not
    # lose it (it moves the node to the new connection). Such a copy is the one replay left.
    return sequence == 1 or (
        sequence not in track.newest_seqs and len(track.newest_seqs) < NEWEST_SEQUENCES_MAX
    )

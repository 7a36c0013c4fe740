"""Validation of messages the agent receives (wire-protocol.md §18). Pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from pushjobs.protocol.compat import dataclass
from pushjobs.protocol.envelope import (
    Envelope,
    open_envelope,
    verify_envelope_hmac,
    verify_envelope_rsa,
)
from pushjobs.protocol.errors import ProtocolError
from pushjobs.protocol.limits import AGENT_BODY_LIMIT
from pushjobs.protocol.messages import ServerHeartbeat
from pushjobs.protocol.signing import HMAC_SHA256, RSA2048_SHA1
from pushjobs.protocol.timestamps import parse_rfc1123, within_skew
from pushjobs.protocol.vocabulary import MessageType

# The server messages of the command socket (wire-protocol.md §14, §18 step 2).
COMMAND_TYPES = frozenset({MessageType.COMMIT, MessageType.RUN, MessageType.ABORT, MessageType.ACK})


@dataclass(frozen=True, slots=True)
class Drop:
    """Why a message was dropped (`reason` is the rate-limit key, `detail` the specifics)."""

    reason: str
    detail: str = ""


def _check_time(fields: Mapping[str, Any], now: float, max_skew: float) -> Drop | None:
    try:
        stamp = parse_rfc1123(fields.get("timestamp"))  # type: ignore[arg-type]
    except ProtocolError:
        return Drop("missing or unparsable timestamp")
    if not within_skew(stamp, now, max_skew):
        return Drop("timestamp outside the allowed skew", str(fields.get("timestamp")))
    sequence = fields.get("sequence")
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        return Drop("missing or non-integer sequence")
    return None


def _open(frames: list[bytes], channel: str, method: str, version: str) -> Envelope | Drop:
    """The envelope of a 2-frame message of `version` signed with `method` (not yet verified)."""
    if len(frames) != 2:
        return Drop(f"{channel} channel: wrong frame count", f"{len(frames)} frames")
    try:
        env = open_envelope(frames[0], frames[1], AGENT_BODY_LIMIT, method)
    except ProtocolError as exc:
        return Drop(f"{channel} channel: bad header or body", str(exc))
    if env.version != version:
        return Drop(f"{channel} channel: not protocol {version}", env.version)
    return env


def check_command(
    frames: list[bytes], *, key: bytes, max_skew: float, last_sequence: int, now: float
) -> dict[str, Any] | Drop:
    """A DEALER message: 2 frames, 3.0, hmac_sha256 with the session key, fresh, sequence
    above `last_sequence`, a command type. Returns the body fields or why it is dropped."""
    env = _open(frames, "command", HMAC_SHA256, "3.0")
    if isinstance(env, Drop):
        return env
    if not verify_envelope_hmac(env, key):
        return Drop("command channel: HMAC does not verify")
    problem = _check_time(env.fields, now, max_skew)
    if problem:
        return Drop(f"command channel: {problem.reason}", problem.detail)
    if env.fields["sequence"] <= last_sequence:
        return Drop("command channel: sequence not increasing", str(env.fields["sequence"]))
    if env.fields.get("type") not in COMMAND_TYPES:
        return Drop("command channel: unexpected message type", repr(env.fields.get("type"))[:80])
    return env.fields


def check_heartbeat(
    frames: list[bytes],
    *,
    public_key: RSAPublicKey,
    max_skew: float,
    last_sequences: Mapping[str, int],
    now: float,
) -> ServerHeartbeat | Drop:
    """A SUB message: 2 frames, 2.0, rsa2048_sha1 with the server key, a heartbeat, fresh,
    sequence above the last one of the same server incarnation."""
    env = _open(frames, "heartbeat", RSA2048_SHA1, "2.0")
    if isinstance(env, Drop):
        return env
    if not verify_envelope_rsa(env, public_key):
        return Drop("heartbeat channel: signature does not verify")
    if env.fields.get("type") != MessageType.HEARTBEAT:
        return Drop("heartbeat channel: not a heartbeat", repr(env.fields.get("type"))[:80])
    try:
        beat = ServerHeartbeat.from_dict(env.fields)
    except ProtocolError as exc:
        return Drop("heartbeat channel: invalid heartbeat", str(exc))
    problem = _check_time(env.fields, now, max_skew)
    if problem:
        return Drop(f"heartbeat channel: {problem.reason}", problem.detail)
    if beat.sequence <= last_sequences.get(beat.incarnation_id, -1):
        return Drop("heartbeat channel: sequence not increasing", str(beat.sequence))
    return beat

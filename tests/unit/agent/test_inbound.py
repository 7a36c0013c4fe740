"""The agent's inbound validation (wire-protocol.md §18)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pushjobs.agent.inbound import Drop, check_command, check_heartbeat
from pushjobs.protocol.envelope import seal_heartbeat, seal_hmac
from pushjobs.protocol.keys import generate_rsa_key
from pushjobs.protocol.timestamps import format_rfc1123

KEY = b"s" * 32
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def server_key() -> Any:
    return generate_rsa_key()


def command(**fields: Any) -> list[bytes]:
    body = {"type": "commit", "sequence": 5, "timestamp": format_rfc1123(NOW), "job_id": "j"}
    body.update(fields)
    return list(seal_hmac("3.0", body, KEY))


def check(frames: list[bytes], last: int = 0, now: float = NOW) -> Any:
    return check_command(frames, key=KEY, max_skew=300, last_sequence=last, now=now)


def test_valid_command() -> None:
    fields = check(command())
    assert isinstance(fields, dict)
    assert fields["type"] == "commit" and fields["job_id"] == "j"


def test_commit_without_job_id_still_reaches_the_runner() -> None:
    body = {"type": "commit", "sequence": 5, "timestamp": format_rfc1123(NOW)}
    fields = check(list(seal_hmac("3.0", body, KEY)))
    assert isinstance(fields, dict) and "job_id" not in fields


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([b"x"], "wrong frame count"),
        ([b"a", b"b", b"c"], "wrong frame count"),
        ([b"Version:3.0;SigningMethod:hmac_sha256", b"\x80"], "bad header or body"),
    ],
)
def test_frames_and_header(frames: list[bytes], reason: str) -> None:
    result = check(frames)
    assert isinstance(result, Drop) and reason in result.reason


def test_version_2_refused_on_dealer() -> None:
    body = {"type": "commit", "sequence": 5, "timestamp": format_rfc1123(NOW)}
    result = check(list(seal_hmac("2.0", body, KEY)))
    assert isinstance(result, Drop) and "not protocol 3.0" in result.reason


def test_wrong_hmac_key() -> None:
    body = {"type": "commit", "sequence": 5, "timestamp": format_rfc1123(NOW)}
    result = check(list(seal_hmac("3.0", body, b"x" * 32)))
    assert isinstance(result, Drop) and "HMAC" in result.reason


def test_tampered_body() -> None:
    header, body = command()
    result = check([header, body.replace(b"commit", b"abort\xa0")])
    assert isinstance(result, Drop)


@pytest.mark.parametrize("offset", [-400, 400])
def test_timestamp_skew_both_sides(offset: float) -> None:
    result = check(command(timestamp=format_rfc1123(NOW + offset)))
    assert isinstance(result, Drop) and "skew" in result.reason
    assert isinstance(check(command(timestamp=format_rfc1123(NOW + offset / 4))), dict)


def test_bad_timestamp_and_sequence() -> None:
    assert isinstance(check(command(timestamp="yesterday")), Drop)
    assert isinstance(check(command(sequence="5")), Drop)
    assert isinstance(check(command(sequence=True)), Drop)


def test_sequence_must_increase() -> None:
    assert isinstance(check(command(sequence=5), last=5), Drop)
    assert isinstance(check(command(sequence=4), last=5), Drop)
    assert isinstance(check(command(sequence=6), last=5), dict)


def test_heartbeat_type_refused_on_dealer() -> None:
    result = check(command(type="heartbeat"))
    assert isinstance(result, Drop) and "unexpected message type" in result.reason


def test_body_limit() -> None:
    result = check(command(file="raw:" + "x" * (2 * 1024 * 1024)))
    assert isinstance(result, Drop) and "bad header or body" in result.reason


# ---- heartbeats -----------------------------------------------------------------------------


def beat(key: Any, **fields: Any) -> list[bytes]:
    body = {
        "type": "heartbeat",
        "server": "push1",
        "incarnation_id": "inc-1",
        "sequence": 3,
        "timestamp": format_rfc1123(NOW),
    }
    body.update(fields)
    return list(seal_heartbeat(body, key))


def check_beat(frames: list[bytes], key: Any, last: dict[str, int] | None = None) -> Any:
    return check_heartbeat(
        frames, public_key=key.public_key(), max_skew=300, last_sequences=last or {}, now=NOW
    )


def test_valid_heartbeat(server_key: Any) -> None:
    result = check_beat(beat(server_key), server_key)
    assert not isinstance(result, Drop)
    assert result.incarnation_id == "inc-1" and result.sequence == 3


def test_heartbeat_from_another_key(server_key: Any) -> None:
    other = generate_rsa_key()
    result = check_beat(beat(other), server_key)
    assert isinstance(result, Drop) and "signature" in result.reason


def test_commit_on_the_heartbeat_socket_is_dropped(server_key: Any) -> None:
    result = check_beat(beat(server_key, type="commit", job_id="x"), server_key)
    assert isinstance(result, Drop) and "not a heartbeat" in result.reason


def test_hmac_message_on_the_heartbeat_socket_is_dropped(server_key: Any) -> None:
    result = check_beat(command(type="heartbeat"), server_key)
    assert isinstance(result, Drop)


def test_heartbeat_sequence_per_incarnation(server_key: Any) -> None:
    assert isinstance(check_beat(beat(server_key), server_key, {"inc-1": 3}), Drop)
    assert not isinstance(check_beat(beat(server_key), server_key, {"inc-0": 9}), Drop)
    assert not isinstance(check_beat(beat(server_key, sequence=0), server_key, {}), Drop)


def test_stale_heartbeat(server_key: Any) -> None:
    frames = beat(server_key, timestamp=format_rfc1123(NOW - 1000))
    assert isinstance(check_beat(frames, server_key), Drop)


def test_real_clock_roundtrip() -> None:
    # the same path the link uses, with the wall clock
    body = {"type": "abort", "sequence": 1, "timestamp": format_rfc1123(time.time())}
    result = check_command(
        list(seal_hmac("3.0", body, KEY)), key=KEY, max_skew=300, last_sequence=0, now=time.time()
    )
    assert isinstance(result, dict) and result["type"] == "abort"

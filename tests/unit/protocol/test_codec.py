"""Body codecs (wire-protocol.md §5) and message round trips through both of them."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from pushjobs.protocol.codec import decode_body, encode_body
from pushjobs.protocol.errors import BodyError
from pushjobs.protocol.messages import (
    Abort,
    Aborted,
    Ack,
    AckCommit,
    AckRun,
    AgentHeartbeat,
    Commit,
    Failed,
    NackCommit,
    NackRun,
    Output,
    Run,
    ServerHeartbeat,
    Succeeded,
    parse_agent_message,
    parse_server_message,
)

TS = "Fri, 27 Nov 2026 05:56:29 GMT"
JOB = "b6cb8489412648d4a9bd680355578a25"
LIMIT = 65536


def common(version: str, **extra: Any) -> dict[str, Any]:
    return {
        "node": "web1",
        "client": "web1host",
        "org": "acme",
        "sequence": 7,
        "timestamp": TS,
        "incarnation_id": "9ac45b43-3074-4b60-a222-5fea2d2a2cba",
        "protocol_version": version,
        **extra,
    }


SERVER_MESSAGES = [
    ServerHeartbeat("push1", "e0d96969-db1a-4df5-aabd-a029de131ca3", sequence=0, timestamp=TS),
    Abort(sequence=1, timestamp=TS),
    Ack(sequence=2, timestamp=TS),
    Commit(JOB, "push.example.com", "deploy api", True, sequence=3, timestamp=TS),
    Commit(
        JOB,
        "push.example.com",
        "deploy ünïcode",
        False,
        user="deploy",
        dir="/srv",
        env={"RELEASE": "42", "EMPTY": ""},
        file="base64:aGVsbG8=",
        run_timeout=600,
        sequence=4,
        timestamp=TS,
    ),
    Run(JOB, sequence=5, timestamp=TS),
]


def agent_messages(version: str) -> list[Any]:
    msgs: list[Any] = [
        AgentHeartbeat("idle", **common(version)),
        AgentHeartbeat("running", **common(version, job_id=JOB)),
        AckCommit(**common(version, job_id=JOB)),
        NackCommit(**common(version)),
        AckRun(**common(version, job_id=JOB)),
        NackRun(**common(version, job_id=None)),
        Aborted(**common(version, job_id=JOB)),
        Aborted(**common(version)),
    ]
    if version == "2.0":
        msgs += [
            Succeeded(**common(version, job_id=JOB), stdout="hé\n", stderr=""),
            Failed(**common(version, job_id=JOB)),
        ]
    else:
        msgs += [
            Succeeded(
                **common(version, job_id=JOB),
                exit_status=0,
                stdout_bytes=1234,
                stderr_bytes=0,
            ),
            Failed(**common(version, job_id=JOB), exit_status=2),
            Failed(**common(version, job_id=JOB), signal="SIGKILL"),
            Failed(**common(version, job_id=JOB)),
            Output("stdout", 0, b"\x00\xffbinary\n", **common(version, job_id=JOB)),
            Output("stderr", 99, b"x" * 32768, omitted_bytes=5, **common(version, job_id=JOB)),
        ]
    return msgs


@pytest.mark.parametrize("version", ["2.0", "3.0"])
@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_messages_round_trip(version: str, msg: Any) -> None:
    body = encode_body(version, msg.to_dict())
    fields = decode_body(version, body, LIMIT)
    assert list(fields) == list(msg.to_dict())
    assert parse_server_message(fields) == msg


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_agent_messages_round_trip(version: str) -> None:
    msgs = agent_messages(version)
    assert {type(m) for m in msgs} >= {
        AgentHeartbeat,
        AckCommit,
        NackCommit,
        AckRun,
        NackRun,
        Succeeded,
        Failed,
        Aborted,
    }
    for msg in msgs:
        body = encode_body(version, msg.to_dict())
        fields = decode_body(version, body, LIMIT)
        assert list(fields) == list(msg.to_dict())
        assert parse_agent_message(fields, version) == msg


def test_output_bytes_stay_bytes_in_3_0() -> None:
    msg = Output("stdout", 10, b"caf\xc3\xa9\xff", **common("3.0", job_id=JOB))
    body = encode_body("3.0", msg.to_dict())
    raw = msgpack.unpackb(body, raw=True)  # bin vs str is visible only with raw=True
    assert raw[b"data"] == b"caf\xc3\xa9\xff"
    decoded = decode_body("3.0", body, LIMIT)
    assert isinstance(decoded["data"], bytes)
    assert isinstance(decoded["node"], str)
    parsed = parse_agent_message(decoded, "3.0")
    assert isinstance(parsed, Output) and parsed.data == b"caf\xc3\xa9\xff"


def test_3_0_text_is_msgpack_str() -> None:
    body = encode_body("3.0", {"type": "heartbeat", "node": "n"})
    assert msgpack.unpackb(body, raw=True) == {b"type": b"heartbeat", b"node": b"n"}
    # str type, not bin: the raw=False decode gives str back
    assert msgpack.unpackb(body, raw=False) == {"type": "heartbeat", "node": "n"}


def test_json_is_compact_utf8_in_given_order() -> None:
    body = encode_body("2.0", {"z": 1, "a": None, "m": "é✓", "l": [1, 2], "t": True})
    assert body == '{"z":1,"a":null,"m":"é✓","l":[1,2],"t":true}'.encode()


def test_encode_errors() -> None:
    with pytest.raises(BodyError):
        encode_body("2.0", {"data": b"bytes are not JSON"})
    with pytest.raises(BodyError):
        encode_body("2.0", {"x": float("nan")})
    with pytest.raises(BodyError):
        encode_body("1.0", {"a": 1})
    with pytest.raises(BodyError):
        encode_body("3.0", {"x": object()})


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_size_limit(version: str) -> None:
    body = encode_body(version, {"pad": "x" * 100})
    assert decode_body(version, body, len(body)) == {"pad": "x" * 100}
    with pytest.raises(BodyError):
        decode_body(version, body, len(body) - 1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"1",
        b'"text"',
        b"null",
        b"{",
        b'{"a":1} x',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b"\xff\xfe{}",
        b'{"a":"\xff"}',
        b"\xef\xbb\xbf{}",
        b"[" * 100000,
        b'{"a":' + b"1" * 5000 + b"}",
        b'{"a": 1}\n\x00',
        b'{"a":"\\ud800"}',  # lone surrogate escape: not valid Unicode
        b'{"\\udfff":1}',
        b'{"a":[{"b":"x\\ud83d"}]}',
    ],
)
def test_bad_json_bodies(raw: bytes) -> None:
    with pytest.raises(BodyError):
        decode_body("2.0", raw, 1_000_000)


def test_json_whitespace_and_any_key_order_accepted() -> None:
    assert decode_body("2.0", b' { "b" : 1 , "a" : [ ] } ', 100) == {"b": 1, "a": []}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        msgpack.packb([1, 2]),
        msgpack.packb("text"),
        msgpack.packb(None),
        msgpack.packb({"a": 1}) + b"\x00",  # trailing data
        msgpack.packb({b"a": 1}, use_bin_type=True),  # bin key
        msgpack.packb({1: 1}),  # int key
        msgpack.packb({"a": {b"k": 1}}, use_bin_type=True),  # nested bin key
        msgpack.packb({"a": msgpack.ExtType(5, b"xx")}),  # ext type
        msgpack.packb({"a": msgpack.Timestamp(1, 0)}),  # timestamp ext
        b"\x81\xa1a\xa2\xff\xfe",  # str value with invalid UTF-8
        b"\x81\xa1a",  # truncated
        b"\xc1",  # never-used byte
        b"\x91" * 5000 + b"\x80",  # deep nesting
        b"\xdf\xff\xff\xff\xff",  # map header claiming 4G entries
    ],
)
def test_bad_msgpack_bodies(raw: bytes) -> None:
    with pytest.raises(BodyError):
        decode_body("3.0", raw, 1_000_000)


def test_unknown_version() -> None:
    with pytest.raises(BodyError):
        decode_body("1.0", b"{}", 100)


def test_json_body_round_trip_matches_stdlib() -> None:
    fields = {"node": "n", "env": {"A": "ü"}, "n": -3, "f": 1.5}
    body = encode_body("2.0", fields)
    assert json.loads(body) == fields
    assert decode_body("2.0", body, 1000) == fields

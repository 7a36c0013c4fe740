"""SubscriberConnection: the heartbeat port's ZMTP state machine (security issue 15, F8)."""

import struct

import pytest

from pushjobs.protocol.limits import SUBSCRIBER_FRAME_LIMIT
from pushjobs.server.zeromq.zmtp_sub import (
    GREETING,
    IGNORED,
    SEND,
    SUBSCRIBED,
    UNSUBSCRIBED,
    SubscriberConnection,
    ZmtpError,
    frame,
    message,
    parse_properties,
)


def greeting(major: int = 3, minor: int = 1, mechanism: bytes = b"NULL") -> bytes:
    return GREETING[:10] + bytes((major, minor)) + mechanism.ljust(20, b"\x00") + b"\x00" * 32


def ready(socket_type: bytes = b"SUB") -> bytes:
    body = b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return frame(body, command=True)


def connected() -> SubscriberConnection:
    conn = SubscriberConnection(created=0.0)
    events = conn.feed(greeting() + ready())
    assert events[0][0] == SEND and b"READY" in events[0][1] and b"PUB" in events[0][1]
    assert conn.ready and not conn.subscribed
    return conn


def test_handshake_and_empty_subscription_byte_by_byte():
    conn = SubscriberConnection(created=0.0)
    events = []
    for byte in greeting(minor=0) + ready() + frame(b"\x01"):
        events += conn.feed(bytes((byte,)))
    assert [kind for kind, _ in events] == [SEND, SUBSCRIBED]
    assert conn.subscribed


def test_3_1_subscribe_and_cancel_commands():
    conn = connected()
    assert conn.feed(frame(b"\x09SUBSCRIBE", command=True)) == [(SUBSCRIBED, b"")]
    assert conn.feed(frame(b"\x06CANCEL", command=True)) == [(UNSUBSCRIBED, b"")]
    assert not conn.subscribed


def test_other_topics_are_ignored_and_not_kept():
    conn = connected()
    events = conn.feed(b"".join(frame(b"\x01topic%d" % i) for i in range(1000)))
    assert events == [(IGNORED, b"topic%d" % i) for i in range(1000)]
    assert not conn.subscribed and len(conn._buf) == 0
    assert conn.feed(frame(b"\x00topic1")) == []  # cancelling a topic never held: nothing


def test_continuation_frames_are_not_subscriptions():
    conn = connected()
    assert conn.feed(frame(b"data", more=True) + frame(b"\x01")) == []
    assert conn.feed(frame(b"\x01")) == [(SUBSCRIBED, b"")]


def test_ping_is_answered_with_pong():
    conn = connected()
    [(kind, data)] = conn.feed(frame(b"\x04PING\x00\x0actx", command=True))
    assert kind == SEND and data == frame(b"\x04PONGctx", command=True)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x01\x02", "no greeting signature"),
        (greeting(major=2), "unsupported ZMTP version"),
        (greeting(mechanism=b"CURVE"), "unsupported security mechanism"),
        (greeting() + ready(b"DEALER"), "is not SUB"),
        (greeting() + frame(b"\x01"), "message before READY"),
        (greeting() + ready() + ready(), "second READY"),
        (greeting() + ready() + b"\x08\x00", "bad frame flags"),
        (greeting() + ready() + b"\x02" + struct.pack(">Q", 100 << 20), "frame of 104857600"),
        (greeting() + ready() + frame(b"\x01" + b"x" * SUBSCRIBER_FRAME_LIMIT), "limit"),
        (greeting() + frame(b"\x05READY\x0bSocket", command=True), "malformed READY"),
    ],
)
def test_protocol_errors_close_the_connection(data, reason):
    conn = SubscriberConnection(created=0.0)
    with pytest.raises(ZmtpError, match=reason):
        conn.feed(data)


def test_message_and_properties_encoding():
    assert message([b"a", b"b" * 300]) == b"\x01\x01a\x02" + struct.pack(">Q", 300) + b"b" * 300
    props = b"\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB" + b"\x01X" + struct.pack(">I", 0)
    assert parse_properties(props) == {b"Socket-Type": b"SUB", b"X": b""}

"""The publisher's side of one ZMTP 3.x connection from a SUB peer (pure: bytes in, events out).

The heartbeat port is unauthenticated (every message on it is RSA-signed), so anyone may connect
and subscribe. libzmq's PUB/XPUB keep every subscribed topic in a trie — even with
`ZMQ_XPUB_MANUAL`, which still records each topic per peer — so a stranger's subscriptions cost
the server unbounded memory. This state machine keeps one bit per connection instead: subscribed
to `""` or not. Any other topic is ignored; a frame longer than `SUBSCRIBER_FRAME_LIMIT` closes
the connection (READY with a few metadata properties fits; a subscription to "" is 1-10 bytes).

Supported: ZMTP 3.0 and 3.1 (libzmq >= 4.0), NULL mechanism, peers of type SUB or XSUB.
Subscriptions arrive as `0x01 + topic` messages (3.0) or `SUBSCRIBE` commands (3.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pushjobs.protocol.limits import SUBSCRIBER_FRAME_LIMIT

TOPIC_PREVIEW = 40  # bytes of an ignored topic shown in the log

GREETING_SIZE = 64
_SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"
# signature, version 3.0, mechanism, as-server (unused with NULL), filler
GREETING = _SIGNATURE + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31

_FLAG_MORE = 0x01
_FLAG_LONG = 0x02
_FLAG_COMMAND = 0x04
_PEER_TYPES = (b"SUB", b"XSUB")

# Events returned by `SubscriberConnection.feed`.
SEND = "send"  # detail: bytes to write to the peer
SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
IGNORED = "ignored"  # detail: the start of a topic other than ""


class ZmtpError(Exception):
    """The peer broke the protocol or a limit: close the connection (the message says why)."""


def frame(body: bytes, *, more: bool = False, command: bool = False) -> bytes:
    """One ZMTP 3.x frame."""
    flags = (_FLAG_MORE if more else 0) | (_FLAG_COMMAND if command else 0)
    if len(body) < 256:
        return bytes((flags, len(body))) + body
    return bytes((flags | _FLAG_LONG,)) + struct.pack(">Q", len(body)) + body


def message(parts: list[bytes]) -> bytes:
    """A multipart message as the bytes of its frames."""
    last = len(parts) - 1
    return b"".join(frame(part, more=i < last) for i, part in enumerate(parts))


def ready_command(socket_type: bytes) -> bytes:
    """The READY command frame announcing `socket_type`."""
    body = b"\x05READY" + _property(b"Socket-Type", socket_type)
    return frame(body, command=True)


def _property(name: bytes, value: bytes) -> bytes:
    return bytes((len(name),)) + name + struct.pack(">I", len(value)) + value


def parse_properties(data: bytes) -> dict[bytes, bytes]:
    """ZMTP metadata properties (name-length, name, 4-byte value length, value)."""
    props: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        name_len = data[pos]
        name_end = pos + 1 + name_len
        if name_len == 0 or name_end + 4 > len(data):
            raise ZmtpError("malformed READY properties")
        (value_len,) = struct.unpack_from(">I", data, name_end)
        value_end = name_end + 4 + value_len
        if value_end > len(data):
            raise ZmtpError("malformed READY properties")
        props[data[pos + 1 : name_end]] = data[name_end + 4 : value_end]
        pos = value_end
    return props


@dataclass(slots=True)
class SubscriberConnection:
    """One peer: greeting → READY → frames. `feed` returns events; raises ZmtpError to close."""

    created: float
    subscribed: bool = False
    ready: bool = False
    _greeted: bool = False
    _more: bool = False  # the last message frame had MORE: its continuation is not a subscription
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buf += data
        events: list[tuple[str, bytes]] = []
        if not self._greeted:
            if len(self._buf) < GREETING_SIZE:
                self._check_signature()
                return events
            self._greeting(bytes(self._buf[:GREETING_SIZE]))
            del self._buf[:GREETING_SIZE]
            self._greeted = True
            events.append((SEND, ready_command(b"PUB")))
        pos = 0
        buf = self._buf
        while True:
            parsed = self._next_frame(buf, pos)
            if parsed is None:
                break
            flags, body, pos = parsed
            if flags & _FLAG_COMMAND:
                self._command(body, events)
            elif not self.ready:
                raise ZmtpError("message before READY")
            else:
                self._message(flags, body, events)
        del buf[:pos]
        return events

    def _check_signature(self) -> None:
        if self._buf and self._buf[0] != 0xFF:
            raise ZmtpError("not a ZMTP 3.x peer (no greeting signature)")

    def _greeting(self, greeting: bytes) -> None:
        if greeting[0] != 0xFF or not greeting[9] & 0x01:
            raise ZmtpError("not a ZMTP 3.x peer (bad greeting signature)")
        if greeting[10] < 3:
            raise ZmtpError(f"unsupported ZMTP version {greeting[10]}.{greeting[11]}")
        mechanism = greeting[12:32].rstrip(b"\x00")
        if mechanism != b"NULL":
            raise ZmtpError(f"unsupported security mechanism {mechanism[:20]!r}")

    @staticmethod
    def _next_frame(buf: bytearray, pos: int) -> tuple[int, bytes, int] | None:
        if len(buf) - pos < 2:
            return None
        flags = buf[pos]
        if flags & ~(_FLAG_MORE | _FLAG_LONG | _FLAG_COMMAND):
            raise ZmtpError(f"bad frame flags 0x{flags:02x}")
        if flags & _FLAG_LONG:
            if len(buf) - pos < 9:
                return None
            (size,) = struct.unpack_from(">Q", buf, pos + 1)
            start = pos + 9
        else:
            size = buf[pos + 1]
            start = pos + 2
        if size > SUBSCRIBER_FRAME_LIMIT:
            raise ZmtpError(f"frame of {size} bytes (limit {SUBSCRIBER_FRAME_LIMIT})")
        end = start + size
        if end > len(buf):
            return None
        return flags, bytes(buf[start:end]), end

    def _command(self, body: bytes, events: list[tuple[str, bytes]]) -> None:
        if not body or len(body) < 1 + body[0]:
            raise ZmtpError("malformed command")
        name = body[1 : 1 + body[0]]
        data = body[1 + body[0] :]
        if name == b"READY":
            if self.ready:
                raise ZmtpError("second READY")
            socket_type = parse_properties(data).get(b"Socket-Type")
            if socket_type not in _PEER_TYPES:
                raise ZmtpError(f"peer socket type {socket_type!r} is not SUB")
            self.ready = True
        elif not self.ready:
            raise ZmtpError(f"command {name[:20]!r} before READY")
        elif name == b"SUBSCRIBE":
            self._subscription(True, data, events)
        elif name == b"CANCEL":
            self._subscription(False, data, events)
        elif name == b"PING":
            # PING: 2-byte TTL, then up to 16 bytes of context echoed in PONG.
            events.append((SEND, frame(b"\x04PONG" + data[2:18], command=True)))
        elif name == b"ERROR":
            raise ZmtpError("peer sent ERROR")
        # PONG and unknown commands are ignored (ZMTP 3.1).

    def _message(self, flags: int, body: bytes, events: list[tuple[str, bytes]]) -> None:
        first = not self._more
        self._more = bool(flags & _FLAG_MORE)
        if first and body and body[0] in (0, 1):
            self._subscription(body[0] == 1, body[1:], events)
        # Any other upstream message from a SUB is meaningless to a publisher: ignored.

    def _subscription(self, subscribe: bool, topic: bytes, events: list[tuple[str, bytes]]) -> None:
        if topic:
            if subscribe:
                events.append((IGNORED, topic[:TOPIC_PREVIEW]))
            return
        if subscribe != self.subscribed:
            self.subscribed = subscribe
            events.append((SUBSCRIBED if subscribe else UNSUBSCRIBED, b""))

"""A hand-written ZMTP 3.0/3.1 SUB client over a plain blocking TCP socket (run it in a thread).

Not libzmq: libzmq's own SUB/XSUB keep every topic in a trie too, so they cannot send the huge or
numerous subscriptions an attacker would. This client does the NULL-mechanism greeting, sends
READY with `Socket-Type: SUB`, then whatever subscription frames a test asks for — `0x01 + topic`
messages (3.0) or `SUBSCRIBE` commands (`minor=1`, 3.1) — and can read published messages.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"


def frame(body: bytes, *, flags: int = 0) -> bytes:
    if len(body) < 256:
        return bytes((flags, len(body))) + body
    return bytes((flags | 0x02,)) + struct.pack(">Q", len(body)) + body


class RawSubscriber:
    """One TCP connection speaking ZMTP 3.x as a SUB peer; methods block (timeout `timeout`)."""

    def __init__(self, host: str, port: int, *, minor: int = 0, timeout: float = 10.0) -> None:
        self.minor = minor
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def _recv_exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def handshake(self) -> bytes:
        """Greeting (NULL) and READY; returns the server's greeting."""
        greeting = SIGNATURE + bytes((3, self.minor)) + b"NULL".ljust(20, b"\x00") + b"\x00" * 32
        self.sock.sendall(greeting)
        theirs = self._recv_exact(64)
        ready = b"\x05READY\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
        self.sock.sendall(frame(ready, flags=0x04))
        flags, body = self.read_frame()
        assert flags & 0x04 and body.startswith(b"\x05READY"), (flags, body[:20])
        return theirs

    def subscription(self, topic: bytes) -> bytes:
        """The bytes of one subscription frame in this connection's ZMTP version."""
        if self.minor >= 1:
            return frame(b"\x09SUBSCRIBE" + topic, flags=0x04)
        return frame(b"\x01" + topic)

    def subscribe(self, topics: Iterable[bytes], *, batch: int = 1 << 20) -> None:
        """Send subscription frames, coalesced into writes of about `batch` bytes."""
        out = bytearray()
        for topic in topics:
            out += self.subscription(topic)
            if len(out) >= batch:
                self.sock.sendall(out)
                out.clear()
        if out:
            self.sock.sendall(out)

    def send_huge_subscription(self, size: int, *, chunk: int = 1 << 20) -> int:
        """Stream one `size`-byte subscription frame; returns the bytes sent before the server
        closed the connection (== the frame's length when it never did)."""
        header = b"\x02" + struct.pack(">Q", size) + b"\x01"
        sent = 0
        try:
            self.sock.sendall(header)
            sent = len(header)
            block = b"t" * chunk
            remaining = size - 1
            while remaining > 0:
                part = block[: min(chunk, remaining)]
                self.sock.sendall(part)
                sent += len(part)
                remaining -= len(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def read_frame(self) -> tuple[int, bytes]:
        flags = self._recv_exact(1)[0]
        if flags & 0x02:
            (size,) = struct.unpack(">Q", self._recv_exact(8))
        else:
            size = self._recv_exact(1)[0]
        return flags, self._recv_exact(size)

    def read_message(self) -> list[bytes]:
        """The next published message (commands such as PING are skipped)."""
        parts: list[bytes] = []
        while True:
            flags, body = self.read_frame()
            if flags & 0x04:
                continue
            parts.append(body)
            if not flags & 0x01:
                return parts

    def closed_by_server(self) -> bool:
        """True when the server has closed the connection (reads and discards what is left)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

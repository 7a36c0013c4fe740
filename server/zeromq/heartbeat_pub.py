"""The heartbeat publisher: ZMTP over a `ZMQ_STREAM` socket, one subscribed bit per connection.

Replaces a libzmq PUB, whose subscription trie any stranger could grow without bound (see
`zmtp_sub`). libzmq still does the TCP work in its I/O thread; this module parses each
connection's bytes with `SubscriberConnection` and writes every heartbeat, already framed, to
the connections subscribed to `""`. A heartbeat to a peer whose queue is full is dropped, as PUB
would drop it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

import zmq

from pushjobs.protocol.limits import SUBSCRIBER_CONNECTIONS_LIMIT
from pushjobs.protocol.log_throttle import LogThrottle
from pushjobs.server.zeromq.trio_socket import TrioSocket
from pushjobs.server.zeromq.zmtp_sub import (
    GREETING,
    IGNORED,
    SEND,
    SUBSCRIBED,
    SubscriberConnection,
    ZmtpError,
    message,
)

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds a connection may take to send its greeting and READY
CLOSED_REMEMBERED = 4096  # routing ids we closed, so their late disconnect notice is not a connect
# A subscriber sends a greeting, READY, one subscription and now and then a PING: a few hundred
# bytes. More than this between two heartbeats is a flood, and the connection is closed, so no
# peer can make libzmq buffer its bytes or keep the event loop busy answering PINGs.
INPUT_BUDGET = 16 * 1024
# libzmq buffers this many messages (raw chunks of up to 8 KiB) per connection and direction.
RCVHWM = 8
SNDHWM = 16  # a heartbeat that cannot be queued is worthless by the time it could be
LOG_INTERVAL = 10.0  # one warning per reason per interval, with the count of those held back
LOG_REASONS_REMEMBERED = 1001  # more, and every reason's count is forgotten at once


class HeartbeatPublisher:
    """Bound `ZMQ_STREAM` socket; `serve` reads connections, `publish` sends to subscribers."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        sock = ctx.socket(zmq.STREAM)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.bind(endpoint)
        self.sock = TrioSocket(sock)
        self._conns: dict[bytes, SubscriberConnection] = {}
        self._subscribers: set[bytes] = set()
        self._closed: OrderedDict[bytes, None] = OrderedDict()
        self._closing: set[bytes] = set()  # closes refused by a full queue, retried at publish
        self._received: dict[bytes, int] = {}  # bytes per connection since the last heartbeat
        self._log_throttle: LogThrottle[str] = LogThrottle(
            LOG_INTERVAL, max_keys=LOG_REASONS_REMEMBERED
        )
        self.sent = 0

    @property
    def port(self) -> int:
        endpoint = self.sock.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return int(endpoint.rsplit(":", 1)[1])

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def serve(self) -> None:
        """Read connection events and bytes until cancelled."""
        while True:
            for frames in await self.sock.recv_batch():
                if len(frames) == 2:
                    self._on_input(frames[0], frames[1])

    def _on_input(self, rid: bytes, data: bytes) -> None:
        conn = self._conns.get(rid)
        if not data:  # STREAM: an empty frame announces a connection or its end
            if conn is not None:
                self._forget(rid)
            elif rid in self._closed:
                del self._closed[rid]  # the end of a connection we closed ourselves
                self._closing.discard(rid)
            elif len(self._conns) >= SUBSCRIBER_CONNECTIONS_LIMIT:
                self._warn(
                    "full", "heartbeat port: %d connections, refusing more", len(self._conns)
                )
                self._close(rid)
            else:
                self._conns[rid] = SubscriberConnection(created=time.monotonic())
                self.sock.send_nowait([rid, GREETING])
            return
        if conn is None:
            return
        received = self._received.get(rid, 0) + len(data)
        if received > INPUT_BUDGET:
            self._warn("flood", "heartbeat port: closing a connection that floods it")
            self._close(rid)
            return
        self._received[rid] = received
        try:
            events = conn.feed(data)
        except ZmtpError as exc:
            self._warn(str(exc)[:40], "heartbeat port: closing a connection: %s", exc)
            self._close(rid)
            return
        answered = False
        for kind, detail in reversed(events):  # newest first: one PONG answers every PING
            if kind == SEND:
                if not answered:
                    self.sock.send_nowait([rid, detail])
                    answered = True
            elif kind == SUBSCRIBED:
                self._subscribers.add(rid)
            elif kind == IGNORED:
                self._warn(
                    "topic",
                    'heartbeat port: ignored a subscription to %r (only "" is served)',
                    detail,
                )
            else:
                self._subscribers.discard(rid)

    def publish(self, parts: Sequence[bytes]) -> int:
        """Send one multipart message to every subscriber; returns how many took it."""
        data = zmq.Frame(message(list(parts)))  # one buffer shared by every send
        send = self.sock.send_nowait
        sent = 0
        for rid in list(self._subscribers):
            if send([rid, data], copy=False):
                sent += 1
        self.sent += sent
        self._received.clear()
        for rid in list(self._closing):
            if self.sock.send_nowait([rid, b""]):
                self._closing.discard(rid)
        self._sweep(time.monotonic())
        return sent

    def _sweep(self, now: float) -> None:
        """Close connections that never finished their handshake."""
        stale = [
            rid
            for rid, conn in self._conns.items()
            if not conn.ready and now - conn.created > HANDSHAKE_TIMEOUT
        ]
        for rid in stale:
            self._warn("slow", "heartbeat port: closing a connection: no handshake in time")
            self._close(rid)

    def _close(self, rid: bytes) -> None:
        self._forget(rid)
        self._closed[rid] = None
        if len(self._closed) > CLOSED_REMEMBERED:
            self._closed.popitem(last=False)
        # STREAM: an empty frame closes the connection; when its queue is full, retry later
        if not self.sock.send_nowait([rid, b""]) and len(self._closing) < CLOSED_REMEMBERED:
            self._closing.add(rid)

    def _forget(self, rid: bytes) -> None:
        self._conns.pop(rid, None)
        self._subscribers.discard(rid)
        self._received.pop(rid, None)

    def _warn(self, reason: str, text: str, *args: object) -> None:
        verdict = self._log_throttle.hit(reason, time.monotonic())
        if verdict.log:
            more = f" ({verdict.suppressed} more since)" if verdict.suppressed else ""
            log.warning(text + more, *args)

    def close(self) -> None:
        self.sock.close()

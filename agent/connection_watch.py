"""Whether libzmq will reconnect a socket after a disconnect. Pure; times are monotonic.

libzmq reconnects a connection that closed (peer gone, network error) and reports that with a
`CONNECT_RETRIED` event right after `DISCONNECTED`. A connection it dropped for a protocol error
— a peer that sent a message over `MAXMSGSIZE`, or malformed ZMTP — is abandoned: no retry ever
follows, and the socket stays without a peer until the agent reconfigures.
"""

from __future__ import annotations

import struct

import zmq

# How long a retry may take to be reported after the disconnect (libzmq does it at once).
RETRY_GRACE = 2.0

WATCHED_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED


def parse_monitor_event(frames: list[bytes]) -> tuple[int, bytes]:
    """(event id, endpoint) of one monitor message: `zmq.utils.monitor.parse_monitor_message`
    without importing that module, which imports `zmq.asyncio` and so all of asyncio."""
    if len(frames) != 2 or len(frames[0]) != 6:
        raise RuntimeError(f"Invalid event message format: {frames}")
    event_id, _value = struct.unpack("=hi", frames[0])
    return event_id, frames[1]


class ConnectionWatch:
    """Feed a socket's monitor events; `abandoned(now)` says once when no retry followed."""

    def __init__(self, grace: float = RETRY_GRACE) -> None:
        self.grace = grace
        self.disconnected_at: float | None = None

    def event(self, kind: int, now: float) -> None:
        if kind == zmq.EVENT_DISCONNECTED:
            if self.disconnected_at is None:
                self.disconnected_at = now
        elif kind in (zmq.EVENT_CONNECT_RETRIED, zmq.EVENT_CONNECTED):
            self.disconnected_at = None

    def abandoned(self, now: float) -> bool:
        """True (once per disconnect) when the grace passed without a retry or a connect."""
        if self.disconnected_at is None or now - self.disconnected_at < self.grace:
            return False
        self.disconnected_at = None
        return True

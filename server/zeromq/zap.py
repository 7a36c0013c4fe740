"""ZAP handler: admits a CURVE client only when its key is in the allow-list (wire-protocol.md §10).

It must be bound and answering before the ROUTER binds (libzmq admits every CURVE client when
no handler exists) and must answer at once: libzmq stalls handshakes while it waits, so each
request is one dictionary look-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import zmq

from pushjobs.server.zeromq.trio_socket import TrioSocket

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"

log = logging.getLogger(__name__)


class CurveAllowList(Protocol):
    """What ZAP needs of the session keys: the (org, node) a CURVE client key is bound to."""

    def lookup_curve(self, public_key: bytes, now: float) -> tuple[str, str] | None: ...


def zap_reply(
    frames: list[bytes], lookup: Callable[[bytes], tuple[str, str] | None]
) -> list[bytes]:
    """The reply frames for one ZAP request; `lookup` maps a raw CURVE key to (org, node).

    Request: `[version, request_id, domain, address, routing_id, mechanism, credentials...]`.
    """
    request_id = frames[1] if len(frames) > 1 else b""
    if len(frames) >= 7 and frames[0] == ZAP_VERSION and frames[5] == b"CURVE":
        bound = lookup(frames[6])
        if bound is not None:
            user_id = f"{bound[0]}/{bound[1]}".encode()
            return [ZAP_VERSION, request_id, b"200", b"OK", user_id, b""]
    return [ZAP_VERSION, request_id, b"400", b"No such client", b"", b""]


class ZapHandler:
    """REP socket on `inproc://zeromq.zap.01` answering from the session allow-list."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], sessions: CurveAllowList) -> None:
        self.sessions = sessions
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(ZAP_ENDPOINT)
        self._sock = TrioSocket(sock)
        self.denied = 0

    def _lookup(self, key: bytes) -> tuple[str, str] | None:
        return self.sessions.lookup_curve(key, time.monotonic())

    async def serve(self) -> None:
        """Answer requests until cancelled."""
        sock = self._sock
        while True:
            # REP alternates strictly between receive and send: one request at a time.
            for frames in await sock.recv_batch(limit=1):
                reply = zap_reply(frames, self._lookup)
                if reply[2] != b"200":
                    self.denied += 1
                    log.debug("ZAP denied a %s connection", _mechanism(frames))
                sock.send_nowait(reply)

    def close(self) -> None:
        self._sock.close()


def _mechanism(frames: list[bytes]) -> str:
    if len(frames) > 5:
        return frames[5].decode("ascii", "replace")
    return "malformed"

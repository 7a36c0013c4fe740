"""Drive non-blocking pyzmq sockets from trio through their file descriptor.

`zmq.FD` signals *edges*: it becomes readable when the socket's event state may have changed,
not while messages are pending. So a reader must drain until `EAGAIN` after every wake-up, and
it must look at `zmq.EVENTS` before sleeping, because any other operation on the same socket
(a send from another task, a getsockopt) may consume the edge while messages are waiting.
`TrioSocket` wraps one socket: one task reads (`recv_batch`), any task sends (`send_nowait`);
a send that finds input pending while the reader sleeps wakes the reader.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import trio
import zmq

# Upper bound of messages handed to the reader per wake-up: keeps other tasks (HTTP, timers)
# responsive while a burst is drained; the reader is called again at once.
DEFAULT_BATCH = 256
# Plain ints: pyzmq's flag enums cost an `enum` call per `|` on the per-frame path.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class TrioSocket:
    """A non-blocking zmq socket with a trio-friendly reader and non-blocking sends."""

    __slots__ = ("_closed", "_fd", "_last_send", "_pause_scope", "_wait_scope", "sock")

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self._fd = sock.fileno()  # zmq.FD
        self._wait_scope: trio.CancelScope | None = None
        self._pause_scope: trio.CancelScope | None = None
        self._last_send = -math.inf  # trio clock of the last send
        self._closed = False

    def _readable(self) -> bool:
        events = self.sock.getsockopt(_EVENTS)
        if not isinstance(events, int):  # an integer option: satisfies the type checker
            raise TypeError(f"zmq.EVENTS is {events!r}")
        return bool(events & _POLLIN)

    async def wait_readable(self) -> None:
        """Return once the socket has input pending (checks `zmq.EVENTS` before sleeping)."""
        while not self._readable():
            with trio.CancelScope() as scope:
                self._wait_scope = scope
                try:
                    await trio.lowlevel.wait_readable(self._fd)
                finally:
                    self._wait_scope = None

    async def recv_batch(self, *, copy: bool = True, limit: int = DEFAULT_BATCH) -> list[Any]:
        """Wait for input, then return up to `limit` multipart messages received without blocking.

        With `copy=False` each message is a list of `zmq.Frame` (frame properties such as
        `User-Id` are available); otherwise a list of bytes.
        """
        while True:
            batch: list[Any] = []
            try:
                if copy:
                    recv_multipart = self.sock.recv_multipart
                    while len(batch) < limit:
                        batch.append(recv_multipart(_NOBLOCK))
                else:
                    # Frame by frame with `Frame.more`: `recv_multipart` asks `RCVMORE` with a
                    # getsockopt per frame.
                    recv = self.sock.recv
                    while len(batch) < limit:
                        frame = recv(_NOBLOCK, copy=False)
                        frames = [frame]
                        while frame.more:
                            frame = recv(_NOBLOCK, copy=False)
                            frames.append(frame)
                        batch.append(frames)
            except zmq.Again:
                pass
            if batch:
                # Let other tasks run between bursts without giving up our place for long.
                await trio.lowlevel.checkpoint()
                return batch
            await self.wait_readable()

    async def pause_while_quiet(self, interval: float, quiet_for: float) -> None:
        """Sleep up to `interval` s unless something was sent within the last `quiet_for` s;
        a send ends the pause at once (an answer is expected soon)."""
        now = trio.current_time()
        if now - self._last_send < quiet_for:
            return
        with trio.CancelScope(deadline=now + interval) as scope:
            self._pause_scope = scope
            try:
                await trio.sleep_forever()
            finally:
                self._pause_scope = None

    def send_nowait(self, frames: Sequence[bytes | zmq.Frame], *, copy: bool = True) -> bool:
        """Send a multipart message without blocking; False when it could not be queued.

        Wakes a sleeping reader of this socket when the send left input pending (edge rule),
        and ends a reader's `pause_while_quiet`.
        """
        if self._closed:
            return False
        self._last_send = trio.current_time()
        if self._pause_scope is not None:
            self._pause_scope.cancel()
        try:
            # The loop of `send_multipart`, without its per-frame type checks and flag enums.
            send = self.sock.send
            last = len(frames) - 1
            for index, frame in enumerate(frames):
                send(frame, _MORE_NOBLOCK if index < last else _NOBLOCK, copy=copy)
            sent = True
        except zmq.Again:
            sent = False
        except zmq.ZMQError as exc:
            # ROUTER with an unknown peer (when ROUTER_MANDATORY is set) or a closed socket.
            if exc.errno in (zmq.EHOSTUNREACH, zmq.ENOTSOCK):
                sent = False
            else:
                raise
        if self._wait_scope is not None and self._readable():
            self._wait_scope.cancel()
        return sent

    def close(self) -> None:
        """Tell trio the fd is going away, then close the socket (LINGER is 0 on our sockets)."""
        if self._closed:
            return
        self._closed = True
        try:
            trio.lowlevel.notify_closing(self._fd)
        except (RuntimeError, OSError):
            pass  # not inside trio (tests), or the fd is already gone
        self.sock.close(linger=0)

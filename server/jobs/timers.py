"""One heap of callbacks on trio's clock: `call_later(delay, fn)`, fired by `TimerQueue.run`.

Every live job has a phase timer (voting, run, grace period) and every open output record may
have a close timer: thousands at once. One task and one heap serve them all instead of a task
per timer. Deadlines are `trio.current_time() + delay`; equal deadlines fire in the order they
were set. A cancelled timer stays in the heap until its deadline, so `cancel` drops its
callback at once (a cancelled timer may sit there for hours).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import NoReturn

import trio

log = logging.getLogger("pushjobs.server.jobs")


def _noop() -> None:
    return None


class Timer:
    """A handle on one `call_later`: `cancel()` it before it fires and it never will."""

    __slots__ = ("cancelled", "fn")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.fn = _noop


class TimerQueue:
    """Callbacks due at a trio clock time, run in deadline order by one task (`run`)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._wakeup = trio.Event()

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Call `fn()` in `delay` seconds (inside `run`'s task); a failing `fn` is logged."""
        timer = Timer(fn)
        heapq.heappush(self._heap, (trio.current_time() + delay, next(self._seq), timer))
        self._wakeup.set()
        return timer

    async def run(self) -> NoReturn:
        """Fire due timers, then sleep until the next deadline or a new timer; until cancelled."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, timer = heapq.heappop(heap)
                if timer.cancelled:
                    continue
                try:
                    timer.fn()
                except Exception:
                    log.exception("timer callback failed")
            deadline = heap[0][0] if heap else math.inf
            self._wakeup = trio.Event()
            with trio.move_on_at(deadline):
                await self._wakeup.wait()

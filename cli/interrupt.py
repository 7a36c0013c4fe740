"""Ctrl-C while following a job (cli.md §3.5): the network work runs in a worker thread.

Why a thread: a KeyboardInterrupt raised inside httpx/httpcore/h11 code, a generator being
finalised or a reconnect loop can be swallowed, replaced by another exception (and then
retried) or delayed until the next byte arrives. Here the main thread only waits on an Event,
so SIGINT is always raised in our own few lines; the worker has SIGINT blocked, so the kernel
always delivers it to the main thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pushjobs.cli.display import Display
from pushjobs.cli.follow import JobProgress
from pushjobs.cli.sse import SseEvent

T = TypeVar("T")

WAIT_SLICE = 0.2  # a SIGINT delivered while the main thread waits is acted on within this
SHUT_WAIT = 1.0  # how long an interrupt waits for a display write in progress


def run_in_worker(work: Callable[[], T]) -> T:
    """Run `work()` in a daemon thread and return its result (or raise its exception).

    KeyboardInterrupt in the main thread propagates at once; the worker is left behind (it
    dies with the process).
    """
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def body() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as e:  # handed to the main thread
            outcome.append((False, e))
        finally:
            done.set()

    worker = threading.Thread(target=body, name="pushjobs-follow", daemon=True)
    blocked = _block_sigint()
    try:
        worker.start()  # inherits the blocked mask
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    while not done.wait(WAIT_SLICE):
        pass
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _block_sigint() -> bool:
    """Block SIGINT in the calling (main) thread; False where that is not possible."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if not hasattr(signal, "pthread_sigmask"):
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    return True


def honour_sigint() -> None:
    """Make SIGINT raise KeyboardInterrupt even when it was inherited as ignored.

    A shell without job control starts `cmd &` with SIGINT ignored, and Python then never
    installs its handler: `kill -INT` would be ignored and the CLI would follow to the end.
    Stopping to follow is harmless (the job goes on), so `job start`/`watch` always honour it.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the closing message short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class GatedDisplay(Display):
    """A display the worker writes through until the main thread shuts it.

    Once shut, nothing more is written (no progress line or JSON event after the
    `continues on the server` message, and no stdout write in flight at exit).
    """

    def __init__(self, inner: Display) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._open = True

    def event(self, ev: SseEvent) -> None:
        with self._lock:
            if self._open:
                self.inner.event(ev)

    def update(self, progress: JobProgress) -> None:
        with self._lock:
            if self._open:
                self.inner.update(progress)

    def close(self, progress: JobProgress) -> None:
        with self._lock:
            if self._open:
                self._open = False
                self.inner.close(progress)

    def shut(self, progress: JobProgress) -> None:
        """From the main thread on Ctrl-C: stop the display (rich restores the cursor)."""
        got = self._lock.acquire(timeout=SHUT_WAIT)
        try:
            if self._open:
                self._open = False
                if got:
                    self.inner.close(progress)
        finally:
            if got:
                self._lock.release()

"""Polling until something is true: blocking (`wait_for`) and in trio code (`wait_until`), and
waiting for a line in a process log (`log_count`, `wait_log`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import trio

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def wait_until(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float = 20,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Await `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await trio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class Logged(Protocol):
    """A process writing a log file (`ServerProcess`)."""

    log_path: Path

    def log_tail(self, lines: int = 60) -> str: ...


def log_count(proc: Logged, text: str) -> int:
    """How often `text` stands in the process log so far (0 before the log exists)."""
    try:
        return proc.log_path.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0


async def wait_log(proc: Logged, text: str, at_least: int = 1, timeout: float = 10) -> None:
    """Wait until the process log holds `text` at least `at_least` times."""
    with trio.move_on_after(timeout):
        while log_count(proc, text) < at_least:
            await trio.sleep(0.02)
        return
    raise AssertionError(f"server log never showed {text!r}:\n{proc.log_tail(20)}")

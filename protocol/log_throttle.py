"""A log throttle: at most `burst` lines per key per window, counting the lines held back.

Shared by the server (dropped messages, heartbeat-port trouble) and the agent (dropped messages,
closed connections), so that a flood of bad input costs a few log lines, never one per message.
Pure: the caller passes `now` (any monotonic clock) and writes the line itself.

A key's window opens with the first line logged for it and lasts `interval` seconds; within it
the first `burst` lines are logged. The first line after the window opens the next one and
reports how many were held back in the one that ended.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .compat import dataclass

K = TypeVar("K")

KEYS_REMEMBERED = 10_000  # beyond, every key's window is forgotten at once (bounds memory)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to write the line, and how many lines the key's previous window held back."""

    log: bool
    suppressed: int = 0


_SILENT = Verdict(log=False)
_LOG = Verdict(log=True)


class LogThrottle(Generic[K]):
    """`hit(key, now)` for every line that could be written; write it when the verdict says so."""

    __slots__ = ("_windows", "burst", "interval", "max_keys")

    def __init__(self, interval: float, *, burst: int = 1, max_keys: int = KEYS_REMEMBERED) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.interval = interval
        self.burst = burst
        self.max_keys = max_keys
        self._windows: dict[K, tuple[float, int]] = {}  # key -> (window start, lines in it)

    def hit(self, key: K, now: float) -> Verdict:
        window = self._windows.get(key)
        if window is not None and now - window[0] < self.interval:
            count = window[1] + 1
            self._windows[key] = (window[0], count)
            return _LOG if count <= self.burst else _SILENT
        if len(self._windows) >= self.max_keys:
            self._windows.clear()
        self._windows[key] = (now, 1)
        if window is None or window[1] <= self.burst:
            return _LOG
        return Verdict(log=True, suppressed=window[1] - self.burst)

    def __len__(self) -> int:
        return len(self._windows)

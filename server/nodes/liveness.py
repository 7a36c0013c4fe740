"""Server-side node liveness from heartbeats: a decaying average per node (lifecycle.md §3).

Pure: every method takes `now` (seconds, monotonic) and nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LivenessParams:
    """`I` = heartbeat interval (s), `W` = decay window (intervals), `T` = down threshold."""

    interval: float
    window: float
    threshold: float

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.window <= 0:
            raise ValueError("heartbeat interval and decay window must be positive")


class NodeLiveness:
    """`avg`, `interval_start`, `count` of one node; `avg < T` means the node is down."""

    __slots__ = ("avg", "count", "interval_start", "params")

    def __init__(self, params: LivenessParams, now: float) -> None:
        # Initialised as by a first heartbeat, which is not counted again.
        self.params = params
        self.avg = 2.0 * params.threshold
        self.interval_start = now
        self.count = 1

    def advance(self, now: float) -> None:
        """Fold every whole interval elapsed since `interval_start` into the average."""
        interval = self.params.interval
        k = math.floor((now - self.interval_start) / interval)
        if k > 0:
            a = 1.0 / self.params.window
            self.avg = (self.avg * (1.0 - a) + self.count * a) * (1.0 - a) ** (k - 1)
            self.interval_start += k * interval
            self.count = 0

    def heartbeat(self, now: float) -> bool:
        """Count one validated heartbeat; return False when the node is (now) down."""
        self.advance(now)
        self.count += 1
        return self.avg >= self.params.threshold

    def check(self, now: float) -> bool:
        """The scanner's test: advance, then True while the node is alive."""
        self.advance(now)
        return self.avg >= self.params.threshold

"""Feed events and their SSE form (http-api.md §8, lifecycle.md §6). Pure: no I/O, no trio.

`SseClock` stamps events; `JobEventLog` keeps one job's events (`job-N`); `OrgFeedLog` keeps an
organization's recent `start`/`job_complete` events (`org-N`) for `org_feed_expiration`.
"""

from __future__ import annotations

import functools
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

KEEPALIVE = b":keepalive\n"
START_OF_HISTORY_ID = "start_id"


class WallClock(Protocol):
    def now(self) -> float: ...


def sse_json(data: dict[str, Any]) -> str:
    """Compact one-line JSON, non-ASCII kept as UTF-8."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def format_sse(name: str, event_id: str, data: dict[str, Any]) -> bytes:
    """One SSE event: `event:`, `id:` and `data:` lines and the blank line after them."""
    return f"event: {name}\nid: {event_id}\ndata: {sse_json(data)}\n\n".encode()


@functools.lru_cache(maxsize=4)
def _format_second(seconds: int) -> str:
    # Events come thousands a second: format each whole second once.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_micros(micros: int) -> str:
    """`YYYY-MM-DD HH:MM:SS.ffffffZ` for an integer count of microseconds since the epoch."""
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{_format_second(seconds)}.{fraction:06d}Z"


class SseClock:
    """Server-wide SSE timestamps: strictly increasing at microsecond resolution.

    Wraps the runtime's strict clock; works in whole microseconds so that two readings can
    never format to the same text (float rounding could otherwise merge neighbours).
    """

    def __init__(self, clock: WallClock) -> None:
        self._clock = clock
        self._last = 0

    def stamp(self) -> tuple[float, str]:
        """Now as (epoch seconds, SSE text)."""
        micros = max(round(self._clock.now() * 1_000_000), self._last + 1)
        self._last = micros
        return micros / 1_000_000, format_micros(micros)


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """A recorded event: its name, id, sequence number, time and data; `wire` its SSE bytes.

    `data` must not change after recording: `wire` is formatted from it once, when first read
    (most events of a large job are never read by any stream)."""

    name: str
    id: str
    seq: int
    time: float
    data: dict[str, Any] = field(repr=False)
    _wire: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def wire(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = format_sse(self.name, self.id, self.data)
            object.__setattr__(self, "_wire", wire)
        return wire


def make_event(
    name: str, event_id: str, seq: int, stamp: tuple[float, str], data: dict
) -> FeedEvent:
    """Build an event whose data starts with `timestamp`."""
    return FeedEvent(name, event_id, seq, stamp[0], {"timestamp": stamp[1], **data})


class JobEventLog:
    """Every event of one live job, ids `job-1`, `job-2`, … in recording order."""

    def __init__(self) -> None:
        self.events: list[FeedEvent] = []

    def record(self, name: str, data: dict[str, Any], stamp: tuple[float, str]) -> FeedEvent:
        seq = len(self.events) + 1
        event = make_event(name, f"job-{seq}", seq, stamp, data)
        self.events.append(event)
        return event

    def since(self, seq: int) -> list[FeedEvent]:
        """Events with a sequence number above `seq`."""
        return self.events[seq:]

    def replay_start(self, last_event_id: str | None) -> int:
        """Sequence number after which a new stream starts (unknown ids replay everything)."""
        for event in self.events:
            if event.id == last_event_id:
                return event.seq
        return 0


class OrgFeedLog:
    """One organization's retained `start`/`job_complete` events, ids `org-1`, `org-2`, …"""

    def __init__(self, expiration: float) -> None:
        self.expiration = expiration
        self.last_seq = 0
        self._events: deque[FeedEvent] = deque()

    def record(self, name: str, data: dict[str, Any], stamp: tuple[float, str]) -> FeedEvent:
        self.last_seq += 1
        event = make_event(name, f"org-{self.last_seq}", self.last_seq, stamp, data)
        self._events.append(event)
        self.prune(stamp[0])
        return event

    def prune(self, now: float) -> None:
        """Forget events older than `expiration`."""
        limit = now - self.expiration
        while self._events and self._events[0].time <= limit:
            self._events.popleft()

    def since(self, seq: int) -> list[FeedEvent]:
        """Retained events with a sequence number above `seq`."""
        if not self._events:
            return []
        first = self._events[0].seq
        start = max(seq + 1 - first, 0)
        return list(self._events)[start:] if start < len(self._events) else []

    def replay(
        self, last_event_id: str | None, stamp: tuple[float, str]
    ) -> tuple[list[FeedEvent], int]:
        """First output of a new stream (http-api.md §7.9) and the sequence it has reached.

        `stamp` is now (from the SSE clock); `start_of_history` is dated `now - expiration`.
        """
        self.prune(stamp[0])
        if last_event_id is None:
            return [], self.last_seq
        for event in self._events:
            if event.id == last_event_id:
                return self.since(event.seq), self.last_seq
        micros = round((stamp[0] - self.expiration) * 1_000_000)
        history_stamp = (micros / 1_000_000, format_micros(micros))
        start = make_event("start_of_history", START_OF_HISTORY_ID, 0, history_stamp, {})
        return [start, *self._events], self.last_seq


def start_event_data(spec: Any, requestor_name: str) -> dict[str, Any]:
    """The `start` event's data (lifecycle.md §6.1) for a JobSpec and its requestor."""
    data: dict[str, Any] = {
        "command": spec.command,
        "run_timeout": spec.run_timeout,
        "quorum": spec.quorum,
        "node_count": len(spec.nodes),
        "user": requestor_name,
        "requested_by": requestor_name,
        "capture": spec.capture,
    }
    if spec.max_concurrency is not None:
        data["max_concurrency"] = spec.max_concurrency
    if spec.max_errors is not None:
        data["max_errors"] = spec.max_errors
    if spec.user is not None:
        data["job_user"] = spec.user
    if spec.dir is not None:
        data["dir"] = spec.dir
    if spec.env is not None:
        data["env"] = dict(spec.env)
    if spec.file is not None:
        data["file_specified"] = True
    return data

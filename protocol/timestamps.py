"""Timestamps: RFC 1123 (message bodies, JSON dates), X-Ops ISO 8601, SSE times, a strict clock."""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timezone

from .errors import TimestampError

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_RFC1123 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT",
    re.ASCII,
)
_XOPS = re.compile(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)Z", re.ASCII)


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise TimestampError("not a valid date and time") from None


def format_rfc1123(t: float) -> str:
    """Format epoch seconds as `Sat, 12 May 2012 20:33:15 GMT` (English names, locale-free)."""
    tm = time.gmtime(t)
    return (
        f"{_DAYS[tm.tm_wday]}, {tm.tm_mday:02d} {_MONTHS[tm.tm_mon - 1]} {tm.tm_year:04d} "
        f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} GMT"
    )


def parse_rfc1123(text: str) -> float:
    """Parse exactly the RFC 1123 GMT form (weekday must match the date); else TimestampError."""
    if not isinstance(text, str):
        raise TimestampError("timestamp must be a string")
    m = _RFC1123.fullmatch(text)
    if m is None:
        raise TimestampError(f"not an RFC 1123 GMT timestamp: {text[:64]!r}")
    wday, day, mon, year, hour, minute, second = m.groups()
    dt = _epoch(int(year), _MONTHS.index(mon) + 1, int(day), int(hour), int(minute), int(second))
    if _DAYS[dt.weekday()] != wday:
        raise TimestampError(f"weekday does not match the date: {text!r}")
    return float(calendar.timegm(dt.timetuple()))


def within_skew(ts: float, now: float, max_skew: float) -> bool:
    """True when `|now - ts| < max_skew`."""
    return abs(now - ts) < max_skew


def format_xops_timestamp(t: float) -> str:
    """Format epoch seconds as `YYYY-MM-DDTHH:MM:SSZ` (X-Ops-Timestamp)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_xops_timestamp(text: str) -> float:
    """Parse `^(\\d+)-(\\d+)-(\\d+)T(\\d+):(\\d+):(\\d+)Z$` forming a valid UTC date-time."""
    if not isinstance(text, str):
        raise TimestampError("timestamp must be a string")
    m = _XOPS.fullmatch(text)
    if m is None:
        raise TimestampError(f"not an X-Ops timestamp: {text[:64]!r}")
    try:
        parts = [int(g) for g in m.groups()]
    except ValueError:  # absurdly long digit runs
        raise TimestampError("not a valid date and time") from None
    dt = _epoch(*parts)
    return float(calendar.timegm(dt.timetuple()))


def format_sse_time(t: float) -> str:
    """Format epoch seconds as `YYYY-MM-DD HH:MM:SS.ffffffZ` (UTC)."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%fZ")


class StrictClock:
    """A clock whose readings strictly increase (by at least 1 µs) even if the wall clock stalls."""

    def __init__(self) -> None:
        self._last_micros = 0

    def now_micros(self) -> int:
        """Whole microseconds since the epoch: `max(now, previous + 1)`.

        Counting in integers keeps successive readings distinct once formatted, which float
        steps of 1e-6 near 1.7e9 s do not guarantee.
        """
        self._last_micros = max(time.time_ns() // 1000, self._last_micros + 1)
        return self._last_micros

    def now(self) -> float:
        """Return `max(time.time(), previous + 1 µs)` in seconds."""
        return self.now_micros() / 1_000_000

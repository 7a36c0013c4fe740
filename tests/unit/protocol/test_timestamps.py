"""Timestamps: RFC 1123, X-Ops ISO 8601, SSE format, skew, strict clock (wire-protocol.md §7)."""

from __future__ import annotations

import calendar
import email.utils
import locale

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushjobs.protocol.errors import TimestampError
from pushjobs.protocol.timestamps import (
    StrictClock,
    format_rfc1123,
    format_sse_time,
    format_xops_timestamp,
    parse_rfc1123,
    parse_xops_timestamp,
    within_skew,
)

EXAMPLE = "Sat, 12 May 2012 20:33:15 GMT"
EXAMPLE_T = float(calendar.timegm((2012, 5, 12, 20, 33, 15, 0, 0, 0)))


def test_rfc1123_known_values() -> None:
    assert parse_rfc1123(EXAMPLE) == EXAMPLE_T
    assert format_rfc1123(EXAMPLE_T) == EXAMPLE
    assert format_rfc1123(EXAMPLE_T + 0.999) == EXAMPLE  # second precision, truncated
    assert format_rfc1123(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert parse_rfc1123("Fri, 27 Nov 2026 05:56:29 GMT") == 1795758989.0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 253402300799))
def test_rfc1123_round_trip_matches_stdlib(t: int) -> None:
    text = format_rfc1123(t)
    assert text == email.utils.formatdate(t, usegmt=True)
    assert parse_rfc1123(text) == t


def test_rfc1123_ignores_locale() -> None:
    old = locale.setlocale(locale.LC_TIME)
    for name in ("de_DE.UTF-8", "fr_FR.UTF-8"):
        try:
            locale.setlocale(locale.LC_TIME, name)
        except locale.Error:
            continue
        try:
            assert format_rfc1123(EXAMPLE_T) == EXAMPLE
        finally:
            locale.setlocale(locale.LC_TIME, old)


@pytest.mark.parametrize(
    "text",
    [
        "Saturday, 12-May-12 20:33:15 GMT",  # RFC 850
        "Sat May 12 20:33:15 2012",  # asctime
        "Sat, 12 May 2012 20:33:15 UTC",
        "Sat, 12 May 2012 20:33:15 +0000",
        "Sat, 12 May 2012 20:33:15",
        "Sam, 12 Mai 2012 20:33:15 GMT",  # not English
        "sat, 12 may 2012 20:33:15 gmt",
        "Sat, 12 MAY 2012 20:33:15 GMT",
        "Sat, 2 May 2012 20:33:15 GMT",
        "Sat,  12 May 2012 20:33:15 GMT",
        "Sat, 12 May 12 20:33:15 GMT",
        "Sat, 12 May 2012 20:33 GMT",
        "Sat, 12 May 2012 24:00:00 GMT",
        "Sat, 12 May 2012 20:60:00 GMT",
        "Sat, 12 May 2012 20:33:60 GMT",
        "Thu, 31 Feb 2012 20:33:15 GMT",
        "Sun, 12 May 2012 20:33:15 GMT",  # wrong weekday
        " Sat, 12 May 2012 20:33:15 GMT",
        "Sat, 12 May 2012 20:33:15 GMT\n",
        "Sat, 12 May 2012 20:33:15 GMT ",
        "Sat, ١٢ May 2012 20:33:15 GMT",  # non-ASCII digits
        "2012-05-12T20:33:15Z",
        "",
    ],
)
def test_rfc1123_strict(text: str) -> None:
    with pytest.raises(TimestampError):
        parse_rfc1123(text)


def test_rfc1123_non_string() -> None:
    with pytest.raises(TimestampError):
        parse_rfc1123(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ts", "now", "skew", "ok"),
    [
        (1000.0, 1000.0, 300, True),
        (1000.0, 1299.0, 300, True),  # 299 s old
        (1299.0, 1000.0, 300, True),  # 299 s in the future
        (1000.0, 1300.0, 300, False),  # exactly the limit is outside
        (1300.0, 1000.0, 300, False),
        (1000.0, 2000.0, 300, False),  # a message 1000 s old
        (1000.0, 1100.0, 300, True),  # one 100 s old
        (3000.0, 1000.0, 300, False),  # from the future
        (float("nan"), 1000.0, 300, False),
    ],
)
def test_within_skew(ts: float, now: float, skew: float, ok: bool) -> None:
    assert within_skew(ts, now, skew) is ok


def test_xops_timestamps() -> None:
    assert format_xops_timestamp(1795758989.7) == "2026-11-27T05:56:29Z"
    assert parse_xops_timestamp("2026-11-27T05:56:29Z") == 1795758989.0
    assert parse_xops_timestamp("2026-11-27T5:56:29Z") == 1795758989.0
    assert parse_xops_timestamp("2009-01-01T12:00:00Z") == 1230811200.0
    for bad in (
        "2026-11-27T05:56:29",
        "2026-11-27T05:56:29z",
        "2026-11-27 05:56:29Z",
        "2026-11-31T05:56:29Z",
        "0000-01-01T00:00:00Z",
        "2026-11-27T05:56:29Z\n",
        "9" * 5000 + "-1-1T0:0:0Z",
        "",
    ):
        with pytest.raises(TimestampError):
            parse_xops_timestamp(bad)


def test_sse_time() -> None:
    assert format_sse_time(1795758989.25) == "2026-11-27 05:56:29.250000Z"
    assert format_sse_time(0) == "1970-01-01 00:00:00.000000Z"


def test_strict_clock_strictly_increases() -> None:
    clock = StrictClock()
    readings = [clock.now() for _ in range(1000)]
    assert all(b > a for a, b in zip(readings, readings[1:]))
    # float spacing near 1.8e9 s is ~2.4e-7, so +1e-6 lands within that of 1 µs
    assert all(b - a >= 7e-7 for a, b in zip(readings, readings[1:]))

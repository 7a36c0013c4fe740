"""LogThrottle: the one rate limit of warnings about bad input, shared by server and agent."""

from __future__ import annotations

import logging

import pytest

from pushjobs.agent.link import ThrottledWarnings
from pushjobs.protocol.log_throttle import LogThrottle, Verdict


def test_one_line_per_key_per_interval_then_the_count_held_back() -> None:
    throttle: LogThrottle[str] = LogThrottle(10.0)
    assert throttle.hit("a", 100.0) == Verdict(log=True)
    assert throttle.hit("a", 101.0) == Verdict(log=False)
    assert throttle.hit("a", 109.9) == Verdict(log=False)
    assert throttle.hit("a", 110.0) == Verdict(log=True, suppressed=2)
    assert throttle.hit("a", 125.0) == Verdict(log=True)  # a quiet window held nothing back


def test_keys_are_limited_separately() -> None:
    throttle: LogThrottle[tuple[str, str]] = LogThrottle(10.0)
    assert throttle.hit(("acme", "a"), 0.0).log
    assert throttle.hit(("acme", "b"), 1.0).log
    assert not throttle.hit(("acme", "a"), 2.0).log


def test_a_burst_per_window() -> None:
    throttle: LogThrottle[str] = LogThrottle(60.0, burst=3)
    assert [throttle.hit("r", t).log for t in (0, 1, 2, 3, 4)] == [True, True, True, False, False]
    # The window is measured from its first line, not from the last one.
    assert throttle.hit("r", 60.0) == Verdict(log=True, suppressed=2)
    assert throttle.hit("r", 61.0) == Verdict(log=True)


def test_the_window_opens_with_the_first_line_ever() -> None:
    throttle: LogThrottle[None] = LogThrottle(10.0)
    assert throttle.hit(None, -1e9).log  # any clock, even one starting below zero
    assert not throttle.hit(None, -1e9 + 5).log


def test_memory_is_bounded_by_forgetting_every_key_at_once() -> None:
    throttle: LogThrottle[int] = LogThrottle(10.0, max_keys=3)
    for key in range(3):
        assert throttle.hit(key, 0.0).log
    assert not throttle.hit(0, 1.0).log
    assert len(throttle) == 3
    assert throttle.hit(3, 2.0).log  # a fourth key: the table starts afresh
    assert len(throttle) == 1
    assert throttle.hit(0, 3.0) == Verdict(log=True)  # its window (and count) was forgotten


def test_burst_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LogThrottle(1.0, burst=0)


def test_the_agents_warnings_keep_their_text(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.agent.link")
    warn = ThrottledWarnings(log, burst=2)
    with caplog.at_level(logging.WARNING, logger="test.agent.link"):
        for _ in range(4):
            warn("command channel: bad header or body", "too short")
        warn("heartbeat channel: signature does not verify")
    assert [r.getMessage() for r in caplog.records] == [
        "dropped message: command channel: bad header or body (too short)",
        "dropped message: command channel: bad header or body (too short)",
        "dropped message: heartbeat channel: signature does not verify",
    ]

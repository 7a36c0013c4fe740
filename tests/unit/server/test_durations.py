"""`[retention]` durations: `30d`, `12h`, `90m`, `45s`, or 0."""

from __future__ import annotations

import pytest

from pushjobs.server.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), (" 2D ", 172800)],
)
def test_units(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("zero", [0, "0", 0.0])
def test_zero_means_off(zero: object) -> None:
    assert parse_duration(zero) == 0


@pytest.mark.parametrize("bad", ["30", "1.5h", "-1d", "1w", "1d2h", "", "d", True, 30, None])
def test_anything_else_is_refused_with_the_expected_form(bad: object) -> None:
    with pytest.raises(DurationError, match="like 30d, 12h, 90m or 45s"):
        parse_duration(bad)


@pytest.mark.parametrize(
    "seconds, text", [(0, "0"), (90 * 86400, "90d"), (7200, "2h"), (5400, "90m"), (61, "61s")]
)
def test_format_uses_the_largest_exact_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert text == "0" or parse_duration(text) == seconds

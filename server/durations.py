"""Durations written as text in the server's config (`[retention]`): `30d`, `12h`, `90m`, `45s`.

Pure: `parse_duration` turns the text into seconds, `format_duration` turns seconds back into
the shortest such text (for log lines). `0` (the number or the text) means "never" / "off".
"""

from __future__ import annotations

import re

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)([dhms])")


class DurationError(ValueError):
    """The text is not a duration; the message says what is expected."""


def parse_duration(value: object) -> float:
    """Seconds in `value`: a whole number with one unit (`30d`, `12h`, `90m`, `45s`), or 0.

    `0` may be the integer or the text `"0"`. Raises `DurationError` for anything else.
    """
    if isinstance(value, bool):
        raise DurationError(f"expected a duration like 30d, 12h, 90m or 45s, not {value!r}")
    if value == 0 and isinstance(value, int | float):
        return 0.0
    if not isinstance(value, str):
        raise DurationError(
            f"expected a duration like 30d, 12h, 90m or 45s, not {type(value).__name__}"
        )
    text = value.strip().lower()
    if text == "0":
        return 0.0
    match = _DURATION.fullmatch(text)
    if match is None:
        raise DurationError(
            f"expected a duration like 30d, 12h, 90m or 45s (a whole number and one of d, h, "
            f"m, s), or 0 (got {value!r})"
        )
    return float(int(match.group(1)) * UNITS[match.group(2)])


def format_duration(seconds: float) -> str:
    """The shortest exact text for `seconds` in the largest unit that divides it (`90d`)."""
    whole = int(seconds)
    if whole <= 0:
        return "0"
    for unit, size in UNITS.items():
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"  # unreachable: every whole number of seconds is divisible by 1

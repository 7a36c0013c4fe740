"""Content negotiation on `Accept` (http-api.md §3, "Accept rule"). Pure functions, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One element of an Accept header: `type/subtype` (lower case, may be `*`) and its q."""

    type: str
    subtype: str
    q: float

    def matches(self, media_type: str) -> bool:
        """True when this range covers the concrete `media_type`."""
        mtype, _, msub = media_type.lower().partition("/")
        if self.type == "*":
            return True
        return self.type == mtype and self.subtype in ("*", msub)

    @property
    def specificity(self) -> int:
        """2 for `type/subtype`, 1 for `type/*`, 0 for `*/*`."""
        if self.type == "*":
            return 0
        return 1 if self.subtype == "*" else 2


def parse_accept(header: str) -> list[MediaRange]:
    """Parse an Accept header into media ranges; malformed elements are skipped.

    A bare `*` (sent by some HTTP libraries) means `*/*`. A `q` that is not a number in
    [0, 1] makes its range unusable, so the range is skipped.
    """
    ranges: list[MediaRange] = []
    for element in header.split(","):
        parts = element.split(";")
        media = parts[0].strip().lower()
        if not media:
            continue
        if media == "*":
            media = "*/*"
        mtype, slash, msub = media.partition("/")
        mtype, msub = mtype.strip(), msub.strip()
        if not slash or not mtype or not msub or (mtype == "*" and msub != "*"):
            continue
        q: float | None = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                q = _parse_q(value.strip().strip('"'))
        if q is None:
            continue
        ranges.append(MediaRange(mtype, msub, q))
    return ranges


def _parse_q(text: str) -> float | None:
    try:
        q = float(text)
    except ValueError:
        return None
    if not math.isfinite(q) or q < 0 or q > 1:
        return None
    return q


def quality(ranges: list[MediaRange], media_type: str) -> float:
    """q of `media_type` from its most specific matching range (0 when nothing matches).

    Among equally specific matching ranges the highest q counts.
    """
    best_spec = -1
    best_q = 0.0
    for r in ranges:
        if not r.matches(media_type):
            continue
        if r.specificity > best_spec:
            best_spec, best_q = r.specificity, r.q
        elif r.specificity == best_spec:
            best_q = max(best_q, r.q)
    return best_q


def negotiate(accept: str | None, offers: tuple[str, ...]) -> str | None:
    """The media type to answer with, or None for 406.

    One offered type: acceptable when `accept` is absent or blank, or when any range with
    q > 0 matches it. Several offered types: each gets the q of its most specific matching
    range; the highest wins, ties go to the earlier offer, all 0 → None.
    """
    if not offers:
        return None
    if accept is None or not accept.strip():
        return offers[0]
    ranges = parse_accept(accept)
    if len(offers) == 1:
        offer = offers[0]
        return offer if any(r.q > 0 and r.matches(offer) for r in ranges) else None
    best: str | None = None
    best_q = 0.0
    for offer in offers:
        q = quality(ranges, offer)
        if q > best_q:
            best, best_q = offer, q
    return best

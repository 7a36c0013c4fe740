"""The Accept rule of http-api.md §3 (pure functions of server/http/negotiation.py)."""

from __future__ import annotations

import pytest

from pushjobs.server.http.negotiation import negotiate, parse_accept, quality

JSON = ("application/json",)
FEED = ("text/event-stream",)
OUTPUT = ("application/octet-stream", "text/event-stream")


@pytest.mark.parametrize("accept", [None, "", "   "])
def test_absent_or_empty_accept_takes_first_offer(accept: str | None) -> None:
    assert negotiate(accept, JSON) == "application/json"
    assert negotiate(accept, FEED) == "text/event-stream"
    assert negotiate(accept, OUTPUT) == "application/octet-stream"


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "APPLICATION/JSON",
        "application/*",
        "*/*",
        "*",
        "text/html, application/json;q=0.1",
        "application/json; charset=utf-8",
        "application/json;q=0, */*",
        "text/plain;q=0.5,application/json;q=0.001",
    ],
)
def test_single_offer_acceptable(accept: str) -> None:
    assert negotiate(accept, JSON) == "application/json"


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/json;q=0",
        "application/*;q=0",
        "*/*;q=0",
        "text/*",
        "application/jsonx",
        "application/json;q=abc",
        "application/json;q=1.5",
        "garbage",
    ],
)
def test_single_offer_not_acceptable(accept: str) -> None:
    assert negotiate(accept, JSON) is None


def test_json_on_feed_is_not_acceptable() -> None:
    assert negotiate("application/json", FEED) is None
    assert negotiate("text/event-stream", FEED) == "text/event-stream"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json", None),
        ("text/event-stream", "text/event-stream"),
        ("*/*", "application/octet-stream"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/*", "application/octet-stream"),
        ("text/*", "text/event-stream"),
        ("text/event-stream, application/octet-stream", "application/octet-stream"),
        ("text/event-stream;q=0.9, application/octet-stream;q=0.8", "text/event-stream"),
        ("text/event-stream;q=0.5, */*;q=0.9", "application/octet-stream"),
        # The most specific range decides: */* does not revive the refused stream type.
        ("text/event-stream;q=0, */*", "application/octet-stream"),
        ("application/octet-stream;q=0, */*;q=0.1", "text/event-stream"),
        ("application/octet-stream;q=0, text/event-stream;q=0", None),
        ("*/*;q=0", None),
        ("text/event-stream, */*;q=0.1", "text/event-stream"),
    ],
)
def test_two_type_output_route(accept: str, expected: str | None) -> None:
    assert negotiate(accept, OUTPUT) == expected


def test_parse_accept_skips_malformed_ranges() -> None:
    ranges = parse_accept("text/html;level=1;q=0.7, bogus, */json, a/b;q=x, ,*;q=0.2")
    assert [(r.type, r.subtype, r.q) for r in ranges] == [
        ("text", "html", 0.7),
        ("*", "*", 0.2),
    ]


def test_quality_uses_most_specific_range() -> None:
    ranges = parse_accept("*/*;q=0.1, text/*;q=0.4, text/event-stream;q=0.7")
    assert quality(ranges, "text/event-stream") == 0.7
    assert quality(ranges, "text/plain") == 0.4
    assert quality(ranges, "application/octet-stream") == 0.1
    assert quality(parse_accept("text/html"), "application/json") == 0.0


def test_no_offers_is_never_acceptable() -> None:
    assert negotiate(None, ()) is None

"""The `job list` query (cli.md §5): filters, relative times, paging hint from `Link`."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pushjobs.cli.jobquery import MORE_JOBS, list_query, more_hint, next_page, parse_time_filter

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", "2026-12-01T09:30:00Z"),
        ("2h", "2026-12-01T08:00:00Z"),
        ("7d", "2026-11-24T10:00:00Z"),
        ("1w", "2026-11-24T10:00:00Z"),
        ("90s", "2026-12-01T09:58:30Z"),
        (" 2 h ", "2026-12-01T08:00:00Z"),
        ("0m", "2026-12-01T10:00:00Z"),
        # everything else goes to the server as given (it checks RFC 1123 / ISO 8601)
        ("2026-11-30T08:00:00Z", "2026-11-30T08:00:00Z"),
        ("2026-11-30", "2026-11-30"),
        ("Tue, 01 Dec 2026 10:00:00 GMT", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ("2y", "2y"),
        ("-2h", "-2h"),
    ],
)
def test_time_filters(text: str, expected: str) -> None:
    assert parse_time_filter(text, NOW) == expected


def test_relative_time_is_utc_whatever_the_zone_of_now() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=5)))
    assert parse_time_filter("1h", local) == "2026-12-01T09:00:00Z"


def test_query_order_repeated_nodes_and_limit() -> None:
    assert list_query(
        now=NOW,
        status="running,voting",
        nodes=["web1", "web2"],
        requested_by="alice",
        since="2h",
        until="2026-12-01",
        command="chef-client",
        limit=50,
        offset=100,
    ) == [
        ("status", "running,voting"),
        ("node", "web1"),
        ("node", "web2"),
        ("requested_by", "alice"),
        ("since", "2026-12-01T08:00:00Z"),
        ("until", "2026-12-01"),
        ("command", "chef-client"),
        ("limit", "50"),
        ("offset", "100"),
    ]
    assert list_query(now=NOW) == []
    assert list_query(now=NOW, limit=0) == []  # 0: every job, no limit sent
    assert list_query(now=NOW, offset=0) == [("offset", "0")]


def test_link_next_hint() -> None:
    link = '<https://push.test/organizations/acme/pushy/jobs?node=a&limit=50&offset=50>; rel="next"'
    assert next_page(link) == (
        "https://push.test/organizations/acme/pushy/jobs?node=a&limit=50&offset=50"
    )
    assert more_hint(link) == (
        "more jobs exist: use --offset 50 for the next page, or a larger --limit"
    )
    assert more_hint("<https://x/jobs?limit=5>; rel=next") == MORE_JOBS
    assert more_hint('<https://x/jobs?offset=5>; rel="prev"') is None
    assert more_hint(None) is None
    assert more_hint("") is None

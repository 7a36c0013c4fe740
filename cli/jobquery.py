"""The query of `job list` (cli.md §5) and its paging hint. Pure: `now` is passed in.

Filters map onto the Extension parameters of `GET pushy/jobs` (http-api.md §7.3). A relative
`--since`/`--until` (`30m`, `2h`, `7d`) becomes an ISO 8601 UTC time; any other value is sent
as given, and the server checks it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

_DURATION = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;\s*(?:[^,]*;\s*)?rel="?next"?', re.IGNORECASE)
MORE_JOBS = "more jobs exist: use --limit or --offset"


def parse_time_filter(text: str, now: datetime) -> str:
    """`2h` → `now - 2h` as `2026-12-01T10:00:00Z`; other values unchanged (stripped)."""
    value = text.strip()
    m = _DURATION.fullmatch(value)
    if not m:
        return value
    then = now.astimezone(UTC) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    return then.strftime("%Y-%m-%dT%H:%M:%SZ")


def list_query(
    *,
    now: datetime,
    status: str | None = None,
    nodes: list[str] | None = None,
    requested_by: str | None = None,
    since: str | None = None,
    until: str | None = None,
    command: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> list[tuple[str, str]]:
    """The query parameters in a fixed order; `node` repeated; `limit` 0 or None → none."""
    params: list[tuple[str, str]] = []
    if status:
        params.append(("status", status))
    params.extend(("node", n) for n in nodes or [])
    if requested_by is not None:
        params.append(("requested_by", requested_by))
    if since is not None:
        params.append(("since", parse_time_filter(since, now)))
    if until is not None:
        params.append(("until", parse_time_filter(until, now)))
    if command is not None:
        params.append(("command", command))
    if limit:
        params.append(("limit", str(limit)))
    if offset is not None:
        params.append(("offset", str(offset)))
    return params


def next_page(link: str | None) -> str | None:
    """The URL of the `rel="next"` page in a `Link` header, None when there is none."""
    m = _NEXT_LINK.search(link or "")
    return m.group(1) if m else None


def more_hint(link: str | None) -> str | None:
    """The stderr hint when the server says that more jobs exist after this page."""
    url = next_page(link)
    if url is None:
        return None
    offsets = parse_qs(urlsplit(url).query).get("offset", [])
    if not offsets or not offsets[0].isdigit():
        return MORE_JOBS
    return f"more jobs exist: use --offset {offsets[0]} for the next page, or a larger --limit"

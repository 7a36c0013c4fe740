"""The query of `GET org/jobs` (http-api.md §7.3): parsing and checking it, and the query of the
next page's `Link`. Pure: no I/O, no clock."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes, unquote_plus

from pushjobs.protocol.errors import TimestampError
from pushjobs.protocol.timestamps import parse_rfc1123
from pushjobs.server.http.errors import HttpError
from pushjobs.server.store.records import JOB_STATUSES, JobFilters

if TYPE_CHECKING:
    from starlette.datastructures import QueryParams

_DIGITS = re.compile(r"[0-9]{1,10}")
# The ISO 8601 forms accepted: a date (midnight UTC), or a date and time with `Z` or an offset.
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ISO_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})"
)
# A bare character `quote_from_bytes` keeps: everything a query may carry as is, and `%`, so
# the parameters' own escapes pass through unchanged.
_QUERY_SAFE = "!$&'()*+,/:;=?@-._~%"


@dataclass(frozen=True)
class ListQuery:
    """A checked `GET org/jobs` query."""

    statuses: list[str] | None = None
    limit: int | None = None
    offset: int = 0
    filters: JobFilters = field(default_factory=JobFilters)


def parse_list_query(query: QueryParams) -> ListQuery:
    """The listing the query asks for; HttpError 400 with the §7.3 text for the first bad
    parameter (checked in the order of the table there)."""
    statuses, limit, offset = _statuses(query), _limit(query), _offset(query)
    nodes, requested_by = _nodes(query), _name(query, "requested_by")
    since, until = _time(query, "since"), _time(query, "until")
    command = _command(query)
    if since is not None and until is not None and since > until:
        raise HttpError(400, "invalid time range (since is after until)")
    filters = JobFilters(nodes, requested_by, command, since, until)
    return ListQuery(statuses, limit, offset, filters)


def _statuses(query: QueryParams) -> list[str] | None:
    if "status" not in query:
        return None
    value = query["status"]
    statuses = value.split(",")
    if any(status not in JOB_STATUSES for status in statuses):
        raise HttpError(400, f"invalid status filter '{value}'")
    return statuses


def _limit(query: QueryParams) -> int | None:
    if "limit" not in query:
        return None
    value = query["limit"]
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= 1000:
        raise HttpError(400, f"invalid limit '{value}' (expected an integer from 1 to 1000)")
    return int(value)


def _offset(query: QueryParams) -> int:
    if "offset" not in query:
        return 0
    value = query["offset"]
    if not _DIGITS.fullmatch(value):
        raise HttpError(400, f"invalid offset '{value}' (expected an integer >= 0)")
    return int(value)


def _nodes(query: QueryParams) -> tuple[str, ...]:
    """Every `node=` (repeatable), first occurrence order, duplicates dropped."""
    nodes: dict[str, None] = {}
    for value in query.getlist("node"):
        if not value:
            raise HttpError(400, f"invalid node filter '{value}'")
        nodes[value] = None
    return tuple(nodes)


def _name(query: QueryParams, key: str) -> str | None:
    if key not in query:
        return None
    value = query[key]
    if not value:
        raise HttpError(400, f"invalid {key} filter '{value}'")
    return value


def _command(query: QueryParams) -> str | None:
    if "command" not in query:
        return None
    value = query["command"]
    if not value:
        raise HttpError(400, "invalid command filter")
    return value


def _time(query: QueryParams, key: str) -> float | None:
    if key not in query:
        return None
    value = query[key]
    parsed = parse_time(value)
    if parsed is None:
        raise HttpError(400, f"invalid {key} '{value}' (expected an RFC 1123 or ISO 8601 time)")
    return parsed


def parse_time(text: str) -> float | None:
    """Epoch seconds of an RFC 1123 GMT time or an ISO 8601 date / date-time with a zone (a
    date alone is midnight UTC); None when it is neither."""
    try:
        return parse_rfc1123(text)
    except TimestampError:
        pass
    try:
        if _ISO_DATE.fullmatch(text):
            day = datetime.fromisoformat(text)
            return float(calendar.timegm(day.timetuple()))
        if _ISO_TIME.fullmatch(text):
            return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        return None
    return None


def next_page_query(raw_query: bytes, offset: int) -> str:
    """The query string `raw_query` with `offset` set to `offset` (in the place of the first
    `offset` parameter, or last) and every other parameter kept as sent, repeated ones too."""
    parts: list[str] = []
    placed = False
    for raw in raw_query.split(b"&"):
        if not raw:
            continue
        key = unquote_plus(raw.split(b"=", 1)[0].decode("latin-1"), encoding="latin-1")
        if key == "offset":
            if not placed:
                parts.append(f"offset={offset}")
                placed = True
            continue
        parts.append(quote_from_bytes(raw, safe=_QUERY_SAFE))
    if not placed:
        parts.append(f"offset={offset}")
    return "&".join(parts)

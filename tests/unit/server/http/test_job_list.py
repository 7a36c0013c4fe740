"""`GET org/jobs` filters and paging (http-api.md §7.3), the job object's audit and limit
members (§7.5), and abort on behalf of the requestor (§7.10), on the real app and store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.server.http.job_filters import next_page_query, parse_time
from pushjobs.server.http.job_views import job_object
from pushjobs.server.store.records import Job
from tests.support.http_harness import BASE_URL, ORG, Harness, error_of, make_harness

JOBS = f"/organizations/{ORG}/pushy/jobs"
T0 = 1_767_261_600.0  # Thu, 01 Jan 2026 10:00:00 GMT


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = make_harness(tmp_path)
    harness.add_user("alice", 1, admin=True)
    harness.add_user("bob", 2)
    yield harness
    await harness.client.aclose()
    harness.store.close()


def add_job(
    h: Harness, prefix: str, nodes: list[str], at: float, *, org: str = ORG, **fields: Any
) -> Job:
    """A stored job `<prefix * 16>` created at `at` (requested by alice unless given)."""
    found = h.store.get_org(org)
    assert found is not None
    values: dict[str, Any] = {
        "id": prefix * 16,
        "org_id": found.id,
        "org_name": org,
        "command": "chef-client",
        "status": "complete",
        "quorum": 1,
        "run_timeout": 60,
        "requestor_name": "alice",
        "requestor_type": "user",
        "created_at": at,
        "updated_at": at,
        **fields,
    }
    job = Job(**values)
    h.store.create_job(job, nodes)
    return job


def seed_jobs(h: Harness) -> None:
    """Six jobs, one a day from T0 (newest first: 06 … 01), and one in the other org."""
    add_job(h, "01", ["web1", "db1"], T0)
    add_job(h, "02", ["web2"], T0 + 86400, requestor_name="bob")
    add_job(h, "03", ["db1"], T0 + 2 * 86400, command="chef-client -o 'recipe[x]'")
    add_job(h, "04", ["web1", "web2"], T0 + 3 * 86400, requestor_name="bob", status="aborted")
    add_job(h, "05", ["db2"], T0 + 4 * 86400, command="uptime")
    add_job(h, "06", ["web1"], T0 + 5 * 86400, requestor_name="robot", requestor_type="client")
    add_job(h, "ff", ["web1"], T0, org="globex")


async def listing(h: Harness, query: str = "", **headers: str) -> httpx.Response:
    return await h.request("GET", JOBS, user="bob", query=query, headers=headers)


async def prefixes(h: Harness, query: str) -> list[str]:
    r = await listing(h, query)
    assert r.status_code == 200, r.text
    return [job["id"][:2] for job in r.json()]


# ---- the job object ------------------------------------------------------------------------


def test_job_object_audit_and_limits_only_when_given() -> None:
    job = Job("ab" * 16, "o", ORG, "x", "complete", 1, 60, "alice", "user", T0, T0)
    plain = job_object(job, None)
    assert plain == {
        "id": "ab" * 16,
        "command": "x",
        "status": "complete",
        "run_timeout": 60,
        "created_at": format_rfc1123(T0),
        "updated_at": format_rfc1123(T0),
        "requested_by": "alice",
    }
    job.max_concurrency, job.max_errors, job.aborted_by = "10%", 0, "bob"
    full = job_object(job, {"aborted": ["n1"]})
    assert full == {
        **plain,
        "nodes": {"aborted": ["n1"]},
        "max_concurrency": "10%",
        "max_errors": 0,
        "aborted_by": "bob",
    }


async def test_listing_entries_and_get_carry_the_new_members(h: Harness) -> None:
    add_job(h, "01", ["web1"], T0, max_concurrency=2, max_errors="50%", aborted_by="bob")
    add_job(h, "02", ["web1"], T0 + 1, requestor_name="robot", requestor_type="client")
    entries = (await listing(h)).json()
    assert [e["requested_by"] for e in entries] == ["robot", "alice"]
    assert "max_concurrency" not in entries[0] and "aborted_by" not in entries[0]
    assert (entries[1]["max_concurrency"], entries[1]["max_errors"]) == (2, "50%")
    assert entries[1]["aborted_by"] == "bob" and "nodes" not in entries[1]
    one = (await h.request("GET", f"{JOBS}/{'01' * 16}", user="bob")).json()
    assert one == {**entries[1], "nodes": {"new": ["web1"]}}


async def test_abort_records_the_requestor(h: Harness) -> None:
    h.nodes.accept(ORG, "n1", "inc-1", b"r1", "3.0", time.monotonic())
    h.nodes.aborted(ORG, "n1")  # rehab -> idle: the job waits for its vote
    h.sessions.session_key(ORG, "n1")
    sent: list[object] = []
    h.nodes.attach(sent.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.jobs.run)
        r = await h.request(
            "POST",
            JOBS,
            user="alice",
            body=b'{"command":"chef-client","nodes":["n1"]}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        job_id = r.json()["uri"].rsplit("/", 1)[1]
        assert (await h.request("GET", f"{JOBS}/{job_id}", user="bob")).json()["status"] == (
            "voting"
        )
        r = await h.request("POST", f"{JOBS}/{job_id}/abort", user="alice")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "aborted"
        assert (r.json()["requested_by"], r.json()["aborted_by"]) == ("alice", "alice")
        entry = (await listing(h)).json()[0]
        assert (entry["id"], entry["aborted_by"]) == (job_id, "alice")
        nursery.cancel_scope.cancel()
    assert sent  # the commit went out
    stored = h.store.get_job(ORG, job_id)
    assert stored is not None and stored.aborted_by == "alice"


# ---- filters -------------------------------------------------------------------------------


async def test_without_filters_every_job_newest_first_and_no_link(h: Harness) -> None:
    seed_jobs(h)
    r = await listing(h)
    assert [j["id"][:2] for j in r.json()] == ["06", "05", "04", "03", "02", "01"]
    assert "link" not in r.headers


async def test_node_filter_is_repeatable(h: Harness) -> None:
    seed_jobs(h)
    assert await prefixes(h, "node=web1") == ["06", "04", "01"]
    assert await prefixes(h, "node=db1&node=web2") == ["04", "03", "02", "01"]
    assert await prefixes(h, "node=nope") == []


async def test_requested_by_and_command_filters_are_exact(h: Harness) -> None:
    seed_jobs(h)
    assert await prefixes(h, "requested_by=bob") == ["04", "02"]
    assert await prefixes(h, "requested_by=robot") == ["06"]
    assert await prefixes(h, "requested_by=Bob") == []
    assert await prefixes(h, "command=chef-client") == ["06", "04", "02", "01"]
    command = quote("chef-client -o 'recipe[x]'", safe="")
    assert await prefixes(h, f"command={command}") == ["03"]
    assert await prefixes(h, "command=chef") == []


@pytest.mark.parametrize(
    "since",
    [
        quote(format_rfc1123(T0 + 2 * 86400)),
        "2026-01-03T10:00:00Z",
        "2026-01-03T12:00:00%2B02:00",
        "2026-01-03T05:00:00-05:00",
        "2026-01-03T10:00Z",
        "2026-01-03T10:00:00.000Z",
    ],
)
async def test_since_is_inclusive_in_every_form(h: Harness, since: str) -> None:
    seed_jobs(h)
    assert await prefixes(h, f"since={since}") == ["06", "05", "04", "03"]


async def test_until_is_exclusive_and_dates_are_midnight_utc(h: Harness) -> None:
    seed_jobs(h)
    assert await prefixes(h, "until=2026-01-03T10:00:00Z") == ["02", "01"]
    assert await prefixes(h, "until=2026-01-03T10:00:01Z") == ["03", "02", "01"]
    assert await prefixes(h, "since=2026-01-02&until=2026-01-04") == ["03", "02"]
    assert await prefixes(h, "since=2026-01-02T10:00:00Z&until=2026-01-02T10:00:00Z") == []


async def test_filters_combine_with_status_and_paging(h: Harness) -> None:
    seed_jobs(h)
    assert await prefixes(h, "node=web1&requested_by=bob") == ["04"]
    assert await prefixes(h, "node=web1&status=complete") == ["06", "01"]
    assert await prefixes(h, "node=web1&node=web2&limit=2&offset=1") == ["04", "02"]
    assert await prefixes(h, "since=2026-01-02&command=chef-client&offset=1") == ["04", "02"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("node=", "invalid node filter ''"),
        ("node=web1&node=", "invalid node filter ''"),
        ("requested_by=", "invalid requested_by filter ''"),
        ("command=", "invalid command filter"),
        ("since=", "invalid since '' (expected an RFC 1123 or ISO 8601 time)"),
        ("since=yesterday", "invalid since 'yesterday' (expected an RFC 1123 or ISO 8601 time)"),
        ("until=2h", "invalid until '2h' (expected an RFC 1123 or ISO 8601 time)"),
        (
            "since=2026-01-02T10:00:00",  # no zone: ambiguous
            "invalid since '2026-01-02T10:00:00' (expected an RFC 1123 or ISO 8601 time)",
        ),
        (
            "until=2026-02-30",
            "invalid until '2026-02-30' (expected an RFC 1123 or ISO 8601 time)",
        ),
        (
            "since=" + quote("Fri, 01 Jan 2026 10:00:00 GMT"),  # it was a Thursday
            "invalid since 'Fri, 01 Jan 2026 10:00:00 GMT' (expected an RFC 1123 or ISO 8601 time)",
        ),
        (
            "since=2026-01-03&until=2026-01-02T23:59:59Z",
            "invalid time range (since is after until)",
        ),
        ("status=bogus&node=", "invalid status filter 'bogus'"),
        ("limit=0", "invalid limit '0' (expected an integer from 1 to 1000)"),
    ],
)
async def test_invalid_filters_are_400(h: Harness, query: str, message: str) -> None:
    r = await listing(h, query)
    assert r.status_code == 400
    assert error_of(r) == [message]


# ---- Link ----------------------------------------------------------------------------------


def next_link(r: httpx.Response) -> str | None:
    value = r.headers.get("link")
    if value is None:
        return None
    assert value.startswith("<") and value.endswith('>; rel="next"'), value
    return value[1 : -len('>; rel="next"')]


async def test_link_only_while_more_results_exist(h: Harness) -> None:
    seed_jobs(h)
    assert next_link(await listing(h, "limit=6")) is None
    assert next_link(await listing(h, "limit=5&offset=1")) is None
    assert next_link(await listing(h, "limit=1000")) is None
    link = next_link(await listing(h, "limit=5"))
    assert link == f"{BASE_URL}{JOBS}?limit=5&offset=5"


async def test_link_keeps_every_other_parameter(h: Harness) -> None:
    seed_jobs(h)
    query = "node=web1&node=web2&offset=0&status=complete,aborted&limit=1&command=chef-client"
    link = next_link(await listing(h, query))
    assert link == (
        f"{BASE_URL}{JOBS}?node=web1&node=web2&offset=1&status=complete,aborted&limit=1"
        "&command=chef-client"
    )


async def test_link_uses_forwarded_scheme_and_host(h: Harness) -> None:
    seed_jobs(h)
    r = await listing(
        h, "limit=2", **{"X-Forwarded-Proto": "https", "Host": "push.example.com:8443"}
    )
    assert next_link(r) == f"https://push.example.com:8443{JOBS}?limit=2&offset=2"


async def test_following_links_pages_through_every_result(h: Harness) -> None:
    seed_jobs(h)
    for i in range(7, 30):
        add_job(h, f"{i:02x}", ["web1"], T0 + 10 * 86400 + i)
    expected = await prefixes(h, "node=web1&node=db2")
    assert len(expected) == 27
    query: str | None = "node=web1&limit=4&node=db2"
    seen: list[str] = []
    pages = 0
    while query is not None:
        r = await listing(h, query)
        assert r.status_code == 200, r.text
        seen += [job["id"][:2] for job in r.json()]
        pages += 1
        link = next_link(r)
        query = None if link is None else link.split("?", 1)[1]
    assert seen == expected and pages == 7


# ---- the pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thu, 01 Jan 2026 10:00:00 GMT", T0),
        ("2026-01-01T10:00:00Z", T0),
        ("2026-01-01T10:00Z", T0),
        ("2026-01-01T10:00:00.25Z", T0 + 0.25),
        ("2026-01-01T11:30:00+01:30", T0),
        ("2026-01-01", T0 - 10 * 3600),
        ("2026-01-01T10:00:00", None),
        ("2026-01-01 10:00:00Z", None),
        ("20260101T100000Z", None),
        ("2026-01-01T25:00:00Z", None),
        ("2026-13-01", None),
        ("Thu, 01 Jan 2026 10:00:00 UTC", None),
        ("1767261600", None),
        ("", None),
    ],
)
def test_parse_time(text: str, expected: float | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("raw", "offset", "expected"),
    [
        (b"limit=2", 2, "limit=2&offset=2"),
        (b"offset=3&limit=2", 5, "offset=5&limit=2"),
        (b"limit=2&offset=0&offset=9&node=a", 2, "limit=2&offset=2&node=a"),
        (b"node=a%20b&node=c&&limit=1", 1, "node=a%20b&node=c&limit=1&offset=1"),
        (b"command=a+b&off%73et=1&limit=1", 2, "command=a+b&offset=2&limit=1"),
        (b'command=<x>"&limit=1', 1, "command=%3Cx%3E%22&limit=1&offset=1"),
        ("node=nöde&limit=1".encode(), 1, "node=n%C3%B6de&limit=1&offset=1"),
    ],
)
def test_next_page_query(raw: bytes, offset: int, expected: str) -> None:
    assert next_page_query(raw, offset) == expected

"""`GET org/jobs` filters and paging, and the audit members of the job object, end to end: a
real server process, signed HTTP (http-api.md §7.3, §7.5, §7.10).

Jobs go to nodes that are offline (they end `quorum_failed` at once); each test uses its own
node names, so it sees only its own jobs through the node filter.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
import trio

from tests.support.api import api, server_status
from tests.support.clients import node_name
from tests.support.jobs import get_job, start_job, wait_job
from tests.support.peers import ready_peers
from tests.support.server import ServerProcess
from tests.support.waits import wait_until

TIME_HINT = "(expected an RFC 1123 or ISO 8601 time)"


async def listing(server: ServerProcess, query: str) -> httpx.Response:
    response = await api(server, "GET", f"jobs?{query}")
    assert response.status_code == 200, response.text
    return response


async def ids(server: ServerProcess, query: str) -> list[str]:
    return [job["id"] for job in (await listing(server, query)).json()]


def iso(rfc1123: str) -> str:
    """`Tue, 01 Dec 2026 10:00:00 GMT` as `2026-12-01T10:00:00Z`."""
    return parsedate_to_datetime(rfc1123).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_node_filter_is_repeatable_and_newest_first(server: ServerProcess) -> None:
    n1, n2, n3, n4 = (node_name("nf") for _ in range(4))
    first = await start_job(server, "nf", [n1])
    second = await start_job(server, "nf", [n2, n3])
    third = await start_job(server, "nf", [n3, n1])
    await start_job(server, "nf", [n4])
    assert set(await ids(server, f"node={n1}")) == {first, third}
    assert set(await ids(server, f"node={n1}&node={n2}")) == {first, second, third}
    assert await ids(server, f"node={node_name('nf')}") == []
    # newest first: created_at descending (ties in one second: id descending)
    entries = (await listing(server, f"node={n1}&node={n2}&node={n3}")).json()
    assert [job["id"] for job in entries] == [
        job["id"] for job in sorted(entries, key=_newest_first_key, reverse=True)
    ]


def _newest_first_key(job: dict[str, Any]) -> tuple[float, str]:
    return parsedate_to_datetime(job["created_at"]).timestamp(), job["id"]


async def test_requested_by_filter_and_member(server: ServerProcess) -> None:
    robot, robot_key = await trio.to_thread.run_sync(
        lambda: server.make_client(node_name("robot"), admin=True)
    )
    node = node_name("rb")
    by_admin = await start_job(server, "rb", [node])
    response = await trio.to_thread.run_sync(
        lambda: server.post(
            "jobs", body={"command": "rb", "nodes": [node]}, user=robot, key=robot_key
        )
    )
    assert response.status_code == 201, response.text
    by_robot = response.json()["uri"].rsplit("/", 1)[1]
    assert await ids(server, f"node={node}&requested_by={robot}") == [by_robot]
    assert await ids(server, f"node={node}&requested_by={server.admin_user}") == [by_admin]
    assert await ids(server, f"node={node}&requested_by=nobody") == []
    assert (await get_job(server, by_admin))["requested_by"] == server.admin_user
    assert (await get_job(server, by_robot))["requested_by"] == robot
    entries = (await listing(server, f"node={node}")).json()
    assert {job["id"]: job["requested_by"] for job in entries} == {
        by_admin: server.admin_user,
        by_robot: robot,
    }


async def test_command_filter_is_exact(server: ServerProcess) -> None:
    node = node_name("cmd")
    plain = await start_job(server, "chef-client", [node])
    longer = await start_job(server, "chef-client -o 'recipe[x]'", [node])
    assert await ids(server, f"node={node}&command=chef-client") == [plain]
    command = quote("chef-client -o 'recipe[x]'", safe="")
    assert await ids(server, f"node={node}&command={command}") == [longer]
    assert await ids(server, f"node={node}&command=chef") == []
    assert await ids(server, f"node={node}&command=CHEF-CLIENT") == []


async def test_since_until_in_both_forms(server: ServerProcess) -> None:
    node = node_name("time")
    early = await start_job(server, "t", [node])
    await trio.sleep(1.1)  # created_at has second precision
    late = await start_job(server, "t", [node])
    stamp = (await get_job(server, late))["created_at"]
    assert (await get_job(server, early))["created_at"] != stamp
    for since in (quote(stamp), iso(stamp)):
        assert await ids(server, f"node={node}&since={since}") == [late]  # inclusive
        assert await ids(server, f"node={node}&until={since}") == [early]  # exclusive
    date = iso(stamp)[:10]
    assert late in await ids(server, f"node={node}&since={date}")  # midnight UTC of that day
    assert await ids(server, f"node={node}&since={iso(stamp)}&until={iso(stamp)}") == []


async def test_invalid_filters_are_400_with_their_text(server: ServerProcess) -> None:
    cases = {
        "node=": "invalid node filter ''",
        "node=a&node=": "invalid node filter ''",
        "requested_by=": "invalid requested_by filter ''",
        "command=": "invalid command filter",
        "since=2h": f"invalid since '2h' {TIME_HINT}",
        "until=" + quote("Tue, 01 Dec 2026 10:00:00 UTC"): (
            f"invalid until 'Tue, 01 Dec 2026 10:00:00 UTC' {TIME_HINT}"
        ),
        "since=2026-12-02&until=2026-12-01T23:00:00Z": "invalid time range (since is after until)",
    }
    for query, message in cases.items():
        response = await api(server, "GET", f"jobs?{query}")
        assert response.status_code == 400, query
        assert response.json() == {"error": [message]}, query


async def test_link_pages_through_every_result(server: ServerProcess) -> None:
    node, other = node_name("page"), node_name("page")
    started = {await start_job(server, "page", [node if i % 2 else other]) for i in range(7)}
    everything = await ids(server, f"node={node}&node={other}")
    assert set(everything) == started
    first = await listing(server, f"node={node}&limit=3&node={other}")
    assert first.headers["link"] == (
        f"<{server.http_url}/organizations/{server.org}/pushy/jobs"
        f'?node={node}&limit=3&node={other}&offset=3>; rel="next"'
    )
    seen = [job["id"] for job in first.json()]
    response = first
    while "link" in response.headers:
        link = response.headers["link"]
        assert link.startswith(f"<{server.http_url}/") and link.endswith('>; rel="next"')
        response = await api(server, "GET", link[1 : -len('>; rel="next"')][len(server.http_url) :])
        assert response.status_code == 200, response.text
        seen += [job["id"] for job in response.json()]
    assert seen == everything
    exact = await listing(server, f"node={node}&node={other}&limit=7")
    assert "link" not in exact.headers and len(exact.json()) == 7
    unlimited = await listing(server, f"node={node}&node={other}")
    assert "link" not in unlimited.headers


async def test_abort_records_who_aborted(server: ServerProcess) -> None:
    async with ready_peers(server, 1, "abby") as (peer,):
        job_id = await start_job(server, "x", [peer.node])
        await peer.expect("commit", skip=("ack",))  # never answered: the job stays voting
        response = await api(server, "POST", f"jobs/{job_id}/abort")
        assert response.status_code == 200, response.text
        assert response.json()["aborted_by"] == server.admin_user
        await peer.expect("abort")
        job = await wait_job(server, job_id)
        assert (job["status"], job["aborted_by"]) == ("aborted", server.admin_user)
        entries = (await listing(server, f"node={peer.node}")).json()
        assert [(j["id"], j["aborted_by"]) for j in entries] == [(job_id, server.admin_user)]

    async def gone() -> bool:
        return job_id not in (await server_status(server))["job_processes"]

    # once the job has left memory, what is answered comes from the store
    await wait_until(gone, timeout=30, what="the job to leave memory")
    stored = await get_job(server, job_id)
    assert (stored["status"], stored["aborted_by"]) == ("aborted", server.admin_user)
    finished = await start_job(server, "x", [node_name("abby")])
    assert "aborted_by" not in await wait_job(server, finished)

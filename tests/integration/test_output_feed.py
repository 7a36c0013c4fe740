"""The per-job output feed (http-api.md §7.13) end to end: a real server, three real agents.

Every job process prints a line on stdout, waits for a release file, then prints a line on
stderr, so the order in which bytes reached the server is known from outside.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.support.agents import running_agents
from tests.support.jobs import output, post_job
from tests.support.procs import started
from tests.support.server import ServerProcess
from tests.support.sse import SseReader, read_sse
from tests.support.waits import wait_for

WHITELIST = """
"step" = { run = 'echo "$CHEF_PUSH_NODE_NAME one"; while [ ! -e "$RELEASE" ]; do sleep 0.05; done; echo "$CHEF_PUSH_NODE_NAME two" >&2', shell = true }
"bad" = { run = 'echo "$CHEF_PUSH_NODE_NAME bad"; exit 3', shell = true }
"""  # noqa: E501


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's server keeps a finished job in memory for 12 s: long enough to resume a
    live feed on a loaded machine, short enough to wait for the replay from the store."""
    timing = {"timing": {"wait_complete_time": 12}}
    with started(ServerProcess(tmp_path_factory.mktemp("server"), timing)) as proc:
        yield proc


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    base = tmp_path_factory.mktemp("fleet")
    with running_agents(server, base, "of", 3, whitelist=WHITELIST) as agents:
        yield [agent.name for agent in agents]


def assembled(events: list[dict[str, Any]]) -> dict[tuple[str, str], bytes]:
    """The bytes per (node, channel), checking every piece continues where the last ended."""
    got: dict[tuple[str, str], bytes] = {}
    for event in events:
        if event["event"] != "output":
            continue
        data = event["data"]
        key = (data["node"], data["channel"])
        piece = data["data"].encode()
        if data["encoding"] == "base64":
            piece = base64.b64decode(data["data"])
        held = got.get(key, b"")
        assert data["offset"] == len(held), (key, data["offset"], len(held))
        got[key] = held + piece
        assert event["id"] == f"{key[0]}:{key[1]}:{len(got[key])}"
    return got


def expected(nodes: list[str]) -> dict[tuple[str, str], bytes]:
    out = {(n, "stdout"): f"{n} one\n".encode() for n in nodes}
    out.update({(n, "stderr"): f"{n} two\n".encode() for n in nodes})
    return out


def feed(server: ServerProcess, job_id: str, last: str | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": last} if last is not None else None
    response, events = trio.run(read_sse, server, f"jobs/{job_id}/output", headers)
    assert response.status_code == 200, response.text
    assert events[-1]["event"] == "job_complete" and events[-1]["id"] == "job_complete"
    return events


def no_longer_live(server: ServerProcess, job_id: str) -> bool:
    _, events = trio.run(read_sse, server, f"job_status_feed/{job_id}")
    return [e["event"] for e in events] == ["summary"]


@pytest.fixture(scope="module")
def live_run(
    server: ServerProcess, fleet: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[dict[str, Any]]]:
    """One `step` job followed live from before its first byte to its end."""
    release = tmp_path_factory.mktemp("release") / "go"
    job_id = post_job(server, "step", fleet, capture_output=True, env={"RELEASE": str(release)})

    async def follow() -> list[dict[str, Any]]:
        reader = SseReader()
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run, server, f"jobs/{job_id}/output")
            with trio.fail_after(30):
                while sum(e["event"] == "output" for e in reader.events) < len(fleet):
                    await reader.wait_event("output")
                    await trio.sleep(0.05)
            assert not reader.ended.is_set()  # the job is still running: the stream stays open
            release.touch()
            await reader.wait_end(30)
        assert reader.status == 200
        return reader.events

    return job_id, trio.run(follow)


def test_live_feed_follows_every_node_in_arrival_order(
    live_run: tuple[str, list[dict[str, Any]]], fleet: list[str]
) -> None:
    _, events = live_run
    assert assembled(events) == expected(fleet)
    channels = [e["data"]["channel"] for e in events if e["event"] == "output"]
    # every node's stdout reached the server before the release, every stderr after it
    assert channels == ["stdout"] * len(fleet) + ["stderr"] * len(fleet), channels
    ends = sorted(e["id"] for e in events if e["event"] == "end")
    assert ends == sorted(f"{n}:{c}:end" for n in fleet for c in ("stdout", "stderr"))
    for event in events:
        if event["event"] == "end":
            data = event["data"]
            assert (data["status"], data["exit_status"], data["omitted_bytes"]) == (
                "succeeded",
                0,
                0,
            )
            assert data["bytes"] == len(expected(fleet)[(data["node"], data["channel"])])
    assert events[-1]["data"]["status"] == "complete"
    stamps = [e["data"]["timestamp"] for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_resume_while_live_sends_only_what_came_after(
    server: ServerProcess, live_run: tuple[str, list[dict[str, Any]]]
) -> None:
    job_id, first = live_run
    ids = [e["id"] for e in first]
    for index in (0, len(fleet_outputs(first)) - 1, ids.index(next(i for i in ids if "end" in i))):
        again = feed(server, job_id, last=ids[index])
        assert [e["id"] for e in again] == ids[index + 1 :], ids[index]
    # an id the log never had: everything from the start
    assert [e["id"] for e in feed(server, job_id, last="nobody:stdout:5")] == ids


def fleet_outputs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "output"]


def test_replay_from_the_store_once_the_job_left_memory(
    server: ServerProcess, live_run: tuple[str, list[dict[str, Any]]], fleet: list[str]
) -> None:
    job_id, _ = live_run
    wait_for(lambda: no_longer_live(server, job_id), 30, what="the job to leave memory")
    events = feed(server, job_id)
    assert assembled(events) == expected(fleet)
    order = [(e["event"], e["data"].get("node"), e["data"].get("channel")) for e in events]
    want: list[tuple[str, str | None, str | None]] = []
    for node in fleet:  # nodes in name order, stdout then stderr, each ended
        for channel in ("stdout", "stderr"):
            want += [("output", node, channel), ("end", node, channel)]
    assert order == [*want, ("job_complete", None, None)]
    for node in fleet:  # the same bytes as the stored-output route
        assert output(server, job_id, node, "stdout") == f"{node} one\n".encode()
    # resuming a stored job: the named channel from the offset, every other channel whole
    second = fleet[1]
    resumed = feed(server, job_id, last=f"{second}:stdout:3")
    got = {key: data for key, data in _pieces(resumed).items()}
    assert got[(second, "stdout")] == (3, f"{second} one\n".encode()[3:])
    assert got[(fleet[0], "stderr")] == (0, f"{fleet[0]} two\n".encode())
    after_end = feed(server, job_id, last=f"{second}:stderr:end")
    assert (second, "stderr") not in _pieces(after_end)
    assert f"{second}:stderr:end" not in [e["id"] for e in after_end]
    assert len([e for e in after_end if e["event"] == "end"]) == 2 * len(fleet) - 1


def _pieces(events: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, bytes]]:
    """(first offset, bytes) per channel of a resumed stream."""
    got: dict[tuple[str, str], tuple[int, bytes]] = {}
    for event in fleet_outputs(events):
        data = event["data"]
        key = (data["node"], data["channel"])
        start, held = got.get(key, (data["offset"], b""))
        got[key] = (start, held + data["data"].encode())
    return got


def test_nodes_that_never_ran_have_no_end(server: ServerProcess, fleet: list[str]) -> None:
    job_id = post_job(server, "bad", fleet, capture_output=True, max_concurrency=1, max_errors=0)
    events = feed(server, job_id)
    assert assembled(events) == {(fleet[0], "stdout"): f"{fleet[0]} bad\n".encode()}
    ends = [e for e in events if e["event"] == "end"]
    assert [(e["id"], e["data"]["status"], e["data"]["exit_status"]) for e in ends] == [
        (f"{fleet[0]}:stdout:end", "failed", 3),
        (f"{fleet[0]}:stderr:end", "failed", 3),
    ]
    assert events[-1]["data"]["status"] == "stopped"


def test_errors(server: ServerProcess, fleet: list[str]) -> None:
    sse = {"Accept": "text/event-stream"}
    job_id = post_job(server, "bad", fleet[:1])
    response = server.get(f"jobs/{job_id}/output", headers=sse)
    assert (response.status_code, response.json()) == (
        404,
        {"error": [f"no output for job '{job_id}'"]},
    )
    unknown = "0123456789abcdef0123456789abcdef"
    response = server.get(f"jobs/{unknown}/output", headers=sse)
    assert (response.status_code, response.json()) == (
        404,
        {"error": [f"job '{unknown}' not found"]},
    )
    response = server.get(f"jobs/{job_id}/output", headers={"Accept": "application/json"})
    assert response.status_code == 406

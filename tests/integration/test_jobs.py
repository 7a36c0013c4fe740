"""Jobs end to end: a real server process, scripted protocol peers, signed HTTP and SSE.

Covers lifecycle.md §4–§9 and http-api.md §7.3–§7.12 as seen from outside: job objects, the
exact feed streams, abort, restart, feed replay, org feed history and captured output.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import trio

from tests.support.api import api
from tests.support.clients import node_name
from tests.support.jobs import get_job, start_job, wait_job
from tests.support.peer import Peer
from tests.support.peers import ready_peers
from tests.support.server import ServerProcess
from tests.support.sse import SseReader, compact, read_sse
from tests.support.waits import wait_until

RFC1123 = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")
SSE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}Z")


def assert_timestamps(events: list[dict[str, Any]]) -> None:
    stamps = [event["data"]["timestamp"] for event in events]
    assert all(SSE_TIME.fullmatch(stamp) for stamp in stamps), stamps
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps


# ---- peers -------------------------------------------------------------------------------


async def run_to_success(peer: Peer, job_id: str, *, output: bytes = b"") -> None:
    """Commit, run and succeed like a well-behaved 3.0 agent."""
    commit = await peer.expect("commit", skip=("ack",))
    assert commit.job_id == job_id
    await peer.send("ack_commit", job_id=job_id)
    await peer.expect("run")
    await peer.send("ack_run", job_id=job_id)
    if output:
        await peer.send("output", job_id=job_id, channel="stdout", offset=0, data=output)
    await peer.send(
        "succeeded",
        job_id=job_id,
        exit_status=0,
        signal=None,
        stdout_bytes=len(output),
        stderr_bytes=0,
    )


# ---- tests: the happy path ---------------------------------------------------------------


async def test_success_job_object_and_feed(server: ServerProcess) -> None:
    async with ready_peers(server, 2, "ok") as (a, b), trio.open_nursery() as nursery:
        options = {
            "quorum": 2,
            "run_timeout": 300,
            "user": "deploy",
            "dir": "/srv",
            "env": {"FOO": "bärs"},
            "file": "raw:hello",
            "capture_output": True,
        }
        job_id = await start_job(server, "chef-client", [b.node, a.node, b.node], **options)
        assert re.fullmatch(r"[0-9a-f]{32}", job_id)
        feed = SseReader()
        await nursery.start(feed.run, server, f"job_status_feed/{job_id}")

        commit = await a.expect("commit", skip=("ack",))
        assert commit.fields == {
            "type": "commit",
            "sequence": commit.sequence,
            "timestamp": commit["timestamp"],
            "job_id": job_id,
            "server": "127.0.0.1",
            "command": "chef-client",
            "capture": True,
            "user": "deploy",
            "dir": "/srv",
            "env": {"FOO": "bärs"},
            "file": "raw:hello",
            "run_timeout": 300,
        }
        job = await get_job(server, job_id)
        assert job["status"] == "voting"
        assert job["nodes"] == {"new": sorted([a.node, b.node])}
        await a.send("ack_commit", job_id=job_id)
        await b.expect("commit", skip=("ack",))
        await b.send("ack_commit", job_id=job_id)
        for peer in (a, b):
            run = await peer.expect("run")
            assert run.fields["job_id"] == job_id
            await peer.send("ack_run", job_id=job_id)
        await a.send(
            "succeeded", job_id=job_id, exit_status=0, signal=None, stdout_bytes=0, stderr_bytes=0
        )
        await b.send(
            "succeeded", job_id=job_id, exit_status=0, signal=None, stdout_bytes=0, stderr_bytes=0
        )
        await feed.wait_end()

        job = await wait_job(server, job_id)
        assert RFC1123.fullmatch(job["created_at"]) and RFC1123.fullmatch(job["updated_at"])
        assert job == {
            "id": job_id,
            "command": "chef-client",
            "status": "complete",
            "run_timeout": 300,
            "created_at": job["created_at"],
            "updated_at": job["updated_at"],
            "requested_by": server.admin_user,
            "nodes": {"succeeded": sorted([a.node, b.node])},
            "user": "deploy",
            "dir": "/srv",
            "env": {"FOO": "bärs"},
            "capture_output": True,
            "file_specified": True,
        }
        with_file = await get_job(server, job_id, "?include_file=true")
        assert with_file["file"] == "raw:hello" and "file_specified" not in with_file

        assert feed.status == 200
        assert feed.headers["content-type"] == "text/event-stream"
        assert feed.headers["cache-control"] == "no-cache"
        assert feed.text.endswith("\n\n")
        events = feed.events
        assert [e["id"] for e in events] == [f"job-{i}" for i in range(1, len(events) + 1)]
        assert_timestamps(events)
        start = events[0]["data"]
        assert start == {
            "timestamp": start["timestamp"],
            "command": "chef-client",
            "run_timeout": 300,
            "quorum": 2,
            "node_count": 2,
            "user": "admin",
            "requested_by": "admin",
            "capture": True,
            "job_user": "deploy",
            "dir": "/srv",
            "env": {"FOO": "bärs"},
            "file_specified": True,
        }
        got = compact(events)
        assert got[0] == ("start",)
        assert sorted(got[1:3]) == sorted(
            [("quorum_vote", a.node, "success"), ("quorum_vote", b.node, "success")]
        )
        assert got[3] == ("quorum_succeeded",)
        # the two nodes' messages travel on separate connections: their events may interleave
        # (lifecycle.md §6.3), only each node's own order is fixed
        assert sorted(got[4:8]) == sorted(
            [
                ("run_start", a.node),
                ("run_start", b.node),
                ("run_complete", a.node, "success"),
                ("run_complete", b.node, "success"),
            ]
        )
        for peer in (a, b):
            assert [e for e in got[4:8] if e[1] == peer.node] == [
                ("run_start", peer.node),
                ("run_complete", peer.node, "success"),
            ]
        assert got[8:] == [("job_complete", "complete")]

        nodes = (await api(server, "GET", f"jobs/{job_id}/nodes")).json()
        assert [n["node_name"] for n in nodes] == sorted([a.node, b.node])
        for n in nodes:
            assert n["status"] == "succeeded" and n["exit_status"] == 0 and n["signal"] is None
            assert RFC1123.fullmatch(n["started_at"]) and RFC1123.fullmatch(n["finished_at"])
            assert (n["stdout_bytes"], n["stderr_bytes"], n["truncated"]) == (0, 0, False)

        listing = (await api(server, "GET", "jobs")).json()
        summary = next(j for j in listing if j["id"] == job_id)
        assert "nodes" not in summary and summary["status"] == "complete"
        assert summary["file_specified"] is True and "file" not in summary


async def test_offline_node_quorum_failed_at_once(server: ServerProcess) -> None:
    ghost = node_name("ghost")
    job_id = await start_job(server, "uptime", [ghost])
    job = await get_job(server, job_id)
    # no node can vote: the job is final right after the POST
    assert job["status"] == "quorum_failed"
    assert job["nodes"] == {"unavailable": [ghost]}
    response, events = await read_sse(server, f"job_status_feed/{job_id}")
    assert response.status_code == 200
    assert compact(events) == [
        ("start",),
        ("quorum_vote", ghost, "down"),
        ("rehab", ghost),
        ("job_complete", "quorum_failed"),
    ]


async def test_nack_commit_fails_quorum(server: ServerProcess) -> None:
    async with ready_peers(server, 1, "nack") as (peer,):
        job_id = await start_job(server, "uptime", [peer.node])
        await peer.expect("commit", skip=("ack",))
        await peer.send("nack_commit", job_id=job_id)
        job = await wait_job(server, job_id)
        assert job["status"] == "quorum_failed"
        assert job["nodes"] == {"nacked": [peer.node]}
        _, events = await read_sse(server, f"jobs_status_feed/{job_id}")
        assert compact(events) == [
            ("start",),
            ("quorum_vote", peer.node, "failure"),
            ("job_complete", "quorum_failed"),
        ]


async def test_quorum_one_of_two_and_failure(server: ServerProcess) -> None:
    async with ready_peers(server, 2, "q1") as (a, b):
        job_id = await start_job(server, "false", [a.node, b.node], quorum=1)
        await a.expect("commit", skip=("ack",))
        await a.send("nack_commit", job_id=job_id)
        await b.expect("commit", skip=("ack",))
        await b.send("ack_commit", job_id=job_id)
        await b.expect("run")
        await b.send("ack_run", job_id=job_id)
        await b.send("failed", job_id=job_id, exit_status=3, signal=None)
        job = await wait_job(server, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {"nacked": [a.node], "failed": [b.node]}
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        got = compact(events)
        assert sorted(got[1:3]) == sorted(
            [("quorum_vote", a.node, "failure"), ("quorum_vote", b.node, "success")]
        )
        assert got[3:] == [
            ("quorum_succeeded",),
            ("run_start", b.node),
            ("run_complete", b.node, "failure"),
            ("job_complete", "complete"),
        ]
        nodes = {
            n["node_name"]: n for n in (await api(server, "GET", f"jobs/{job_id}/nodes")).json()
        }
        assert nodes[b.node]["exit_status"] == 3
        assert nodes[a.node]["started_at"] is None and nodes[a.node]["exit_status"] is None


async def test_run_timeout_and_nack_run(server: ServerProcess) -> None:
    async with ready_peers(server, 2, "rt") as (a, b):
        # a must get its nack_run in before the run timer fires, even on a loaded machine
        job_id = await start_job(server, "sleep 99", [a.node, b.node], run_timeout=5)
        for peer in (a, b):
            await peer.expect("commit", skip=("ack",))
            await peer.send("ack_commit", job_id=job_id)
        await a.expect("run")
        await a.send("nack_run", job_id=job_id)
        await b.expect("run")  # b never acknowledges the run
        job = await wait_job(server, job_id)
        assert job["status"] == "timed_out"
        assert job["nodes"] == {"failed": [a.node], "timed_out": [b.node]}
        await b.expect("abort")  # the silent rehab of a timed-out node
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        assert compact(events)[3:] == [
            ("quorum_succeeded",),
            ("rehab", a.node),
            ("run_complete", a.node, "run_nacked"),
            ("job_complete", "timed_out"),
        ]


async def test_node_down_while_running_crashes_node(server: ServerProcess) -> None:
    async with ready_peers(server, 1, "down") as (peer,):
        job_id = await start_job(server, "sleep 99", [peer.node])
        await peer.expect("commit", skip=("ack",))
        await peer.send("ack_commit", job_id=job_id)
        await peer.expect("run")
        await peer.send("ack_run", job_id=job_id)
        # the agent restarts: a new client incarnation ends the old node state
        await peer.reconnect(new_incarnation=True)
        job = await wait_job(server, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {"crashed": [peer.node]}
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        assert compact(events)[-4:] == [
            ("run_start", peer.node),
            ("rehab", peer.node),
            ("run_complete", peer.node, "crashed"),
            ("job_complete", "complete"),
        ]


async def test_unexpected_message_while_voting_and_unknown_job(server: ServerProcess) -> None:
    async with ready_peers(server, 2, "odd") as (a, b):
        job_id = await start_job(server, "x", [a.node, b.node], quorum=2)
        await a.expect("commit", skip=("ack",))
        await a.send("ack_commit", job_id=job_id)
        await a.send("nack_run", job_id=job_id)  # not a voting message → unavailable + rehab
        await wait_until(lambda: _has(server, job_id, "unavailable", a.node), what="a out")
        await b.expect("commit", skip=("ack",))
        await b.send("ack_commit", job_id=job_id)
        job = await wait_job(server, job_id)
        assert job["status"] == "quorum_failed"
        assert job["nodes"] == {"unavailable": [a.node], "was_ready": [b.node]}
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        assert compact(events) == [
            ("start",),
            ("quorum_vote", a.node, "success"),
            ("rehab", a.node),
            ("quorum_vote", b.node, "success"),
            ("job_complete", "quorum_failed"),
        ]
        # a job message naming an unknown job only rehabs the sender
        a.drain()
        await a.send("ack_commit", job_id="f" * 32)
        await a.expect("abort", skip=("ack",))


# ---- abort ---------------------------------------------------------------------------


async def test_abort_voting_job(server: ServerProcess) -> None:
    async with ready_peers(server, 2, "abv") as (a, b), trio.open_nursery() as nursery:
        org_feed = SseReader()
        await nursery.start(org_feed.run, server, "job_status_feed")
        job_id = await start_job(server, "x", [a.node, b.node])
        await a.expect("commit", skip=("ack",))
        await a.send("nack_commit", job_id=job_id)
        await wait_until(lambda: _has(server, job_id, "nacked", a.node), what="a nacked")
        await b.expect("commit", skip=("ack",))
        response = await api(server, "POST", f"jobs/{job_id}/abort")
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "aborted"
        assert job["nodes"] == {"nacked": [a.node], "aborted": [b.node]}
        await b.expect("abort")
        again = await api(server, "POST", f"jobs/{job_id}/abort")
        assert again.status_code == 409
        assert again.json() == {
            "error": [f"job '{job_id}' has already finished with status 'aborted'"]
        }
        missing = await api(server, "POST", f"jobs/{'0' * 32}/abort")
        assert missing.status_code == 404
        assert missing.json() == {"error": [f"job '{'0' * 32}' not found"]}
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        assert compact(events) == [
            ("start",),
            ("quorum_vote", a.node, "failure"),
            ("job_complete", "aborted"),
        ]
        done = await org_feed.wait_event("job_complete")
        assert done["data"]["job"] == job_id and done["data"]["status"] == "aborted"
        org_feed.scope.cancel()


async def test_abort_running_job(server: ServerProcess) -> None:
    async with ready_peers(server, 2, "abr") as (a, b), trio.open_nursery() as nursery:
        job_id = await start_job(server, "sleep 99", [a.node, b.node])
        feed = SseReader()
        await nursery.start(feed.run, server, f"job_status_feed/{job_id}")
        for peer in (a, b):
            await peer.expect("commit", skip=("ack",))
            await peer.send("ack_commit", job_id=job_id)
        for peer in (a, b):
            await peer.expect("run")
            await peer.send("ack_run", job_id=job_id)
        await feed.wait_event("run_start")
        await wait_until(lambda: _ran(server, job_id, 2), what="both running")
        response = await api(server, "POST", f"jobs/{job_id}/abort", body=b"")
        assert response.status_code == 200
        assert response.json()["nodes"] == {"aborted": sorted([a.node, b.node])}
        for peer in (a, b):
            await peer.expect("abort")
        await feed.wait_end()
        assert compact(feed.events)[-1] == ("job_complete", "aborted")
        assert sorted(compact(feed.events)[-3:-1]) == sorted(
            [("run_start", a.node), ("run_start", b.node)]
        )
        # the agent's answer naming the job is ignored by the finished job
        await a.send("aborted", job_id=job_id)
        nodes = (await api(server, "GET", f"jobs/{job_id}/nodes")).json()
        assert [n["status"] for n in nodes] == ["aborted", "aborted"]
        assert all(n["finished_at"] for n in nodes)


async def _has(srv: ServerProcess, job_id: str, status: str, node: str) -> bool:
    job = await get_job(srv, job_id)
    return node in job["nodes"].get(status, [])


async def _ran(srv: ServerProcess, job_id: str, n: int) -> bool:
    job = await get_job(srv, job_id)
    return len(job["nodes"].get("running", [])) == n


# ---- restart -------------------------------------------------------------------------


async def test_restart_mid_job_marks_crashed(server_factory) -> None:
    srv = await trio.to_thread.run_sync(server_factory)
    async with ready_peers(srv, 2, "rs") as (a, b):
        job_id = await start_job(srv, "sleep 99", [a.node, b.node], quorum=1)
        await a.expect("commit", skip=("ack",))
        await a.send("ack_commit", job_id=job_id)
        await b.expect("commit", skip=("ack",))
        await b.send("ack_commit", job_id=job_id)
        await a.expect("run")
        await a.send("ack_run", job_id=job_id)
        await wait_until(lambda: _ran(srv, job_id, 1), what="a running")
        # a hard kill: nothing is written on the way out; the next start repairs it
        await trio.to_thread.run_sync(srv.stop, 9)
        await trio.to_thread.run_sync(srv.start)
        job = await get_job(srv, job_id)
        assert job["status"] == "crashed"
        assert job["nodes"] == {"crashed": sorted([a.node, b.node])}
        response, events = await read_sse(srv, f"job_status_feed/{job_id}")
        assert response.status_code == 200
        assert [e["event"] for e in events] == ["summary"]
        assert events[0]["id"] == "job-1"
        summary = dict(events[0]["data"])
        assert SSE_TIME.fullmatch(summary.pop("timestamp"))
        assert summary == job


async def test_graceful_shutdown_crashes_live_jobs(server_factory) -> None:
    srv = await trio.to_thread.run_sync(server_factory)
    async with ready_peers(srv, 1, "gs") as (peer,), trio.open_nursery() as nursery:
        job_id = await start_job(srv, "sleep 99", [peer.node])
        feed = SseReader()
        await nursery.start(feed.run, srv, f"job_status_feed/{job_id}")
        await peer.expect("commit", skip=("ack",))
        await peer.send("ack_commit", job_id=job_id)
        await peer.expect("run")
        await peer.send("ack_run", job_id=job_id)
        await feed.wait_event("run_start")
        code = await trio.to_thread.run_sync(srv.stop)
        assert code == 0
        await feed.wait_end()
        assert compact(feed.events)[-1] == ("job_complete", "crashed")
        await trio.to_thread.run_sync(srv.start)
        job = await get_job(srv, job_id)
        assert job["status"] == "crashed" and job["nodes"] == {"crashed": [peer.node]}


# ---- feeds ---------------------------------------------------------------------------


async def test_feed_replay_and_summary_after_grace(server: ServerProcess) -> None:
    async with ready_peers(server, 1, "rp") as (peer,):
        job_id = await start_job(server, "true", [peer.node])
        await run_to_success(peer, job_id)
        job = await wait_job(server, job_id)
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        assert len(events) == 6
        _, after = await read_sse(
            server, f"job_status_feed/{job_id}", headers={"Last-Event-ID": "job-3"}
        )
        assert after == events[3:]
        _, unknown = await read_sse(
            server, f"job_status_feed/{job_id}", headers={"Last-Event-ID": "job-77"}
        )
        assert unknown == events
        _, none_left = await read_sse(
            server, f"job_status_feed/{job_id}", headers={"Last-Event-ID": "job-6"}
        )
        assert none_left == []

        async def gone() -> bool:
            response = await api(server, "GET", "/pushy/_status")
            return job_id not in response.json()["job_processes"]

        await wait_until(gone, what="grace period end")
        response, summary = await read_sse(
            server, f"job_status_feed/{job_id}", headers={"Last-Event-ID": "job-3"}
        )
        assert response.status_code == 200
        assert response.text.endswith("\n\n")
        assert [(e["event"], e["id"]) for e in summary] == [("summary", "job-1")]
        data = dict(summary[0]["data"])
        data.pop("timestamp")
        assert data == job

        missing = await api(
            server, "GET", f"job_status_feed/{'e' * 32}", headers={"Accept": "text/event-stream"}
        )
        assert missing.status_code == 404
        assert missing.json() == {"error": [f"job '{'e' * 32}' not found"]}
        wrong = await api(server, "GET", f"job_status_feed/{job_id}")
        assert wrong.status_code == 406


async def test_org_feed_history(server: ServerProcess) -> None:
    async with trio.open_nursery() as nursery:
        live = SseReader()
        await nursery.start(live.run, server, "jobs_status_feed")
        ghost = node_name("orgfeed")
        job_id = await start_job(server, "x", [ghost])
        done = await live.wait_event("job_complete")
        start = await live.wait_event("start")
        assert start["data"]["job"] == job_id and start["data"]["node_count"] == 1
        assert done["data"] == {
            "timestamp": done["data"]["timestamp"],
            "job": job_id,
            "status": "quorum_failed",
        }
        assert re.fullmatch(r"org-\d+", start["id"])
        live.scope.cancel()

    async def replay(last: str, want: set[str]) -> list[dict[str, Any]]:
        """The org feed from `last` on, read until every id in `want` arrived (it never ends)."""
        reader = SseReader()
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run, server, "job_status_feed", {"Last-Event-ID": last})
            with trio.move_on_after(20):
                while not want <= {e["id"] for e in reader.events}:
                    await trio.sleep(0.05)
            reader.scope.cancel()
        return reader.events

    after_start = await replay(start["id"], {done["id"]})
    assert [e["id"] for e in after_start][:1] == [done["id"]]
    history = await replay("bogus", {"start_id", start["id"], done["id"]})
    assert history[0]["event"] == "start_of_history" and history[0]["id"] == "start_id"
    assert list(history[0]["data"]) == ["timestamp"]
    ids = [e["id"] for e in history[1:]]
    assert start["id"] in ids and done["id"] in ids
    assert_timestamps(history)


# ---- output --------------------------------------------------------------------------


async def test_output_round_trip_binary_and_live_stream(server: ServerProcess) -> None:
    blob = bytes(range(256)) * 300 + "✓ done\n".encode()
    async with ready_peers(server, 1, "out") as (peer,), trio.open_nursery() as nursery:
        job_id = await start_job(server, "cat", [peer.node], capture_output=True)
        path = f"jobs/{job_id}/output/{peer.node}/stdout"
        live = SseReader()
        await nursery.start(live.run, server, path)
        await peer.expect("commit", skip=("ack",))
        await peer.send("ack_commit", job_id=job_id)
        await peer.expect("run")
        await peer.send("ack_run", job_id=job_id)
        # nothing arrived yet: plain GET says 404
        early = await api(server, "GET", path, headers={"Accept": "application/octet-stream"})
        assert early.status_code == 404
        assert early.json() == {"error": [f"no output for node '{peer.node}' in job '{job_id}'"]}
        step = 30000
        for offset in range(0, len(blob), step):
            await peer.send(
                "output",
                job_id=job_id,
                channel="stdout",
                offset=offset,
                data=blob[offset : offset + step],
            )
        await peer.send("output", job_id=job_id, channel="stderr", offset=0, data=b"warn\n")

        # plain GET while the run goes on returns what arrived so far
        async def got_all() -> bool:
            r = await api(server, "GET", path, headers={"Accept": "*/*"})
            return r.status_code == 200 and r.content == blob

        await wait_until(got_all, what="stored output")
        await peer.send(
            "succeeded",
            job_id=job_id,
            exit_status=0,
            signal=None,
            stdout_bytes=len(blob),
            stderr_bytes=5,
        )
        await live.wait_end()
        assert live.status == 200
        outputs = [e for e in live.events if e["event"] == "output"]
        rebuilt = b""
        for event in outputs:
            data = event["data"]
            assert data["offset"] == len(rebuilt)
            piece = (
                data["data"].encode()
                if data["encoding"] == "text"
                else base64.b64decode(data["data"])
            )
            rebuilt += piece
            assert event["id"] == str(len(rebuilt))
        assert rebuilt == blob
        end = live.events[-1]
        assert end["event"] == "end" and end["id"] == "end"
        assert end["data"] == {
            "timestamp": end["data"]["timestamp"],
            "status": "succeeded",
            "exit_status": 0,
            "signal": None,
            "bytes": len(blob),
            "omitted_bytes": 0,
        }
        assert_timestamps(live.events)

        plain = await api(server, "GET", path, headers={"Accept": "application/octet-stream"})
        assert plain.status_code == 200
        assert plain.headers["content-type"] == "application/octet-stream"
        assert plain.content == blob
        err = await api(
            server, "GET", f"jobs/{job_id}/output/{peer.node}/stderr", headers={"Accept": "*/*"}
        )
        assert err.content == b"warn\n"

        # resume from an offset: only the rest, then end
        resumed, events = await read_sse(server, path, headers={"Last-Event-ID": "76800"})
        assert resumed.status_code == 200
        assert events[0]["data"]["offset"] == 76800
        assert [e["event"] for e in events][-1] == "end"

        nodes = (await api(server, "GET", f"jobs/{job_id}/nodes")).json()
        assert nodes[0]["stdout_bytes"] == len(blob) and nodes[0]["stderr_bytes"] == 5
        assert nodes[0]["truncated"] is False

        wrong = await api(server, "GET", path, headers={"Accept": "application/json"})
        assert wrong.status_code == 406
        assert wrong.json() == {
            "error": [
                "not acceptable; this resource produces application/octet-stream, text/event-stream"
            ]
        }


async def test_output_gap_marker_and_cap(server: ServerProcess) -> None:
    cap = 1_048_576
    async with ready_peers(server, 1, "cap") as (peer,):
        job_id = await start_job(server, "yes", [peer.node], capture_output=True)
        await peer.expect("commit", skip=("ack",))
        await peer.send("ack_commit", job_id=job_id)
        await peer.expect("run")
        await peer.send("ack_run", job_id=job_id)
        # stderr: a head, then the agent's tail after an omission
        await peer.send("output", job_id=job_id, channel="stderr", offset=0, data=b"head")
        await peer.send(
            "output",
            job_id=job_id,
            channel="stderr",
            offset=1004,
            data=b"tail\n",
            omitted_bytes=1000,
        )
        # stdout: more than the server's cap
        chunk = b"y\n" * 16384
        total = 0
        while total <= cap:
            await peer.send("output", job_id=job_id, channel="stdout", offset=total, data=chunk)
            total += len(chunk)
        await peer.send(
            "failed",
            job_id=job_id,
            exit_status=None,
            signal="SIGTERM",
            stdout_bytes=total,
            stderr_bytes=1009,
        )
        await wait_job(server, job_id)
        base = f"jobs/{job_id}/output/{peer.node}"

        async def closed_stdout() -> httpx.Response | None:
            r = await api(server, "GET", f"{base}/stdout", headers={"Accept": "*/*"})
            return r if r.status_code == 200 and b"omitted" in r.content else None

        stdout = (await wait_until(closed_stdout, what="cap marker")).content
        marker = f"[pushjobs: {total - cap} bytes omitted]\n".encode()
        assert stdout == (chunk * (total // len(chunk)))[:cap] + marker
        stderr = await api(server, "GET", f"{base}/stderr", headers={"Accept": "*/*"})
        assert stderr.content == b"head\n[pushjobs: 1000 bytes omitted]\ntail\n"
        nodes = (await api(server, "GET", f"jobs/{job_id}/nodes")).json()
        assert nodes[0]["truncated"] is True
        assert nodes[0]["stdout_bytes"] == total and nodes[0]["stderr_bytes"] == 1009
        assert nodes[0]["signal"] == "SIGTERM" and nodes[0]["exit_status"] is None


async def test_output_404s_and_v2_results(server: ServerProcess) -> None:
    async with ready_peers(server, 1, "v2", version="2.0") as (peer,):
        job_id = await start_job(server, "echo", [peer.node])  # no capture
        base = f"jobs/{job_id}/output/{peer.node}"
        none_yet = await api(server, "GET", f"{base}/stdout", headers={"Accept": "*/*"})
        assert none_yet.status_code == 404
        # live stream: 404 without capture
        stream = await api(server, "GET", f"{base}/stdout", headers={"Accept": "text/event-stream"})
        assert stream.status_code == 404
        other = await api(
            server, "GET", f"jobs/{job_id}/output/nobody/stdout", headers={"Accept": "*/*"}
        )
        assert other.status_code == 404
        assert other.json() == {"error": [f"no output for node 'nobody' in job '{job_id}'"]}
        unknown = await api(
            server, "GET", f"jobs/{'a' * 32}/output/x/stdout", headers={"Accept": "*/*"}
        )
        assert unknown.json() == {"error": [f"job '{'a' * 32}' not found"]}

        commit = await peer.expect("commit", skip=("ack",))
        assert commit.version == "2.0" and "run_timeout" not in commit.fields
        await peer.send("ack_commit", job_id=job_id)
        await peer.expect("run")
        await peer.send("ack_run", job_id=job_id)
        # a Ruby client reports its output in the result: stored even without capture
        await peer.send("succeeded", job_id=job_id, stdout="hello ✓\n")
        job = await wait_job(server, job_id)
        assert job["status"] == "complete" and "capture_output" not in job
        out = await api(server, "GET", f"{base}/stdout", headers={"Accept": "*/*"})
        assert out.status_code == 200 and out.content == "hello ✓\n".encode()
        err = await api(server, "GET", f"{base}/stderr", headers={"Accept": "*/*"})
        assert err.status_code == 200 and err.content == b""


async def test_live_stream_of_node_that_never_ran(server: ServerProcess) -> None:
    async with ready_peers(server, 1, "nr") as (peer,):
        job_id = await start_job(server, "x", [peer.node], capture_output=True)
        await peer.expect("commit", skip=("ack",))
        await peer.send("nack_commit", job_id=job_id)
        await wait_job(server, job_id)
        response, events = await read_sse(server, f"jobs/{job_id}/output/{peer.node}/stdout")
        assert response.status_code == 200
        assert [e["event"] for e in events] == ["end"]
        assert events[0]["data"]["status"] == "nacked" and events[0]["data"]["bytes"] == 0


# ---- POST / GET jobs -----------------------------------------------------------------


async def test_create_job_errors_and_location(server: ServerProcess) -> None:
    body = json.dumps({"command": "x", "nodes": [node_name("loc")]}).encode()
    no_type = await api(server, "POST", "jobs", body=body)
    assert no_type.status_code == 415
    assert no_type.json() == {"error": ["Content-Type must be application/json"]}
    invalid = await api(
        server,
        "POST",
        "jobs",
        body=b'{"command": 1}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert invalid.status_code == 400
    assert invalid.json() == {"error": "invalid command supplied"}
    dup_env = await api(
        server,
        "POST",
        "jobs",
        body=b'{"command":"x","nodes":["a"],"env":{"A":"1","A":"2"}}',
        headers={"Content-Type": "application/json"},
    )
    assert dup_env.json() == {"error": "invalid environment value (duplicate key)"}

    created = await api(
        server,
        "POST",
        "jobs",
        body=body,
        headers={
            "Content-Type": "application/json",
            "Host": "push.example.com:80",
            "X-Forwarded-Proto": "https",
        },
    )
    assert created.status_code == 201
    uri = created.json()["uri"]
    assert list(created.json()) == ["uri"]
    assert re.fullmatch(
        rf"https://push\.example\.com/organizations/{server.org}/pushy/jobs/[0-9a-f]{{32}}", uri
    )
    assert created.headers["location"] == uri
    plain = await api(
        server,
        "POST",
        "jobs",
        body=body,
        headers={"Content-Type": "application/json", "Host": "push.example.com:8443"},
    )
    assert plain.json()["uri"].startswith("http://push.example.com:8443/organizations/")


async def test_list_jobs_filters(server: ServerProcess) -> None:
    ids = [await start_job(server, f"list {i}", [node_name("list")]) for i in range(3)]
    listing = (await api(server, "GET", "jobs")).json()
    got = [j["id"] for j in listing if j["id"] in ids]
    assert sorted(got) == sorted(ids)
    keys = set(listing[0])
    assert {"id", "command", "status", "run_timeout", "created_at", "updated_at"} <= keys
    assert "nodes" not in keys
    failed = (await api(server, "GET", "jobs?status=quorum_failed,aborted&limit=2")).json()
    assert len(failed) == 2 and all(j["status"] == "quorum_failed" for j in failed)
    offset = (await api(server, "GET", "jobs?status=quorum_failed&offset=1&limit=1")).json()
    assert offset[0]["id"] == listing_ids(await api(server, "GET", "jobs?status=quorum_failed"))[1]
    bad = await api(server, "GET", "jobs?status=voting,bogus")
    assert bad.status_code == 400
    assert bad.json() == {"error": ["invalid status filter 'voting,bogus'"]}
    bad = await api(server, "GET", "jobs?limit=0")
    assert bad.json() == {"error": ["invalid limit '0' (expected an integer from 1 to 1000)"]}
    bad = await api(server, "GET", "jobs?offset=-1")
    assert bad.json() == {"error": ["invalid offset '-1' (expected an integer >= 0)"]}
    missing = await api(server, "GET", f"jobs/{'b' * 32}")
    assert missing.status_code == 404
    assert missing.json() == {"error": [f"job '{'b' * 32}' not found"]}


def listing_ids(response: httpx.Response) -> list[str]:
    return [j["id"] for j in response.json()]


async def test_voting_timeout_and_keepalive(server_factory) -> None:
    srv = await trio.to_thread.run_sync(
        # b never votes, so the job waits the whole voting timeout; it must still leave a (on a
        # loaded machine) ample time to vote first
        lambda: server_factory(timing={"voting_timeout": 5, "keep_alive_time": 0.3})
    )
    async with ready_peers(srv, 2, "vt") as (a, b), trio.open_nursery() as nursery:
        job_id = await start_job(srv, "x", [a.node, b.node], quorum=1)
        feed = SseReader()
        await nursery.start(feed.run, srv, f"job_status_feed/{job_id}")
        await a.expect("commit", skip=("ack",))
        await a.send("ack_commit", job_id=job_id)
        await b.expect("commit", skip=("ack",))  # b never answers
        await feed.wait_event("quorum_succeeded", timeout=30)
        # silence while voting is filled with keep-alive comments
        assert ":keepalive\n" in feed.text
        assert compact(feed.events) == [
            ("start",),
            ("quorum_vote", a.node, "success"),
            ("quorum_vote", b.node, "voting_timeout"),
            ("quorum_succeeded",),
        ]
        await b.expect("abort")  # silent rehab of the node that never voted
        await a.expect("run")
        await a.send("ack_run", job_id=job_id)
        await a.send("succeeded", job_id=job_id, exit_status=0, signal=None)
        await feed.wait_end()
        assert compact(feed.events)[4:] == [
            ("run_start", a.node),
            ("run_complete", a.node, "success"),
            ("job_complete", "complete"),
        ]
        job = await wait_job(srv, job_id)
        assert job["nodes"] == {"succeeded": [a.node], "unavailable": [b.node]}


async def test_tail_after_timeout_kept_until_output_close_timeout(server: ServerProcess) -> None:
    async with ready_peers(server, 1, "tail") as (peer,):
        job_id = await start_job(server, "x", [peer.node], capture_output=True, run_timeout=1)
        await peer.expect("commit", skip=("ack",))
        await peer.send("ack_commit", job_id=job_id)
        await peer.expect("run")
        await peer.send("ack_run", job_id=job_id)
        await peer.send("output", job_id=job_id, channel="stdout", offset=0, data=b"before ")
        job = await wait_job(server, job_id)
        assert job["status"] == "timed_out"
        # the agent is killed by the abort and flushes the rest of its output
        await peer.send("output", job_id=job_id, channel="stdout", offset=7, data=b"after\n")
        # no final message: the record closes output_close_timeout after the node went final
        response, events = await read_sse(
            server, f"jobs/{job_id}/output/{peer.node}/stdout", timeout=20
        )
        assert response.status_code == 200
        text = "".join(e["data"]["data"] for e in events if e["event"] == "output")
        assert text == "before after\n"
        assert events[-1]["event"] == "end"
        assert events[-1]["data"]["status"] == "timed_out"
        # once closed, later chunks are dropped
        await peer.send("output", job_id=job_id, channel="stdout", offset=13, data=b"late")

        async def stored() -> bytes | None:
            r = await api(
                server, "GET", f"jobs/{job_id}/output/{peer.node}/stdout", headers={"Accept": "*/*"}
            )
            return r.content if r.status_code == 200 else None

        assert await wait_until(stored, what="stored output") == b"before after\n"


async def test_jobs_run_while_an_idle_fleet_is_read_in_batches(server_factory) -> None:
    """`zeromq.idle_read_interval`: after a second without commands the command socket is read
    in batches (here a tenth of the 0.5 s heartbeat interval, the most it may use). Nodes stay
    available, and a job started then is read eagerly and completes."""
    srv = await trio.to_thread.run_sync(lambda: server_factory(zeromq={"idle_read_interval": 1.0}))
    async with ready_peers(srv, 3, "idle") as peers:
        await trio.sleep(3)  # heartbeats only: the reader pauses between batches
        for peer in peers:
            await peer.wait_node_state(availability="available")
        job_id = await start_job(srv, "true", [p.node for p in peers])
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(run_to_success, peer, job_id)
        job = await wait_job(srv, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {"succeeded": sorted(p.node for p in peers)}
        for peer in peers:
            await peer.wait_node_state(availability="available")

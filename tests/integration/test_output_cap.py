"""The output cap holds against a hostile node (security issue 15, F3).

A real server and the scripted protocol peer: 1-byte chunks separated by 1-byte gaps used to
add a marker line per chunk that the cap did not count, so the stored channel grew without
bound. Now markers count and the channel stays within `max_output_bytes` + one marker line.
"""

from __future__ import annotations

import os

import trio

from tests.support.jobs import post_job
from tests.support.peer import open_peer
from tests.support.procs import memory_kib
from tests.support.server import ServerProcess
from tests.support.waits import wait_for

CAP = 4096
CHUNKS = 50_000


async def test_gap_markers_count_towards_the_cap(server_factory) -> None:
    srv: ServerProcess = server_factory(limits={"max_output_bytes": CAP})
    name, key = await trio.to_thread.run_sync(srv.make_client, f"capnode-{os.getpid()}")
    assert srv.proc is not None
    async with open_peer(srv.http_url, srv.org, name, key) as peer:
        await peer.expect("abort")
        await peer.send("aborted", job_id=None)
        peer.start_heartbeats()
        await trio.to_thread.run_sync(srv.wait_node, name)
        job_id = await trio.to_thread.run_sync(
            lambda: post_job(srv, "yes", [name], capture_output=True)
        )
        commit = await peer.expect("commit", skip=("ack", "abort"))
        assert commit.job_id == job_id
        await peer.send("ack_commit", job_id=job_id)
        await peer.expect("run")
        await peer.send("ack_run", job_id=job_id)
        rss_before = memory_kib(srv.proc.pid) * 1024
        for i in range(CHUNKS):
            await peer.send("output", job_id=job_id, channel="stdout", offset=2 * i, data=b"x")
        await peer.send(
            "succeeded",
            job_id=job_id,
            exit_status=0,
            signal=None,
            stdout_bytes=2 * CHUNKS,
            stderr_bytes=0,
        )
        await trio.to_thread.run_sync(lambda: srv.wait_job(job_id, timeout=120))
        rss_after = memory_kib(srv.proc.pid) * 1024
        path = f"jobs/{job_id}/output/{name}/stdout"

        def closed() -> bytes | None:
            response = srv.get(path, headers={"Accept": "*/*"})
            assert response.status_code == 200, response.text
            nodes = srv.get(f"jobs/{job_id}/nodes").json()
            return response.content if nodes[0]["stdout_bytes"] == 2 * CHUNKS else None

        stored = await trio.to_thread.run_sync(lambda: wait_for(closed, 60, what="closed output"))
        assert peer.errors == []
    assert len(stored) <= CAP + 64, f"{len(stored)} bytes stored, cap {CAP}"
    assert stored.endswith(b" bytes omitted]\n")
    assert stored.startswith(b"x\n[pushjobs: 1 bytes omitted]\nx")
    # a later read comes from the database, not the live record
    await trio.to_thread.run_sync(srv.restart)
    again = await trio.to_thread.run_sync(lambda: srv.get(path, headers={"Accept": "*/*"}))
    assert again.status_code == 200 and again.content == stored
    assert rss_after - rss_before < 64 * 1024 * 1024, (rss_before, rss_after)

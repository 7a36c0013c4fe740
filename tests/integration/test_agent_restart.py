"""An agent that restarts (new client incarnation) while a job starts or votes.

A new client incarnation ends the old node state and with it the node's part in every live
job: the job counts the node down (`unavailable` while voting) and never sends that job's
`commit` or `run` to the new incarnation (lifecycle.md §2.4, §4.3, §5.1). Real server process,
scripted peers and real agents, real sockets.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from pushjobs.server.config import DATABASE_FILE
from tests.support.agents import AgentProcess
from tests.support.api import server_status
from tests.support.jobs import post_job, start_job, wait_job
from tests.support.peer import open_peer
from tests.support.peers import ready_peers
from tests.support.server import ServerProcess
from tests.support.sse import compact, read_sse


@contextmanager
def database_write_locked(srv: ServerProcess) -> Iterator[None]:
    """Hold the server database's write lock, as a slow disk would: storing a new job waits
    until the block ends (the server's busy timeout is 10 s). Reads are not blocked."""
    conn = sqlite3.connect(str(srv.data_dir / DATABASE_FILE), timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


async def live_job_ids(srv: ServerProcess) -> list[str]:
    """`/pushy/_status` `job_processes` (a path that never touches the database)."""
    return (await server_status(srv))["job_processes"]


async def test_new_incarnation_while_the_job_is_stored_gets_no_commit(
    server: ServerProcess,
) -> None:
    async with ready_peers(server, 2, "store") as (peer, keeper):
        before = set(await live_job_ids(server))
        job_ids: list[str] = []

        async def post() -> None:
            job_ids.append(await start_job(server, "x", [peer.node, keeper.node], quorum=1))

        async with trio.open_nursery() as nursery:
            with database_write_locked(server):
                nursery.start_soon(post)
                with trio.fail_after(20):  # the job exists and is being stored
                    while not set(await live_job_ids(server)) - before:
                        await trio.sleep(0.02)
                # the agent restarts meanwhile: its new incarnation is greeted and goes idle
                peer.drain()
                await peer.reconnect(new_incarnation=True)
                await peer.expect("abort", skip=("ack",))
                await trio.sleep(1.5)  # the peer's `aborted` reached the server: idle
        (job_id,) = job_ids
        await keeper.expect("commit", skip=("ack",))
        await peer.expect_nothing(1.0)  # neither this job's commit nor an abort
        await keeper.send("ack_commit", job_id=job_id)
        await keeper.expect("run")
        await keeper.send("ack_run", job_id=job_id)
        await keeper.send("succeeded", job_id=job_id, exit_status=0)
        job = await wait_job(server, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {"unavailable": [peer.node], "succeeded": [keeper.node]}
        assert [m.type for m in peer.drain()] == []
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        assert compact(events)[:3] == [
            ("start",),
            ("quorum_vote", peer.node, "down"),
            ("rehab", peer.node),
        ]
        await peer.wait_node_state(availability="available")


async def test_new_incarnation_while_voting_is_counted_out(server: ServerProcess) -> None:
    async with ready_peers(server, 3, "vote") as (silent, voted, keeper):
        job_id = await start_job(server, "x", [silent.node, voted.node, keeper.node], quorum=1)
        for peer in (silent, voted, keeper):
            await peer.expect("commit", skip=("ack",))
        await voted.send("ack_commit", job_id=job_id)
        # both restart while the job votes: one never answered, one voted in its old life
        for peer in (silent, voted):
            await peer.reconnect(new_incarnation=True)
            await peer.expect("abort", skip=("ack",))
        await keeper.send("ack_commit", job_id=job_id)
        await keeper.expect("run")
        await keeper.send("ack_run", job_id=job_id)
        await keeper.send("succeeded", job_id=job_id, exit_status=0)
        job = await wait_job(server, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {
            "unavailable": sorted([silent.node, voted.node]),
            "succeeded": [keeper.node],
        }
        for peer in (silent, voted):
            assert [m.type for m in peer.drain()] == []  # no commit, no run
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        votes = {e[1]: e[2] for e in compact(events) if e[0] == "quorum_vote"}
        assert votes == {voted.node: "down", silent.node: "down", keeper.node: "success"}


def _restart(agent: AgentProcess) -> None:
    """What `systemctl restart pushjobs-agent` does: SIGTERM, wait for the exit, start."""
    agent.stop()
    agent.start(wait=False)


async def test_real_agent_restarted_right_after_the_post_never_runs_the_job(
    server: ServerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    agent = AgentProcess(
        server, tmp_path / "agent", "restart-agent", whitelist=f'"mark" = "touch {marker}"\n'
    )
    _, keeper_key = await trio.to_thread.run_sync(server.make_client, "restart-keeper")
    await trio.to_thread.run_sync(agent.start)
    try:
        async with open_peer(
            server.http_url, server.org, "restart-keeper", keeper_key, answer_aborts=True
        ) as keeper:
            await keeper.expect("abort")
            keeper.start_heartbeats()
            await keeper.wait_node_state(availability="available")
            # the keeper holds the voting open; the agent restarts as soon as it has the job
            job_id = await trio.to_thread.run_sync(
                lambda: post_job(server, "mark", [agent.name, keeper.node], quorum=1)
            )
            await trio.to_thread.run_sync(_restart, agent)
            await keeper.expect("commit", skip=("ack",))
            await trio.to_thread.run_sync(agent.wait_available)
            await trio.sleep(1.0)
            await keeper.send("ack_commit", job_id=job_id)
            await keeper.expect("run")
            await keeper.send("nack_run", job_id=job_id)
            job = await wait_job(server, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {"unavailable": [agent.name], "failed": ["restart-keeper"]}
        await trio.sleep(0.5)
        assert not marker.exists()
        new_life = agent.log_text().rsplit("client key ", 1)[-1]
        assert f"job {job_id}" not in new_life  # the new incarnation never heard of the job
    finally:
        agent.stop()

"""Misbehaving nodes, concurrency and crashes leave a truthful record.

Real server processes; scripted protocol peers (tests.support.peer) for nodes that misbehave on
purpose, real agent processes (tests.support.agents) for concurrency, server SIGKILL and a frozen
agent. Covers wire-protocol.md §16–§17, lifecycle.md §2–§9 and agent.md §8, §14 at their edges.
"""

from __future__ import annotations

import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import trio

from tests.support.agents import AgentProcess
from tests.support.api import api
from tests.support.clients import node_name
from tests.support.jobs import get_job, node_details, output, post_job, start_job, wait_job
from tests.support.peer import PeerError, open_peer
from tests.support.peers import ready_peers
from tests.support.ports import free_ports
from tests.support.procs import kill_all, pids_alive, read_pids
from tests.support.server import FINAL_JOB_STATUSES, ServerProcess
from tests.support.sse import compact, parse_sse, read_sse
from tests.support.waits import wait_for, wait_until

FINAL_NODE = {
    "succeeded",
    "failed",
    "nacked",
    "unavailable",
    "was_ready",
    "crashed",
    "timed_out",
    "aborted",
}


# ---- helpers -----------------------------------------------------------------------------


async def stored(srv: ServerProcess, job_id: str, node: str, channel: str) -> bytes | None:
    """Stored bytes of one channel (None on 404), read without blocking the event loop."""
    return await trio.to_thread.run_sync(output, srv, job_id, node, channel)


async def stored_eventually(
    srv: ServerProcess, job_id: str, node: str, channel: str, expected: bytes
) -> None:
    """Wait for the (up to 1 s buffered) output record to hold exactly `expected`."""

    async def matches() -> bool:
        return await stored(srv, job_id, node, channel) == expected

    await wait_until(matches, what=f"{channel} of {node} to be {expected!r}")


async def log_contains(srv: ServerProcess, text: str) -> bool:
    return text in await trio.to_thread.run_sync(srv.log_path.read_text)


def grouped(detail: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Per-node detail grouped like the job object's `nodes`."""
    out: dict[str, list[str]] = {}
    for name, row in detail.items():
        out.setdefault(row["status"], []).append(name)
    return {status: sorted(names) for status, names in out.items()}


def fixed_port_server(server_factory: Any, **timing: Any) -> ServerProcess:
    """A private server whose ports survive a restart (agents reconnect to the same URL)."""
    http, heartbeat, command = free_ports(3)
    return server_factory(
        http={"port": http},
        zeromq={"heartbeat_port": heartbeat, "command_port": command},
        timing=timing,
    )


HANG = (
    '"hang" = { run = "echo started; sleep 300 & echo $! > \\"$PIDS\\"; '
    'echo $$ >> \\"$PIDS\\"; wait", shell = true }\n'
)


# ---- scripted peers: messages from outside the job ----------------------------------------


async def test_strangers_and_other_orgs_cannot_touch_a_job(server: ServerProcess) -> None:
    other_org = f"other{os.getpid()}{secrets.token_hex(3)}"
    await trio.to_thread.run_sync(server.admin, "org", "create", other_org)
    async with ready_peers(server, 3, "strange") as (a, b, outsider):
        # A node of another organization with the same name as member `a` (an admin client
        # there, so that it may read its own node_states: a plain node key may not).
        twin_key = server.keys_dir / f"{other_org}-{a.node}.pem"
        await trio.to_thread.run_sync(
            server.admin,
            "client",
            "create",
            other_org,
            a.node,
            "--key-out",
            str(twin_key),
            "--admin",
        )
        async with open_peer(
            server.http_url, other_org, a.node, twin_key, answer_aborts=True
        ) as twin:
            await twin.expect("abort")
            await twin.wait_node_state(availability="available")
            twin.start_heartbeats()
            job_id = await start_job(server, "x", [a.node, b.node], quorum=2, capture_output=True)
            await a.expect("commit", skip=("ack",))
            await b.expect("commit", skip=("ack",))

            # Not a member: only the sender is rehabbed, the job is untouched.
            for peer in (outsider, twin):
                peer.drain()
                for msg_type in ("ack_commit", "nack_commit", "ack_run", "succeeded"):
                    await peer.send(msg_type, job_id=job_id, exit_status=0)
                await peer.send("output", job_id=job_id, channel="stdout", offset=0, data=b"x")
                await peer.send("aborted", job_id=job_id)
                await peer.expect("abort", skip=("ack",))
                await peer.wait_node_state(availability="available")
            job = await get_job(server, job_id)
            assert job["status"] == "voting"
            assert job["nodes"] == {"new": sorted([a.node, b.node])}

            for peer in (a, b):
                await peer.send("ack_commit", job_id=job_id)
            for peer in (a, b):
                await peer.expect("run")
                await peer.send("ack_run", job_id=job_id)
                await peer.send("output", job_id=job_id, channel="stdout", offset=0, data=b"mine")
            # The twin streams output and results for "its" node name in the other org.
            await twin.send("output", job_id=job_id, channel="stdout", offset=4, data=b"evil")
            await twin.send("failed", job_id=job_id, exit_status=9, stdout_bytes=8)
            await twin.expect("abort", skip=("ack",))
            for peer in (a, b):
                await peer.send(
                    "succeeded", job_id=job_id, exit_status=0, stdout_bytes=4, stderr_bytes=0
                )
            job = await wait_job(server, job_id)
            assert job["status"] == "complete"
            assert job["nodes"] == {"succeeded": sorted([a.node, b.node])}
            for peer in (a, b):
                await stored_eventually(server, job_id, peer.node, "stdout", b"mine")
            detail = await trio.to_thread.run_sync(node_details, server, job_id)
            assert detail[a.node]["exit_status"] == 0 and detail[a.node]["stdout_bytes"] == 4
            _, events = await read_sse(server, f"job_status_feed/{job_id}")
            names = compact(events)
            assert ("rehab", a.node) not in names and ("rehab", b.node) not in names
            assert names[-1] == ("job_complete", "complete")
            assert twin.errors == [] and outsider.errors == []


# ---- scripted peers: members that repeat, hurry, lag and rewind ----------------------------


async def test_duplicates_early_results_late_output_and_rewound_sequences(
    server: ServerProcess,
) -> None:
    async with ready_peers(server, 3, "odd") as (dup, early, rewind):
        peers = (dup, early, rewind)
        job_id = await start_job(
            server, "x", [p.node for p in peers], quorum=3, capture_output=True, run_timeout=30
        )
        for peer in peers:
            await peer.expect("commit", skip=("ack",))
            await peer.send("ack_commit", job_id=job_id)
        for peer in peers:
            await peer.expect("run")

        # `early` reports a result before acknowledging the run: crashed (lifecycle.md §5.2).
        await early.send("succeeded", job_id=job_id, exit_status=0, stdout_bytes=0)
        await early.expect("abort")
        await early.send("ack_run", job_id=job_id)  # too late: node already final

        # `dup` succeeds, repeats its result, then streams after its record was closed.
        await dup.send("ack_run", job_id=job_id)
        await dup.send("output", job_id=job_id, channel="stdout", offset=0, data=b"one\n")
        result = dict(job_id=job_id, exit_status=0, stdout_bytes=4, stderr_bytes=0)
        await dup.send("succeeded", **result)
        await dup.send("succeeded", **result)
        await dup.expect("abort")
        await dup.send("output", job_id=job_id, channel="stdout", offset=4, data=b"late\n")

        # `rewind` replays an old sequence number on the same connection: dropped.
        await rewind.send("ack_run", job_id=job_id)
        await wait_until(
            lambda: _node_is(server, job_id, rewind.node, "running"), what="rewind running"
        )
        await rewind.send("failed", job_id=job_id, exit_status=1, sequence=1)
        await wait_until(
            lambda: log_contains(server, f"{rewind.node!r}: sequence 1 not after"),
            what="rewound sequence dropped",
        )
        job = await get_job(server, job_id)
        assert job["status"] == "running" and rewind.node in job["nodes"]["running"]
        await rewind.send("succeeded", **result)

        job = await wait_job(server, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {
            "crashed": [early.node],
            "succeeded": sorted([dup.node, rewind.node]),
        }
        await stored_eventually(server, job_id, dup.node, "stdout", b"one\n")
        # `run` was sent, so its (empty) result is kept like any final message (lifecycle.md §8
        # table).
        await stored_eventually(server, job_id, early.node, "stdout", b"")
        detail = await trio.to_thread.run_sync(node_details, server, job_id)
        assert grouped(detail) == job["nodes"]
        assert detail[early.node]["exit_status"] is None
        _, events = await read_sse(server, f"job_status_feed/{job_id}")
        per_node = {p.node: [e for e in compact(events) if p.node in e] for p in peers}
        assert per_node[early.node][-4:] == [
            ("rehab", early.node),
            ("run_complete", early.node, "crashed"),
            ("run_complete", early.node, "client_died_while_running"),
            ("rehab", early.node),
        ]
        assert per_node[dup.node][-3:] == [
            ("run_complete", dup.node, "success"),
            ("rehab", dup.node),
            ("run_complete", dup.node, "client_died_while_running"),
        ]
        assert per_node[rewind.node][-1] == ("run_complete", rewind.node, "success")
        assert ("run_complete", rewind.node, "failure") not in per_node[rewind.node]
        for peer in peers:
            await peer.wait_node_state(availability="available")


async def _node_is(srv: ServerProcess, job_id: str, node: str, status: str) -> bool:
    job = await get_job(srv, job_id)
    return node in job["nodes"].get(status, [])


# ---- scripted peers: garbage flood, mixed protocol versions --------------------------------


def _garbage(peer: Any, i: int) -> list[bytes]:
    """Frames that fail inbound validation at different steps of wire-protocol.md §16."""
    kind = i % 8
    if kind == 0:
        return [secrets.token_bytes(64)]
    if kind == 1:
        return [b"Version:3.0;SigningMethod:hmac_sha256;Signature:x", b"\xc1\xc1", b"extra"]
    if kind == 2:
        return [b"Version:9.9;SigningMethod:hmac_sha256;Signature:x", b"{}"]
    if kind == 3:
        return [b"Version:3.0;SigningMethod:hmac_sha256;Signature:x", secrets.token_bytes(40)]
    if kind == 4:  # valid shape, forged signature
        return peer.seal("heartbeat", hmac_key=secrets.token_bytes(32))
    if kind == 5:  # unknown organization
        return peer.seal("heartbeat", org=f"no-such-org-{i % 3}")
    if kind == 6:  # missing common field
        return peer.seal("ack_commit", job_id="f" * 32, omit=("incarnation_id",))
    return peer.seal("heartbeat", timestamp="yesterday")


async def test_garbage_flood_and_mixed_versions_in_one_job(server: ServerProcess) -> None:
    async with (
        ready_peers(server, 1, "v3") as (v3,),
        ready_peers(server, 1, "v2", version="2.0") as (v2,),
        ready_peers(server, 1, "junk") as (junk,),
    ):
        junk.drain()
        job_id = await start_job(server, "x", [v3.node, v2.node], quorum=2, capture_output=True)
        flood_done = trio.Event()

        async def flood() -> None:
            for i in range(3000):
                await junk.send_frames(_garbage(junk, i))
                if i % 100 == 0:
                    await trio.sleep(0.01)
            flood_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            c3 = await v3.expect("commit", skip=("ack",))
            c2 = await v2.expect("commit", skip=("ack",))
            assert c3.version == "3.0" and c3["run_timeout"] == 3600
            assert c2.version == "2.0" and "run_timeout" not in c2.fields
            for peer in (v3, v2):
                await peer.send("ack_commit", job_id=job_id)
            for peer in (v3, v2):
                await peer.expect("run")
                await peer.send("ack_run", job_id=job_id)
            await v3.send("output", job_id=job_id, channel="stderr", offset=0, data=b"\x00\xff")
            await v3.send("failed", job_id=job_id, exit_status=4, stderr_bytes=2, stdout_bytes=0)
            await v2.send("succeeded", job_id=job_id, stdout="v2 out\n")
            await flood_done.wait()
        job = await wait_job(server, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {"failed": [v3.node], "succeeded": [v2.node]}
        await stored_eventually(server, job_id, v3.node, "stderr", b"\x00\xff")
        await stored_eventually(server, job_id, v2.node, "stdout", b"v2 out\n")
        assert await stored(server, job_id, v2.node, "stderr") == b""
        detail = await trio.to_thread.run_sync(node_details, server, job_id)
        assert detail[v3.node]["exit_status"] == 4 and grouped(detail) == job["nodes"]
        # The flooding node only produced log lines: no command, its state unchanged.
        await wait_until(
            lambda: log_contains(server, f"{server.org!r}/{junk.node!r}: bad signature"),
            what="drop log line",
        )
        # (drops are logged once per sender and interval, so only the first of a kind shows)
        assert await log_contains(server, f"from {f'{server.org}/{junk.node}'!r} (CURVE key): ")
        state = await junk.node_state()
        assert state["status"] == "online" and state["availability"] == "available"
        assert [m.type for m in junk.drain()] == []
        # ... and it still works normally afterwards.
        after = await start_job(server, "x", [junk.node])
        await junk.expect("commit")
        await junk.send("nack_commit", job_id=after)
        assert (await wait_job(server, after))["nodes"] == {"nacked": [junk.node]}


# ---- real agents: many jobs at once on overlapping nodes -----------------------------------

WORK = '"work" = { run = "sleep 0.3; echo done", shell = true }\n'


def test_concurrent_jobs_on_overlapping_nodes(agent_factory: Any, server: ServerProcess) -> None:
    agents = [agent_factory(whitelist=WORK) for _ in range(4)]
    a, b, c, d = (agent.name for agent in agents)
    plans: list[tuple[list[str], int]] = [
        ([a, b], 1),
        ([b, c], 2),
        ([c, d], 1),
        ([a, d], 2),
        ([a, b, c, d], 1),
        ([b, d], 1),
    ]
    with ThreadPoolExecutor(len(plans)) as pool:
        futures = [
            pool.submit(post_job, server, "work", nodes, quorum=quorum, capture_output=True)
            for nodes, quorum in plans
        ]
        job_ids = [future.result() for future in futures]
    jobs = [server.wait_job(job_id, timeout=30) for job_id in job_ids]
    succeeded = 0
    for job_id, job, (nodes, quorum) in zip(job_ids, jobs, plans, strict=True):
        assert job["status"] in FINAL_JOB_STATUSES, job
        statuses = {name: status for status, names in job["nodes"].items() for name in names}
        assert sorted(statuses) == sorted(nodes)
        assert set(statuses.values()) <= FINAL_NODE, job
        detail = node_details(server, job_id)
        assert grouped(detail) == job["nodes"]
        ready = [n for n in nodes if statuses[n] in ("succeeded", "failed", "was_ready")]
        if job["status"] == "complete":
            assert len(ready) >= quorum
            assert set(statuses.values()) <= {"succeeded", "nacked", "unavailable"}, job
            for name in job["nodes"].get("succeeded", []):
                assert detail[name]["exit_status"] == 0
                assert output(server, job_id, name, "stdout") == b"done\n"
                succeeded += 1
        else:
            assert job["status"] == "quorum_failed", job
            assert len(ready) < quorum
    assert succeeded > 0
    for agent in agents:
        assert agent.proc is not None and agent.proc.poll() is None
        for job_id, job in zip(job_ids, jobs, strict=True):
            if agent.name in job["nodes"].get("nacked", []):
                assert f"job {job_id}: commit refused: busy with job" in agent.log_text()
    # Nobody is left stuck in rehab or holding a job: one more job over all of them succeeds.
    for agent in agents:
        server.wait_node(agent.name, "available")
    final = server.wait_job(post_job(server, "work", [a, b, c, d]))
    assert final["status"] == "complete" and final["nodes"] == {"succeeded": sorted([a, b, c, d])}


# ---- real agents: the server is killed mid-job ---------------------------------------------


def test_server_sigkill_mid_job_then_recovery(server_factory: Any, tmp_path: Path) -> None:
    srv = fixed_port_server(server_factory)
    pid_file = tmp_path / "pids"
    agents = []
    try:
        for i in range(2):
            agent = AgentProcess(srv, tmp_path / f"a{i}", node_name("sk"), whitelist=HANG + WORK)
            agents.append(agent)
            agent.start()
        runner, voter = agents
        # `runner` runs a long process; `voter` (frozen) leaves the second job in `voting`.
        job_id = post_job(
            srv, "hang", [runner.name], capture_output=True, env={"PIDS": str(pid_file)}
        )
        wait_for(lambda: len(read_pids(pid_file)) == 2, 15, what="job processes")
        pids = read_pids(pid_file)
        assert pids_alive(pids) == pids
        wait_for(lambda: output(srv, job_id, runner.name, "stdout") is not None, 10, what="record")
        voter.send_signal(signal.SIGSTOP)
        try:
            second = post_job(srv, "work", [voter.name])
            wait_for(lambda: srv.get(f"jobs/{second}").json()["status"] == "voting", 5)
            srv.stop(signal.SIGKILL)
        finally:
            voter.send_signal(signal.SIGCONT)
        srv.start()
        job = srv.get(f"jobs/{job_id}").json()
        assert job["status"] == "crashed" and job["nodes"] == {"crashed": [runner.name]}
        other = srv.get(f"jobs/{second}").json()
        assert other["status"] == "crashed" and other["nodes"] == {"crashed": [voter.name]}
        detail = node_details(srv, job_id)[runner.name]
        assert detail["status"] == "crashed" and detail["finished_at"] is not None
        # The output record was closed at start: the live stream ends at once.
        response = srv.get(
            f"jobs/{job_id}/output/{runner.name}/stdout",
            headers={"Accept": "text/event-stream"},
        )
        assert response.status_code == 200 and "event: end" in response.text
        # Agents reconnect by themselves; the abort they get ends the leftover process. An agent
        # that declared the server offline backs off (4.8 s, 9.5 s, 19.8 s, ...) while the
        # restart lasts: on a loaded machine that can pass 30 s.
        for agent in agents:
            agent.wait_available(timeout=60)
        wait_for(lambda: not pids_alive(pids), 15, what="leftover processes gone")
        assert f"job {job_id}: reporting aborted" in runner.log_text()
        assert srv.get(f"jobs/{job_id}").json()["status"] == "crashed"
        fresh = srv.wait_job(post_job(srv, "work", [runner.name, voter.name]))
        assert fresh["status"] == "complete"
        assert fresh["nodes"] == {"succeeded": sorted([runner.name, voter.name])}
    finally:
        kill_all(read_pids(pid_file))
        for agent in agents:
            agent.stop()


def test_server_restart_agents_drop_the_stale_connection_and_reconfigure_once(
    server_factory: Any, tmp_path: Path
) -> None:
    # After a restart the old CURVE key and session keys are gone: an agent that kept its old
    # command connection would fail a CURVE handshake every 100 ms until its (splayed)
    # reconfigure. It drops that connection when the new incarnation's first heartbeat comes
    # (sent within 0.5 s of the start), then fetches its config once.
    srv = fixed_port_server(server_factory)
    agents = [
        AgentProcess(srv, tmp_path / f"r{i}", node_name("rs"), whitelist=WORK) for i in (0, 1)
    ]
    try:
        for agent in agents:
            agent.start()
        for agent in agents:
            agent.wait_available()
        srv.restart()
        for agent in agents:
            agent.wait_available(timeout=60)
        for agent in agents:
            log = agent.log_text()
            assert "closed until the reconfigure" in log, log[-2000:]
            assert log.count("connected: heartbeat") == 2, log[-2000:]
        job = srv.wait_job(post_job(srv, "work", [a.name for a in agents]))
        assert job["nodes"] == {"succeeded": sorted(a.name for a in agents)}
    finally:
        for agent in agents:
            agent.stop()


# ---- real agents: a frozen agent while voting ----------------------------------------------


def test_frozen_agent_times_out_voting_then_recovers(server_factory: Any, tmp_path: Path) -> None:
    # Voting times out long before the liveness scan could notice the silent node.
    srv = server_factory(timing={"voting_timeout": 1, "detect_offline_nodes_interval": 40})
    frozen = AgentProcess(srv, tmp_path / "frozen", node_name("ice"), whitelist=WORK)
    healthy = AgentProcess(srv, tmp_path / "healthy", node_name("warm"), whitelist=WORK)
    try:
        frozen.start()
        healthy.start()
        frozen.send_signal(signal.SIGSTOP)
        try:
            job_id = post_job(srv, "work", [frozen.name, healthy.name], quorum=1)
            job = srv.wait_job(job_id, timeout=20)
        finally:
            frozen.send_signal(signal.SIGCONT)
        assert job["status"] == "complete"
        assert job["nodes"] == {"succeeded": [healthy.name], "unavailable": [frozen.name]}
        response = srv.get(f"job_status_feed/{job_id}", headers={"Accept": "text/event-stream"})
        votes = [e["data"] for e in parse_sse(response.text) if e["event"] == "quorum_vote"]
        assert {"node": frozen.name, "status": "voting_timeout"} in [
            {k: v for k, v in vote.items() if k != "timestamp"} for vote in votes
        ]
        # Thawed, the agent answers the stale commit and the pending aborts, and is idle again.
        frozen.wait_available(timeout=30)
        again = srv.wait_job(post_job(srv, "work", [frozen.name]))
        assert again["nodes"] == {"succeeded": [frozen.name]}
    finally:
        for agent in (frozen, healthy):
            if agent.proc is not None and agent.proc.poll() is None:
                agent.send_signal(signal.SIGCONT)
            agent.stop()


async def test_peer_churn_mid_job_leaves_final_statuses(server: ServerProcess) -> None:
    """Peers that vanish and reconnect with new incarnations mid-job leave final statuses."""
    async with ready_peers(server, 3, "churn") as (a, b, c):
        job_id = await start_job(server, "x", [a.node, b.node, c.node], quorum=1)
        for peer in (a, b, c):
            await peer.expect("commit", skip=("ack",))
            await peer.send("ack_commit", job_id=job_id)
        for peer in (a, b, c):
            await peer.expect("run")
        await a.send("ack_run", job_id=job_id)
        # b restarts (new incarnation) while ready; c reconnects (same incarnation) and runs.
        await b.reconnect(new_incarnation=True)
        await b.expect("abort")
        await c.reconnect()
        await c.expect("ack")
        await c.send("ack_run", job_id=job_id)
        await c.send("succeeded", job_id=job_id, exit_status=0)
        await a.send("failed", job_id=job_id, exit_status=2)
        job = await wait_job(server, job_id)
        assert job["status"] == "complete"
        assert job["nodes"] == {"crashed": [b.node], "failed": [a.node], "succeeded": [c.node]}
        response = await api(server, "GET", f"jobs/{job_id}/nodes")
        rows = {row["node_name"]: row for row in response.json()}
        assert rows[a.node]["exit_status"] == 2 and rows[c.node]["exit_status"] == 0
        for peer in (a, b, c):
            await peer.wait_node_state(availability="available")


def test_frozen_agent_while_running_goes_down_then_recovers(
    agent_factory: Any, server: ServerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "finished"
    whitelist = '"slow" = { run = "sleep 1; touch \\"$MARK\\"; echo slow", shell = true }\n'
    frozen = agent_factory(whitelist=whitelist)
    healthy = agent_factory(whitelist=whitelist)
    job_id = post_job(server, "slow", [frozen.name, healthy.name], env={"MARK": str(marker)})
    wait_for(
        lambda: server.get(f"jobs/{job_id}").json()["nodes"].get("running") is not None,
        10,
        what="a node running",
    )
    frozen.send_signal(signal.SIGSTOP)
    try:
        # Its heartbeats stop: liveness declares it down, the job records it `crashed`.
        job = server.wait_job(job_id, timeout=30)
        server.wait_node(frozen.name, "offline")
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert job["status"] == "complete"
    assert job["nodes"] == {"crashed": [frozen.name], "succeeded": [healthy.name]}
    detail = node_details(server, job_id)
    assert grouped(detail) == job["nodes"] and detail[frozen.name]["exit_status"] is None
    # Thawed, it reports a result (or, when the abort of its new node state is handled first,
    # `aborted`) that the server no longer wants, and becomes idle again.
    frozen.wait_available(timeout=30)
    wait_for(lambda: f"job {job_id}: reporting " in frozen.log_text(), 10, what="a report")
    assert server.get(f"jobs/{job_id}").json()["nodes"] == job["nodes"]
    again = server.wait_job(post_job(server, "slow", [frozen.name], env={"MARK": str(marker)}))
    assert again["nodes"] == {"succeeded": [frozen.name]}


# ---- scripted peers: many jobs at once, erratic answers, live view == stored record ---------


async def _erratic(peer: Any, rng: Any, done: trio.Event) -> None:
    """Answer commits and runs of every job erratically (seeded), until `done`."""
    while not done.is_set():
        try:
            msg = await peer.recv(0.2)
        except PeerError:
            continue
        job_id = msg.job_id
        roll = rng.random()
        if msg.type == "commit":
            if roll < 0.75:
                await peer.send("ack_commit", job_id=job_id)
                if rng.random() < 0.15:
                    await peer.send("ack_commit", job_id=job_id)  # unexpected_commit
            else:
                await peer.send("nack_commit", job_id=job_id)
        elif msg.type == "run":
            if roll < 0.1:
                await peer.send("failed", job_id=job_id, exit_status=5)  # result before ack_run
                continue
            if roll < 0.2:
                await peer.send("nack_run", job_id=job_id)
                continue
            await peer.send("ack_run", job_id=job_id)
            if roll < 0.3:
                await peer.send("nack_run", job_id=job_id)
            elif roll < 0.4:
                pass  # never reports: the run timer ends it
            else:
                status = rng.choice([0, 0, 1, 2])
                kind = "succeeded" if status == 0 else "failed"
                await peer.send(kind, job_id=job_id, exit_status=status)
                if rng.random() < 0.2:
                    await peer.send(kind, job_id=job_id, exit_status=status)  # duplicate


async def _expired(srv: ServerProcess, job_id: str) -> bool:
    """True once the job left memory: its feed answers with a single `summary`."""
    _, events = await read_sse(srv, f"job_status_feed/{job_id}")
    return [e["event"] for e in events] == ["summary"]


async def test_many_jobs_erratic_peers_live_view_matches_stored_record(
    server: ServerProcess,
) -> None:
    import random

    rng = random.Random(20261127)
    async with ready_peers(server, 6, "chaos") as peers, trio.open_nursery() as nursery:
        done = trio.Event()
        for peer in peers:
            nursery.start_soon(_erratic, peer, random.Random(rng.random()), done)
        names = [p.node for p in peers]
        plans = [rng.sample(names, rng.randint(2, 5)) for _ in range(10)]
        job_ids: list[str] = [""] * len(plans)

        async def start(i: int, nodes: list[str]) -> None:
            quorum = rng.randint(1, len(nodes))
            job_ids[i] = await start_job(server, "x", nodes, quorum=quorum, run_timeout=2)

        async with trio.open_nursery() as starters:
            for i, nodes in enumerate(plans):
                starters.start_soon(start, i, nodes)
        # Aborts race with the nodes' answers: either the abort wins or the job had finished.
        aborted = {}
        for job_id in job_ids[::3]:
            await trio.sleep(rng.random() * 0.3)
            response = await api(server, "POST", f"jobs/{job_id}/abort")
            assert response.status_code in (200, 409), response.text
            aborted[job_id] = response
        live_views = [await wait_job(server, job_id, timeout=20) for job_id in job_ids]
        for job_id, response in aborted.items():
            live = live_views[job_ids.index(job_id)]
            if response.status_code == 200:
                assert response.json() == live and live["status"] == "aborted"
            else:
                assert live["status"] != "aborted"
                assert f"with status '{live['status']}'" in response.text
        for job_id, live in zip(job_ids, live_views, strict=True):
            await wait_until(lambda j=job_id: _expired(server, j), what=f"{job_id} expired")
            stored_job = await get_job(server, job_id)
            assert stored_job == live, (live, stored_job)
            assert set(stored_job["nodes"]) <= FINAL_NODE
            detail = await trio.to_thread.run_sync(node_details, server, job_id)
            assert grouped(detail) == stored_job["nodes"]
            for name, row in detail.items():
                if row["status"] == "succeeded":
                    assert row["exit_status"] == 0 and row["started_at"] is not None
                assert row["finished_at"] is not None, (job_id, name, row)
        done.set()
        for peer in peers:
            await peer.wait_node_state(availability="available")

"""Three servers on one real PostgreSQL database, six real agents spread over them
(docs/cluster.md): one job across every server's nodes, the same node list everywhere, output
from any server, and the loss of a server.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.agents import AgentProcess, running_agents
from tests.support.jobs import get_job, node_details, output, post_job, start_job
from tests.support.postgres import PostgresCluster, running_postgres
from tests.support.server import ServerProcess
from tests.support.sse import SseReader, read_sse
from tests.support.waits import wait_for

WHITELIST = """
"greet" = { run = 'echo "hello from $CHEF_PUSH_NODE_NAME"', shell = true }
"sleep" = { pattern = '^sleep ([0-9]{1,3})$', run = 'sleep \\1' }
"ticker" = { shell = true, run = '''
for i in 1 2 3; do echo "tick $i from $CHEF_PUSH_NODE_NAME"; sleep 1; done''' }
"""
LEASE = 3.0
NAMES = ("a", "b", "c")


@dataclass
class Cluster:
    servers: dict[str, ServerProcess]
    agents: list[AgentProcess]
    url: str  # the shared database

    def node_names(self) -> list[str]:
        return sorted(agent.name for agent in self.agents)

    def placement(self) -> dict[str, list[str]]:
        """Server name → the nodes connected to it, from the shared `node_presence` table."""
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute("SELECT server_id, node_name FROM node_presence").fetchall()
        placed: dict[str, list[str]] = {name: [] for name in NAMES}
        for server_id, node in rows:
            placed[server_id.removeprefix("server-")].append(node)
        return {name: sorted(nodes) for name, nodes in placed.items()}


def node_states(srv: ServerProcess) -> list[tuple[str, str]]:
    response = srv.get("node_states")
    assert response.status_code == 200, response.text
    return sorted((n["node_name"], n["availability"]) for n in response.json())


def every_node_available(srv: ServerProcess, nodes: list[str]) -> bool:
    """Every node listed available (False also while the server answers 503)."""
    if srv.get("node_states").status_code == 503:
        return False
    return node_states(srv) == [(name, "available") for name in nodes]


@contextlib.contextmanager
def running_cluster(url: str, base: Path) -> Iterator[Cluster]:
    """Three servers on `url`; six agents that list all three (`server_urls`) and so spread
    at random."""
    servers: dict[str, ServerProcess] = {}
    for name in NAMES:
        overrides: dict[str, dict[str, Any]] = {
            "store": {"backend": "postgresql", "url": url},
            "cluster": {"server_id": f"server-{name}", "lease": LEASE},
        }
        servers[name] = ServerProcess(base / f"server-{name}", overrides, joins=servers.get("a"))
    try:
        for srv in servers.values():
            srv.start()
        urls = [srv.org_url for srv in servers.values()]
        with running_agents(
            servers["a"], base, "n", 6, whitelist=WHITELIST, extra={"server_urls": urls}
        ) as agents:
            yield Cluster(servers, agents, url)
    finally:
        for srv in servers.values():
            srv.stop()


@pytest.fixture
def cluster(postgres: PostgresCluster, tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(postgres.new_database(), tmp_path) as running:
        yield running


def test_one_job_spans_every_server(cluster: Cluster) -> None:
    a, b, c = (cluster.servers[name] for name in NAMES)
    nodes = cluster.node_names()
    for srv in (a, b, c):  # every server lists every node of the cluster
        wait_for(lambda srv=srv: every_node_available(srv, nodes), 20, what="the same node list")
    placed = cluster.placement()
    assert sorted(n for group in placed.values() for n in group) == nodes, placed
    job_id = post_job(a, "greet", nodes, capture_output=True)
    job = a.wait_job(job_id)
    assert job["status"] == "complete" and job["nodes"] == {"succeeded": nodes}, (job, placed)
    details = node_details(a, job_id)
    assert {name: d["exit_status"] for name, d in details.items()} == dict.fromkeys(nodes, 0)
    # its feed read from another server: every event the coordinator streamed, and a resume
    # with Last-Event-ID there goes on where the reader was
    _, on_a = trio.run(read_sse, a, f"job_status_feed/{job_id}")
    _, on_c = trio.run(read_sse, c, f"job_status_feed/{job_id}")
    assert on_c == on_a and on_a[-1]["event"] == "job_complete", (on_a, on_c)
    assert len(on_a) == 3 + 3 * len(nodes)  # start, votes, quorum, runs, completions, end
    _, resumed = trio.run(read_sse, b, f"job_status_feed/{job_id}", {"Last-Event-ID": "job-3"})
    assert resumed == on_a[3:]
    for srv in (b, c):  # the job and every node's output from any server
        assert srv.wait_job(job_id)["nodes"] == {"succeeded": nodes}
        for name in nodes:  # stored by the coordinator within its output flush interval
            wait_for(
                lambda srv=srv, name=name: (
                    output(srv, job_id, name, "stdout") == f"hello from {name}\n".encode()
                ),
                10,
                what=f"{name}'s output",
            )
    # a running job followed from another server, live, to its end
    running = post_job(a, "sleep 2", nodes)
    _, followed = trio.run(read_sse, c, f"job_status_feed/{running}", None, 30)
    _, live_on_a = trio.run(read_sse, a, f"job_status_feed/{running}")
    assert followed == live_on_a and followed[-1]["data"]["status"] == "complete"

    # an abort sent to another server reaches the coordinator; the answer is the ended job
    long = post_job(a, "sleep 60", nodes)
    wait_for(lambda: a.get(f"jobs/{long}").json()["status"] == "running", 30, what="running")
    aborted = b.post(f"jobs/{long}/abort", body={})
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["status"] == "aborted" and aborted.json()["aborted_by"] == a.admin_user
    assert a.wait_job(long)["nodes"] == {"aborted": nodes}

    # the org feed of a server shows the jobs other servers coordinate
    async def org_feed_on_c() -> list[dict[str, Any]]:
        reader = SseReader()
        async with trio.open_nursery() as nursery:
            await nursery.start(reader.run, c, "job_status_feed")
            job = await trio.to_thread.run_sync(lambda: post_job(a, "greet", nodes))
            with trio.fail_after(30):
                while not any(
                    e["event"] == "job_complete" and e["data"]["job"] == job for e in reader.events
                ):
                    await reader.wait_event("job_complete")
                    await trio.sleep(0.05)
            reader.scope.cancel()
        return [e for e in reader.events if e["data"].get("job") == job]

    seen = trio.run(org_feed_on_c)
    assert [e["event"] for e in seen] == ["start", "job_complete"], seen
    assert seen[0]["data"]["command"] == "greet" and seen[1]["data"]["status"] == "complete"
    # and a job started on another server reaches every node too
    second = post_job(c, "greet", nodes)
    assert c.wait_job(second)["nodes"] == {"succeeded": nodes}


def test_live_output_read_on_other_servers(cluster: Cluster) -> None:
    """A running job's output, followed live on servers that do not coordinate it: the
    per-job feed on C and one node's stream on B see every line while the job runs on A."""
    a, b, c = (cluster.servers[name] for name in NAMES)
    nodes = cluster.node_names()
    for srv in (a, b, c):
        wait_for(lambda srv=srv: every_node_available(srv, nodes), 20, what="the same node list")
    expected = {name: "".join(f"tick {i} from {name}\n" for i in (1, 2, 3)) for name in nodes}

    async def follow() -> tuple[str, str, SseReader, SseReader]:
        feed, stream = SseReader(), SseReader()
        job_id = await start_job(a, "ticker", nodes, capture_output=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(feed.run, c, f"jobs/{job_id}/output")
            await nursery.start(stream.run, b, f"jobs/{job_id}/output/{nodes[0]}/stdout")
            await feed.wait_event("output", 30)
            status_at_first_output = (await get_job(a, job_id))["status"]
            await feed.wait_end(60)
            await stream.wait_end(60)
        return job_id, status_at_first_output, feed, stream

    job_id, status_at_first_output, feed, stream = trio.run(follow)
    assert feed.status == 200 and stream.status == 200
    # the first line reached C while the job was still running on A: followed, not replayed
    assert status_at_first_output == "running"
    stdout: dict[str, str] = {}
    for event in feed.events:
        data = event["data"]
        if event["event"] == "output":
            assert data["channel"] == "stdout" and data["encoding"] == "text", event
            assert data["offset"] == len(stdout.get(data["node"], "").encode()), event
            stdout[data["node"]] = stdout.get(data["node"], "") + data["data"]
    assert stdout == expected
    ends = sorted(
        (e["data"]["node"], e["data"]["channel"]) for e in feed.events if e["event"] == "end"
    )
    assert ends == sorted((name, channel) for name in nodes for channel in ("stdout", "stderr"))
    assert all(e["data"]["status"] == "succeeded" for e in feed.events if e["event"] == "end"), (
        feed.events
    )
    assert feed.events[-1]["event"] == "job_complete"
    assert feed.events[-1]["data"]["status"] == "complete"
    # one node's stream on B: the same bytes, then `end` with its status
    pieces = [e["data"]["data"] for e in stream.events if e["event"] == "output"]
    assert "".join(pieces) == expected[nodes[0]]
    assert stream.events[-1]["event"] == "end"
    assert stream.events[-1]["data"]["status"] == "succeeded", stream.events
    assert stream.events[-1]["data"]["bytes"] == len(expected[nodes[0]])
    # a reader resuming on B after the first line of node 0 gets the rest only
    first_end = len(f"tick 1 from {nodes[0]}\n")
    _, resumed = trio.run(
        read_sse, b, f"jobs/{job_id}/output", {"Last-Event-ID": f"{nodes[0]}:stdout:{first_end}"}
    )
    resumed_text = "".join(
        e["data"]["data"]
        for e in resumed
        if e["event"] == "output" and e["data"]["node"] == nodes[0]
    )
    assert resumed_text == expected[nodes[0]][first_end:]


def test_losing_a_server(cluster: Cluster) -> None:
    nodes = cluster.node_names()
    for srv in cluster.servers.values():
        wait_for(lambda srv=srv: every_node_available(srv, nodes), 20, what="the same node list")
    placed = cluster.placement()
    # the victim: a server with at least two nodes (six nodes on three servers: one has)
    victim = max(NAMES, key=lambda name: len(placed[name]))
    coordinator, survivor = (name for name in NAMES if name != victim)
    a, b, c = cluster.servers[coordinator], cluster.servers[victim], cluster.servers[survivor]
    b0, b1 = placed[victim][:2]
    others = [name for name in nodes if name not in placed[victim]]
    in_a = sorted([*others, b0])
    from_a = post_job(a, "sleep 60", in_a)  # coordinated by A, one node on B
    wait_for(
        lambda: a.get(f"jobs/{from_a}").json()["nodes"].get("running") == in_a,
        30,
        what="A's job running everywhere",
    )
    from_b = post_job(b, "sleep 60", [b1])  # coordinated by B
    wait_for(
        lambda: b.get(f"jobs/{from_b}").json()["status"] == "running", 30, what="B's job running"
    )
    assert b.proc is not None
    killed_at = time.monotonic()
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    timeline: dict[str, float] = {}
    # within the lease and a few seconds: B's job is crashed, and B's node in A's job too
    wait_for(
        lambda: a.get(f"jobs/{from_b}").json()["status"] == "crashed",
        LEASE + 15,
        what="B's job crashed",
    )
    timeline["B's job crashed"] = time.monotonic() - killed_at

    def b0_crashed() -> dict[str, Any] | None:
        job = a.get(f"jobs/{from_a}").json()
        return job if job["nodes"].get("crashed") == [b0] else None

    job = wait_for(b0_crashed, LEASE + 15, what="B's node crashed in A's job")
    assert job["nodes"].get("running") == others and job["status"] == "running", job
    timeline["B's node crashed in A's job"] = time.monotonic() - killed_at
    a.post(f"jobs/{from_a}/abort", body={})
    assert a.wait_job(from_a)["status"] == "aborted"
    # B's agents find another server (server_urls) and are available there
    for srv in (a, c):
        wait_for(lambda srv=srv: every_node_available(srv, nodes), 60, what="B's nodes back")
    timeline["every node available on A and C"] = time.monotonic() - killed_at
    moved = cluster.placement()
    assert moved[victim] == [] and sorted(moved[coordinator] + moved[survivor]) == nodes
    again = post_job(c, "greet", nodes)
    assert c.wait_job(again)["nodes"] == {"succeeded": nodes}
    # nothing was lost from the records: B's job says truthfully what happened
    assert a.get(f"jobs/{from_b}").json()["nodes"] == {"crashed": [b1]}
    print("kill -9 timeline: " + ", ".join(f"{k} {v:.1f} s" for k, v in timeline.items()))


def test_a_database_outage_is_ridden_out(tmp_path: Path) -> None:
    """PostgreSQL stopped for 20 s: 503s with a clear text, nobody is taken for dead, and
    everything works again afterwards without restarting anything."""
    # this test's own database server, so stopping it harms no other test
    with running_postgres() as own, running_cluster(own.new_database(), tmp_path) as cluster:
        nodes = cluster.node_names()
        for srv in cluster.servers.values():
            wait_for(lambda srv=srv: every_node_available(srv, nodes), 20, what="every node")
        own.stop()
        time.sleep(20)  # several leases long
        for srv in cluster.servers.values():
            response = srv.get("node_states")
            assert response.status_code == 503, response.text
            assert "is unavailable" in response.json()["error"][0]
        own.restart()
        restarted = time.monotonic()
        for srv in cluster.servers.values():
            wait_for(lambda srv=srv: every_node_available(srv, nodes), 60, what="the cluster back")
        print(
            f"database back: every server answers again after {time.monotonic() - restarted:.1f} s"
        )
        job_id = post_job(cluster.servers["b"], "greet", nodes)
        assert cluster.servers["b"].wait_job(job_id)["nodes"] == {"succeeded": nodes}
        for srv in cluster.servers.values():
            log = srv.log_path.read_text()
            assert "is gone (lease expired)" not in log, srv.log_tail()
            assert "Traceback" not in log, srv.log_tail()

"""Real network faults between a real server and real agents (issue 12).

Each test runs a server and its agents in network namespaces of their own, joined by the
impairing TUN hub of `tests.support.netfaults` (the kernel has no `sch_netem`): a 30 s silent
partition of one agent during a running job, 30 % loss with 500 ms of added round trip on
every link of a 20-node job, and a link flapping every 2 s for a minute under a stream of jobs.
The expected outcomes come from lifecycle.md §5.1, §5.2 (what a node that goes down while
voting or running becomes) and agent.md §6, §7 (how an agent finds its server again).

Every job command appends its job id to `runs.log` in the agent's directory, so that the
record can be checked against what really ran: a node never runs a job twice, a `succeeded`
node ran it exactly once, and a node that never got `run` did not run it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from pushjobs.protocol.vocabulary import FINAL_NODE_STATUSES
from tests.support.jobs import node_details, post_job
from tests.support.netfaults import (  # noqa: F401
    FaultNet,
    FaultNetFactory,
    NetAgent,
    NetServer,
    fault_net_fixture,
)
from tests.support.server import FINAL_JOB_STATUSES
from tests.support.sse import parse_sse
from tests.support.waits import wait_for

pytestmark = pytest.mark.slow

FINAL_NODE = FINAL_NODE_STATUSES

STABLE = 5.0  # seconds every node must stay available before the next job (10 heartbeats)
RECOVERY = 120.0  # an agent cut off for long may be in its fetch backoff (agent.md §6.3)


def whitelist(nap: int = 8) -> str:
    """`mark`: leave evidence and end; `nap`: leave evidence, then sleep `nap` seconds."""
    mark = 'echo "$CHEF_PUSH_JOB_ID" >> runs.log'
    return (
        f"\"mark\" = {{ run = '{mark}', shell = true }}\n"
        f"\"nap\" = {{ run = '{mark}; exec sleep {nap}', shell = true }}\n"
        f"\"mark-nap\" = {{ run = '{mark}; exec sleep 1', shell = true }}\n"
    )


def job_events(srv: NetServer, job_id: str) -> list[dict[str, Any]]:
    """The job feed of a finished, still live job (NET_TIMING keeps it live): every event."""
    response = srv.get(f"job_status_feed/{job_id}", headers={"Accept": "text/event-stream"})
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert events and events[-1]["event"] == "job_complete", events
    return events


def node_events(events: list[dict[str, Any]], node: str) -> list[tuple[str, str | None]]:
    """(event, status) of the events naming `node`, in order."""
    return [
        (event["event"], event["data"].get("status"))
        for event in events
        if event["data"].get("node") == node
    ]


def assert_no_job_ran_twice(agent: NetAgent) -> None:
    twice = [job_id for job_id, runs in Counter(agent.runs()).items() if runs > 1]
    assert not twice, f"{agent.name} ran jobs {twice} more than once"


def wait_all_available(net: FaultNet, timeout: float, stable: float = STABLE) -> None:
    """Wait until every node has been available for `stable` seconds in a row: right after a
    lossy link clears, a TCP connection can still be in retransmission backoff, and its node,
    available a moment ago, go down for missed heartbeats before it recovers."""
    assert net.server is not None
    srv = net.server
    since: list[float] = []

    def all_available() -> bool:
        states = srv.get("node_states").json()
        available = {s["node_name"] for s in states if s["availability"] == "available"}
        if not set(net.names) <= available:
            since.clear()
            return False
        if not since:
            since.append(time.monotonic())
        return time.monotonic() - since[0] >= stable

    wait_for(all_available, timeout, interval=0.5, what="every node available again")


def wait_job_status(srv: NetServer, job_id: str, nodes: dict[str, list[str]]) -> None:
    wait_for(
        lambda: srv.get(f"jobs/{job_id}").json()["nodes"] == nodes,
        60,
        interval=0.2,
        what=f"job {job_id} nodes {nodes}",
    )


# ---- a 30 s partition of one node while its job runs -------------------------------------


def test_partitioned_node_crashes_and_comes_back(fault_net: FaultNetFactory) -> None:
    """A node cut off while running is `crashed` (lifecycle.md §5.2 "down"), the others finish
    and the job completes; once healed the node is rehabilitated — its leftover process is
    stopped by the `abort` every new node state starts with — and runs the next job."""
    net = fault_net(3, whitelist=lambda i: whitelist(nap=300 if i == 0 else 8))
    srv = net.server
    assert srv is not None
    victim, *others = net.agents
    assert victim.name.startswith("nf0-")  # the one whose `nap` outlasts the partition
    job_id = post_job(srv, "nap", net.names)
    wait_job_status(srv, job_id, {"running": net.names})

    net.down(victim)
    cut_at = time.monotonic()
    srv.wait_node(victim.name, "offline", timeout=30)
    offline_after = time.monotonic() - cut_at
    job = srv.wait_job(job_id, timeout=60)
    assert job["status"] == "complete"
    assert job["nodes"] == {"crashed": [victim.name], "succeeded": sorted(a.name for a in others)}
    # still cut off: nothing has reached the server since
    assert srv.node_state(victim.name)["status"] == "offline"
    time.sleep(max(0.0, cut_at + 30 - time.monotonic()))  # the partition lasts 30 s
    assert srv.node_state(victim.name)["status"] == "offline"
    assert victim.child_pids(), "the partitioned node's job process should still run"

    net.up(victim)
    healed_at = time.monotonic()
    victim.wait_available(timeout=RECOVERY)
    available_after = time.monotonic() - healed_at

    # The record: run_start for all; the victim down while running → rehab, then
    # run_complete crashed (lifecycle.md §5.2); the others succeed; nothing after the end.
    events = job_events(srv, job_id)
    assert node_events(events, victim.name) == [
        ("quorum_vote", "success"),
        ("run_start", None),
        ("rehab", None),
        ("run_complete", "crashed"),
    ]
    for agent in others:
        assert node_events(events, agent.name) == [
            ("quorum_vote", "success"),
            ("run_start", None),
            ("run_complete", "success"),
        ]
    assert [e["data"]["status"] for e in events if e["event"] == "job_complete"] == ["complete"]
    details = node_details(srv, job_id)
    assert details[victim.name]["exit_status"] is None
    assert details[victim.name]["finished_at"] is not None
    assert all(details[a.name]["exit_status"] == 0 for a in others)

    # The agent's leftover run was stopped by the rehab abort, not reported again.
    wait_for(lambda: not victim.child_pids(), 30, what="the leftover job process gone")
    log = victim.log_text()
    assert f"job {job_id}: abort: terminating the process group" in log
    assert f"job {job_id}: reporting aborted" in log  # its answer to the abort
    assert f"job {job_id}: reporting succeeded" not in log
    assert f"job {job_id}: reporting failed" not in log
    for agent in net.agents:
        assert agent.runs() == [job_id]

    # And the node works again.
    again = post_job(srv, "mark", [victim.name])
    assert srv.wait_job(again, timeout=60)["nodes"] == {"succeeded": [victim.name]}
    assert victim.runs() == [job_id, again]
    print(
        f"\npartition: set up in {net.opened_in:.1f}s, offline after {offline_after:.1f}s, "
        f"available {available_after:.1f}s after healing; links {net.stats(victim)}"
    )


# ---- 30 % loss and 500 ms more round trip on every link of a 20-node job ----------------

# What the record must show for a node ending in each status (lifecycle.md §5.1, §5.2, §4.5):
# the events that explain it, and how often the node may have run the command.
EXPLAINED_BY: dict[str, tuple[set[tuple[str, str | None]], range]] = {
    "succeeded": ({("run_complete", "success")}, range(1, 2)),
    "failed": (
        {("run_complete", s) for s in ("failure", "run_nacked", "run_nacked_while_running")},
        range(2),
    ),
    "crashed": ({("run_complete", "crashed")}, range(2)),
    "unavailable": (
        {("quorum_vote", s) for s in ("down", "voting_timeout", "lost_availibility")}
        | {("rehab", None)},
        range(1),
    ),
    "nacked": ({("quorum_vote", "failure")}, range(1)),
}


def check_record(job: dict[str, Any], events: list[dict[str, Any]], agents: list[NetAgent]) -> None:
    """Every node is final and its status is explained by the job's events and by what ran."""
    assert job["status"] in FINAL_JOB_STATUSES
    for agent in agents:
        status = next(s for s, names in job["nodes"].items() if agent.name in names)
        assert status in FINAL_NODE, (agent.name, status)
        ran = Counter(agent.runs())[job["id"]]
        mine = set(node_events(events, agent.name))
        if status in EXPLAINED_BY:
            reasons, runs = EXPLAINED_BY[status]
            assert mine & reasons, (agent.name, status, mine)
            assert ran in runs, (agent.name, status, ran)
        elif status == "timed_out":
            assert job["status"] == "timed_out" and ran <= 1, (agent.name, ran)
        else:
            assert (status, job["status"]) == ("was_ready", "quorum_failed") and ran == 0


def test_lossy_slow_links_leave_a_truthful_record(fault_net: FaultNetFactory) -> None:
    """Loss and delay on every agent link (each packet crossing a link: 30 % lost, 250 ms
    later — 500 ms more per round trip): the job ends, every node's final status is explained
    by its events and matches what ran, and once the links are clean all 20 nodes are
    available and run the next job."""
    net = fault_net(20, whitelist=whitelist(), timing={"voting_timeout": 30})
    srv = net.server
    assert srv is not None
    net.impair(net.agents, loss=0.3, delay=0.25)
    started = time.monotonic()
    job_id = post_job(srv, "mark-nap", net.names, quorum=1, run_timeout=60)
    job = srv.wait_job(job_id, timeout=150)
    took = time.monotonic() - started
    stats = net.stats()
    net.clear()
    events = job_events(srv, job_id)
    check_record(job, events, net.agents)
    assert sum(stats[net.link(agent)]["lost"] for agent in net.agents) > 0  # faults were real

    cleared = time.monotonic()
    wait_all_available(net, RECOVERY)
    recovered = time.monotonic() - cleared
    again = post_job(srv, "mark", net.names)
    assert srv.wait_job(again, timeout=60)["nodes"] == {"succeeded": net.names}
    for agent in net.agents:
        assert Counter(agent.runs())[again] == 1
        assert_no_job_ran_twice(agent)
    summary = {status: len(names) for status, names in job["nodes"].items()}
    print(
        f"\nlossy: set up in {net.opened_in:.1f}s, job {job['status']} {summary} "
        f"in {took:.1f}s; all available {recovered:.1f}s"
    )


# ---- a link flapping every 2 s for a minute while jobs keep coming ----------------------


def test_flapping_link_runs_no_job_twice(fault_net: FaultNetFactory) -> None:
    """One node's link goes down and up every 2 s for 60 s while jobs are run on it and on a
    steady node, one after another: every job ends, each node's status is explained by its
    events and by what ran, no job runs twice anywhere, the steady node is untouched, and
    afterwards the flapping node is available with nothing left running."""
    net = fault_net(2, whitelist=whitelist())
    srv = net.server
    assert srv is not None
    flapper, steady = net.agents
    net.flap(flapper, period=2, duration=60)
    jobs: list[dict[str, Any]] = []
    while net.stats(flapper)["flapping"]:
        job_id = post_job(srv, "mark-nap", net.names, quorum=1, run_timeout=20)
        jobs.append(srv.wait_job(job_id, timeout=90))
    flaps = net.stats(flapper)
    assert flaps["toggles"] >= 30 and flaps["cut"] > 0, flaps  # it really flapped

    healed = time.monotonic()
    flapper.wait_available(timeout=RECOVERY)
    recovered = time.monotonic() - healed
    for job in jobs:
        check_record(job, job_events(srv, job["id"]), net.agents)
        assert steady.name in job["nodes"].get("succeeded", []), job
    for agent in net.agents:
        assert_no_job_ran_twice(agent)

    # Consistent afterwards: the server's idle node is an idle agent with nothing running.
    wait_for(lambda: not flapper.child_pids(), 30, what="no job process left on the node")
    assert srv.node_state(flapper.name) == {
        "node_name": flapper.name,
        "status": "online",
        "availability": "available",
    }
    last = post_job(srv, "mark", [flapper.name])
    assert srv.wait_job(last, timeout=60)["nodes"] == {"succeeded": [flapper.name]}
    assert flapper.runs()[-1] == last and Counter(flapper.runs())[last] == 1
    outcomes = Counter(
        status for job in jobs for status, names in job["nodes"].items() if flapper.name in names
    )
    print(
        f"\nflapping: set up in {net.opened_in:.1f}s, {len(jobs)} jobs, "
        f"flapper {dict(outcomes)}; available {recovered:.1f}s"
    )

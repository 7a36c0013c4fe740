"""JobManager with a real SQLite store and a recording node registry (no sockets).

Checks what the integration tests cannot reach easily: batched writes when thousands of nodes
answer, crash isolation of a failing job, graceful shutdown, and output record rules.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from pushjobs.protocol.messages import Aborted, AckCommit, AckRun, Output, Succeeded
from pushjobs.protocol.timestamps import StrictClock
from pushjobs.server.config import Settings, TimingSettings
from pushjobs.server.jobs.manager import JobAlreadyFinished, JobManager, JobNotFound
from pushjobs.server.nodes.registry import NodeWatcher
from pushjobs.server.nodes.state import NodePhase
from pushjobs.server.principals.requestor import Requestor
from pushjobs.server.store.interfaces import AsyncStore
from pushjobs.server.store.records import JobSpec
from pushjobs.server.store.sqlite import SqliteStore

COMMON = {"client": "h", "timestamp": "x", "incarnation_id": "i"}


@dataclass
class IdleNode:
    """A node state as the manager reads it (`MemberNode`)."""

    version: str = "3.0"
    phase: NodePhase = NodePhase.IDLE


class RecordingRegistry:
    """The `JobNodes` calls the manager makes, recorded; every online node is idle."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.rehabs: list[str] = []
        self.watchers: dict[tuple[str, str], dict[int, NodeWatcher]] = {}
        self.offline: set[str] = set()
        self._states: dict[str, IdleNode] = {}

    def node_state(self, org: str, node: str) -> IdleNode | None:
        if node in self.offline:
            return None
        st = self._states.get(node)
        if st is None:
            st = self._states[node] = IdleNode()
        return st

    def restart(self, node: str) -> None:
        """A new client incarnation: watchers told `down`, a fresh (idle) state replaces it."""
        self.down("acme", node)
        self._states[node] = IdleNode()

    def send_command(self, org: str, node: str, msg_type: str, fields: dict[str, Any]) -> None:
        self.sent.append((node, msg_type, fields))

    def rehab(self, org: str, node: str) -> None:
        self.rehabs.append(node)

    def watch(self, org: str, node: str, watcher: NodeWatcher) -> None:
        self.watchers.setdefault((org, node), {})[id(watcher)] = watcher

    def unwatch(self, org: str, node: str, watcher: NodeWatcher) -> None:
        self.watchers.get((org, node), {}).pop(id(watcher), None)

    def down(self, org: str, node: str) -> None:
        for watcher in list(self.watchers.get((org, node), {}).values()):
            watcher.node_down(org, node)


class CountingStore(SqliteStore):
    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def set_job_status(self, *args: Any) -> None:
        self._count("set_job_status")
        super().set_job_status(*args)

    def save_job_nodes(self, nodes: Any) -> None:
        self._count("save_job_nodes")
        super().save_job_nodes(nodes)

    def save_outputs(self, records: Any) -> None:
        self._count("save_outputs")
        super().save_outputs(records)

    create_gate: threading.Event | None = None  # set: create_job waits for it (a slow disk)

    def create_job(self, job: Any, node_names: Any) -> None:
        if self.create_gate is not None:
            assert self.create_gate.wait(10)
        super().create_job(job, node_names)


@pytest.fixture
async def env(tmp_path):
    store = CountingStore(tmp_path / "db.sqlite")
    org = store.create_org("acme")
    timing = TimingSettings(wait_complete_time=0.2, output_close_timeout=0.3, voting_timeout=30)
    nodes = RecordingRegistry()
    manager = JobManager(
        settings=Settings(server_name="push", timing=timing),
        store=AsyncStore(store),
        nodes=nodes,
        clock=StrictClock(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        yield SimpleNamespace(nodes=nodes, manager=manager, store=store, org=org)
        nursery.cancel_scope.cancel()


def spec(nodes, **kw) -> JobSpec:
    options: dict[str, Any] = {"quorum": len(nodes), "run_timeout": 60}
    options.update(kw)
    return JobSpec(command="run", nodes=list(nodes), **options)


def msg(cls, node: str, job_id: str, **fields):
    return cls(node=node, org="acme", job_id=job_id, **COMMON, **fields)


ADMIN = Requestor("admin", "user")


async def wait_status(env, job_id: str, status: str) -> None:
    with trio.fail_after(5):
        while True:
            job = env.store.get_job("acme", job_id)
            if job.status == status:
                return
            await trio.sleep(0.02)


async def test_thousands_of_nodes_cost_few_writes(env) -> None:
    names = [f"n{i:04d}" for i in range(3000)]
    job_id = await env.manager.start_job(env.org, ADMIN, spec(names))
    assert sum(1 for s in env.nodes.sent if s[1] == "commit") == 3000
    m = env.manager
    for name in names:
        assert m.on_job_message("acme", name, msg(AckCommit, name, job_id), "3.0")
    for name in names:
        m.on_job_message("acme", name, msg(AckRun, name, job_id), "3.0")
        m.on_job_message("acme", name, msg(Succeeded, name, job_id, exit_status=0), "3.0")
    await wait_status(env, job_id, "complete")
    await m.flush()
    rows = env.store.get_job_nodes(job_id)
    assert {r.status for r in rows} == {"succeeded"} and len(rows) == 3000
    assert all(r.exit_status == 0 and r.started_at and r.finished_at for r in rows)
    # 9000 node changes: a handful of batches, not one write per node
    assert env.store.calls["save_job_nodes"] <= 5
    assert env.store.calls["set_job_status"] <= 4


async def test_failing_job_crashes_alone(env) -> None:
    m = env.manager
    bad = await m.start_job(env.org, ADMIN, spec(["a"]))
    good = await m.start_job(env.org, ADMIN, spec(["b"]))
    live = m.live_job("acme", bad)

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    live.state.message = explode  # the job's handling fails on its next input
    assert m.on_job_message("acme", "a", msg(AckCommit, "a", bad), "3.0")
    assert live.state.status == "crashed"
    assert [e.name for e in live.log.events][-1] == "job_complete"
    assert live.log.events[-1].data["status"] == "crashed"
    assert "a" in env.nodes.rehabs
    assert m.on_job_message("acme", "b", msg(AckCommit, "b", good), "3.0")
    assert m.live_job("acme", good).state.status == "running"
    await wait_status(env, bad, "crashed")
    assert env.store.get_job_nodes(bad)[0].status == "crashed"


async def test_abort_and_errors(env) -> None:
    m = env.manager
    job_id = await m.start_job(env.org, ADMIN, spec(["a", "b"]))
    live = await m.abort_job(env.org, job_id, ADMIN)
    assert live.state.status == "aborted"
    assert env.store.get_job("acme", job_id).status == "aborted"  # written before the answer
    with pytest.raises(JobAlreadyFinished) as info:
        await m.abort_job(env.org, job_id, ADMIN)
    assert info.value.status == "aborted"
    with pytest.raises(JobNotFound):
        await m.abort_job(env.org, "0" * 32, ADMIN)
    # after the grace period the job is only in the store
    with trio.fail_after(5):
        while job_id in m.live_job_ids():
            await trio.sleep(0.02)
    with pytest.raises(JobAlreadyFinished):
        await m.abort_job(env.org, job_id, ADMIN)
    assert {r.status for r in env.store.get_job_nodes(job_id)} == {"aborted"}


async def test_node_down_and_org_feed(env) -> None:
    m = env.manager
    env.nodes.offline.add("gone")
    job_id = await m.start_job(env.org, ADMIN, spec(["gone", "here"], quorum=1))
    feed = m.org_feed("acme")
    assert [e.name for e in feed.log.since(0)] == ["start"]
    assert feed.log.since(0)[0].data["job"] == job_id
    m.on_job_message("acme", "here", msg(AckCommit, "here", job_id), "3.0")
    env.nodes.down("acme", "here")
    live = m.live_job("acme", job_id)
    assert live.state.status == "complete"
    assert live.state.nodes_by_status() == {"unavailable": ["gone"], "crashed": ["here"]}
    assert [e.name for e in feed.log.since(0)] == ["start", "job_complete"]
    # watchers are gone once the job finished
    assert not any(env.nodes.watchers.get(("acme", n)) for n in ("gone", "here"))


async def test_node_restarted_while_the_job_is_stored_gets_no_commit(env) -> None:
    m = env.manager
    nodes = env.nodes
    nodes.offline.add("late")  # offline when the job is created, online before it starts
    gate = env.store.create_gate = threading.Event()
    started: list[str] = []

    async def start() -> None:
        started.append(await m.start_job(env.org, ADMIN, spec(["r", "k", "late"], quorum=1)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start)
        with trio.fail_after(5):
            while not m.live_job_ids():
                await trio.sleep(0.01)
        nodes.restart("r")  # the agent restarts while the job is being stored
        nodes.offline.discard("late")
        gate.set()
    (job_id,) = started
    live = m.live_job("acme", job_id)
    assert [(node, t) for node, t, _ in nodes.sent] == [("k", "commit")]
    assert nodes.rehabs == []  # the new states are not part of the job: no abort either
    assert live.state.nodes_by_status() == {"new": ["k"], "unavailable": ["late", "r"]}
    assert [(e.name, e.data.get("node"), e.data.get("status")) for e in live.log.events] == [
        ("start", None, None),
        ("quorum_vote", "r", "down"),
        ("rehab", "r", None),
        ("quorum_vote", "late", "down"),
        ("rehab", "late", None),
    ]
    m.on_job_message("acme", "k", msg(AckCommit, "k", job_id), "3.0")
    assert [(node, t) for node, t, _ in nodes.sent] == [("k", "commit"), ("k", "run")]


async def test_node_restarted_while_voting_is_counted_out(env) -> None:
    m = env.manager
    nodes = env.nodes
    job_id = await m.start_job(env.org, ADMIN, spec(["r", "v", "k"], quorum=1))
    m.on_job_message("acme", "v", msg(AckCommit, "v", job_id), "3.0")
    nodes.restart("r")  # had not voted
    nodes.restart("v")  # had voted in its old incarnation
    live = m.live_job("acme", job_id)
    assert live.state.nodes_by_status() == {"new": ["k"], "unavailable": ["r", "v"]}
    m.on_job_message("acme", "k", msg(AckCommit, "k", job_id), "3.0")
    assert live.state.status == "running"
    assert [(node, t) for node, t, _ in nodes.sent if node != "k"] == [
        ("r", "commit"),
        ("v", "commit"),
    ]


async def test_shutdown_crashes_live_jobs(env) -> None:
    m = env.manager
    job_id = await m.start_job(env.org, ADMIN, spec(["a"]))
    await m.shutdown()
    assert env.store.get_job("acme", job_id).status == "crashed"
    assert env.store.get_job_nodes(job_id)[0].status == "crashed"
    assert m.live_job("acme", job_id).log.events[-1].data == {
        "timestamp": m.live_job("acme", job_id).log.events[-1].data["timestamp"],
        "status": "crashed",
    }


async def test_output_rules(env) -> None:
    m = env.manager
    job_id = await m.start_job(env.org, ADMIN, spec(["a", "b"], capture=True))
    for node in ("a", "b"):
        m.on_job_message("acme", node, msg(AckCommit, node, job_id), "3.0")
        m.on_job_message("acme", node, msg(AckRun, node, job_id), "3.0")
    # a chunk from a node of another org, or of a job it is not part of, is dropped
    m.on_output("other", "a", msg(Output, "a", job_id, channel="stdout", offset=0, data=b"x"))
    m.on_output("acme", "z", msg(Output, "z", job_id, channel="stdout", offset=0, data=b"x"))
    assert m.output_slot(job_id, "z") is None
    m.on_output("acme", "a", msg(Output, "a", job_id, channel="stdout", offset=0, data=b"hi"))
    m.on_job_message("acme", "a", msg(Succeeded, "a", job_id, exit_status=0, stdout_bytes=2), "3.0")
    env.nodes.down("acme", "b")  # b crashes without output: no record
    await m.flush(outputs=True)
    record = env.store.get_output(job_id, "a")
    assert record.stdout == b"hi" and record.closed and record.stdout_total == 2
    assert env.store.get_output(job_id, "b") is None
    assert m.output_slot(job_id, "a") is None  # written and forgotten
    # a late chunk for a closed record is dropped
    m.on_output("acme", "a", msg(Output, "a", job_id, channel="stdout", offset=2, data=b"!"))
    await m.flush(outputs=True)
    assert env.store.get_output(job_id, "a").stdout == b"hi"


async def test_v2_result_after_grace_is_stored(env) -> None:
    m = env.manager
    job_id = await m.start_job(env.org, ADMIN, spec(["a"], run_timeout=0))
    m.on_job_message("acme", "a", msg(AckCommit, "a", job_id), "2.0")
    assert m.live_job("acme", job_id).state.status == "timed_out"
    with trio.fail_after(5):
        while job_id in m.live_job_ids():
            await trio.sleep(0.02)
    late = msg(Succeeded, "a", job_id, stdout="late\n")
    assert m.on_job_message("acme", "a", late, "2.0") is False  # not live: broker rehabs
    with trio.fail_after(5):
        while env.store.get_output(job_id, "a") is None:
            await trio.sleep(0.02)
    record = env.store.get_output(job_id, "a")
    assert record.stdout == b"late\n" and record.stderr == b"" and record.closed


async def test_open_output_closes_output_close_timeout_after_the_node_is_final(env) -> None:
    m = env.manager
    job_id = await m.start_job(env.org, ADMIN, spec(["a", "b"], capture=True))
    for node in ("a", "b"):
        m.on_job_message("acme", node, msg(AckCommit, node, job_id), "3.0")
    for node in ("a", "b"):
        m.on_job_message("acme", node, msg(AckRun, node, job_id), "3.0")
        m.on_output("acme", node, msg(Output, node, job_id, channel="stdout", offset=0, data=b"x"))
    assert m.live_job("acme", job_id).state.nodes_by_status() == {"running": ["a", "b"]}
    # the slots opened when the nodes started running; each watches its node beside the job
    assert {n: len(w) for (_, n), w in env.nodes.watchers.items()} == {"a": 2, "b": 2}
    await m.abort_job(env.org, job_id, ADMIN)  # both nodes final (aborted); their records stay open
    slot = m.output_slot(job_id, "a")
    assert slot is not None and not slot.done and slot.close_timer is not None
    m.on_aborted("acme", "b", msg(Aborted, "b", job_id))  # closes b's record at once
    assert m.output_slot(job_id, "b").done
    # a tail chunk after the final status is still kept (lifecycle.md §8)
    m.on_output("acme", "a", msg(Output, "a", job_id, channel="stdout", offset=1, data=b"y"))
    with trio.fail_after(5):  # output_close_timeout is 0.3 s in this fixture
        while m.output_slot(job_id, "a") is not None:
            await trio.sleep(0.02)
    record = env.store.get_output(job_id, "a")
    assert record.stdout == b"xy" and record.closed
    assert env.store.get_output(job_id, "b").closed
    assert not any(env.nodes.watchers.get(("acme", n)) for n in ("a", "b"))


# ---- rollouts (lifecycle.md §12) and the per-job output log ---------------------------------


def runs_sent(env) -> list[str]:
    return [node for node, kind, _ in env.nodes.sent if kind == "run"]


async def test_limit_refills_in_order_and_per_node_deadlines(env) -> None:
    m = env.manager
    names = ["c", "a", "b"]
    job_id = await m.start_job(
        env.org, ADMIN, spec(names, max_concurrency=1, max_errors=0, run_timeout=1)
    )
    for name in names:
        m.on_job_message("acme", name, msg(AckCommit, name, job_id), "3.0")
    live = m.live_job("acme", job_id)
    assert runs_sent(env) == ["c"]
    assert live.phase_timer is None and set(live.node_timers) == {"c"}
    m.on_job_message("acme", "c", msg(AckRun, "c", job_id), "3.0")
    m.on_job_message("acme", "c", msg(Succeeded, "c", job_id, exit_status=0), "3.0")
    assert runs_sent(env) == ["c", "a"]
    assert set(live.node_timers) == {"a"}  # c's deadline was cancelled
    m.on_job_message("acme", "a", msg(AckRun, "a", job_id), "3.0")
    await wait_status(env, job_id, "stopped")  # a's own deadline (1 s): timed_out > budget 0
    want = {"a": "timed_out", "b": "skipped", "c": "succeeded"}
    with trio.move_on_after(5):  # node rows are written in their own batch, maybe after the job's
        while {r.node_name: r.status for r in env.store.get_job_nodes(job_id)} != want:
            await trio.sleep(0.02)
    assert {r.node_name: r.status for r in env.store.get_job_nodes(job_id)} == want
    names_of = [e.name for e in live.log.events]
    assert names_of[-4:] == ["run_complete", "budget_exhausted", "run_skipped", "job_complete"]
    assert live.log.events[0].data["max_concurrency"] == 1
    assert not live.node_timers
    job = env.store.get_job("acme", job_id)
    assert job.max_concurrency == 1 and job.max_errors == 0


async def test_percent_limits_resolve_against_the_node_count(env) -> None:
    m = env.manager
    names = [f"n{i}" for i in range(10)]
    job_id = await m.start_job(env.org, ADMIN, spec(names, max_concurrency="25%"))
    for name in names:
        m.on_job_message("acme", name, msg(AckCommit, name, job_id), "3.0")
    assert runs_sent(env) == ["n0", "n1", "n2"]  # 2.5 → 3
    assert m.live_job("acme", job_id).state.max_concurrency == 3


async def test_abort_names_the_principal(env) -> None:
    m = env.manager
    job_id = await m.start_job(env.org, ADMIN, spec(["a"]))
    live = await m.abort_job(env.org, job_id, Requestor("alice", "user"))
    assert live.job.aborted_by == "alice"
    assert live.log.events[-1].data["aborted_by"] == "alice"
    feed = m.org_feed("acme").log.since(0)
    assert feed[-1].name == "job_complete" and feed[-1].data["aborted_by"] == "alice"
    assert env.store.get_job("acme", job_id).aborted_by == "alice"


async def test_output_log_keeps_arrival_order_and_ends(env) -> None:
    m = env.manager
    job_id = await m.start_job(env.org, ADMIN, spec(["a", "b"], capture=True))
    for name in ("a", "b"):
        m.on_job_message("acme", name, msg(AckCommit, name, job_id), "3.0")
        m.on_job_message("acme", name, msg(AckRun, name, job_id), "3.0")
    out = [("b", "stdout", 0, b"one\n"), ("a", "stderr", 0, b"x"), ("b", "stdout", 4, b"two\n")]
    for node, channel, offset, data in out:
        m.on_output(
            "acme", node, msg(Output, node, job_id, channel=channel, offset=offset, data=data)
        )
    live = m.live_job("acme", job_id)
    arrivals = [(e.node, e.channel, e.start, e.end) for e in live.output_log]
    assert arrivals == [("b", "stdout", 0, 4), ("a", "stderr", 0, 1), ("b", "stdout", 4, 8)]
    m.on_job_message(
        "acme",
        "b",
        msg(Succeeded, "b", job_id, exit_status=0, stdout_bytes=8, stderr_bytes=0),
        "3.0",
    )
    ends = [(e.node, e.channel) for e in live.output_log[3:] if not hasattr(e, "start")]
    assert ends == [("b", "stdout"), ("b", "stderr")]

"""Pure state machine of one job (lifecycle.md §4, §5, §7, §9).

Inputs are method calls (node messages, node down, timers, abort, crash), each taking the
current time; every call returns the ordered list of outputs the caller must carry out:
commands to send, rehab requests, feed events and records to persist. No I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

# Job statuses (lifecycle.md §4.1).
NEW = "new"
VOTING = "voting"
RUNNING = "running"
COMPLETE = "complete"
QUORUM_FAILED = "quorum_failed"
TIMED_OUT = "timed_out"
CRASHED = "crashed"
ABORTED = "aborted"
JOB_STATUSES = (NEW, VOTING, RUNNING, COMPLETE, QUORUM_FAILED, TIMED_OUT, CRASHED, ABORTED)
FINAL_JOB_STATUSES = frozenset({COMPLETE, QUORUM_FAILED, TIMED_OUT, CRASHED, ABORTED})

# Node-in-job statuses (lifecycle.md §4.2); NEW, RUNNING, CRASHED, TIMED_OUT, ABORTED shared.
READY = "ready"
SUCCEEDED = "succeeded"
FAILED = "failed"
NACKED = "nacked"
UNAVAILABLE = "unavailable"
WAS_READY = "was_ready"
NODE_STATUSES = (
    NEW,
    READY,
    RUNNING,
    SUCCEEDED,
    FAILED,
    ABORTED,
    UNAVAILABLE,
    NACKED,
    CRASHED,
    WAS_READY,
    TIMED_OUT,
)
FINAL_NODE_STATUSES = frozenset(
    {SUCCEEDED, FAILED, NACKED, UNAVAILABLE, WAS_READY, CRASHED, TIMED_OUT, ABORTED}
)

# Node message types a job handles (wire-protocol.md §15/§16 dispatch).
JOB_MESSAGE_TYPES = frozenset(
    {"ack_commit", "nack_commit", "ack_run", "nack_run", "succeeded", "failed", "aborted"}
)


@dataclass(slots=True)
class NodeInJob:
    """One node's row in the job (the `job_nodes` record)."""

    name: str
    status: str = NEW
    started_at: float | None = None
    finished_at: float | None = None
    exit_status: int | None = None
    signal: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_NODE_STATUSES


# ---- outputs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendCommand:
    """Send `commit` or `run` to the node."""

    node: str
    msg_type: str


@dataclass(frozen=True, slots=True)
class RehabRequest:
    """Ask the node state to rehab the node; `silent` ones have no `rehab` event."""

    node: str
    silent: bool


@dataclass(frozen=True, slots=True)
class Event:
    """A job feed event (name and data without `timestamp`)."""

    name: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeChanged:
    """The node's row changed; persist `JobState.nodes[node]`."""

    node: str


@dataclass(frozen=True, slots=True)
class JobChanged:
    """The job status changed at `updated_at`; persist it. Final statuses end the job."""

    status: str
    updated_at: float


Output = SendCommand | RehabRequest | Event | NodeChanged | JobChanged


class JobState:
    """Voting, quorum, running, timeouts, abort and crash of one job.

    `nodes` must be distinct names. `start_data` is the `start` event's data (without
    `timestamp`), built by the caller from the job's options.
    """

    def __init__(
        self,
        job_id: str,
        nodes: list[str],
        quorum: int,
        run_timeout: int,
        start_data: dict[str, Any],
    ) -> None:
        self.job_id = job_id
        self.quorum = quorum
        self.run_timeout = run_timeout
        self.start_data = start_data
        self.status = NEW
        self.updated_at: float | None = None
        self.nodes: dict[str, NodeInJob] = {name: NodeInJob(name) for name in nodes}
        self.counts: Counter[str] = Counter({NEW: len(self.nodes)})
        self._out: list[Output] = []

    # ---- queries ----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in FINAL_JOB_STATUSES

    def node_status(self, node: str) -> str | None:
        entry = self.nodes.get(node)
        return entry.status if entry is not None else None

    def nodes_by_status(self) -> dict[str, list[str]]:
        """Status → sorted node names, only statuses with at least one node."""
        result: dict[str, list[str]] = {}
        for entry in self.nodes.values():
            result.setdefault(entry.status, []).append(entry.name)
        for names in result.values():
            names.sort()
        return result

    # ---- inputs -----------------------------------------------------------------------

    def start(
        self,
        now: float,
        idle_nodes: set[str] | frozenset[str],
        replaced: set[str] | frozenset[str] = frozenset(),
    ) -> list[Output]:
        """Start (§4.3): `start` event, `voting`, commit to idle nodes, downs for the rest.

        `replaced` nodes had their node state end (e.g. a new client incarnation) after the job
        was created: they are down like the rest, but no rehab request is sent, since it would
        reach a node state that is not part of this job (and may be running another job).
        """
        if self.status != NEW:
            return []
        self._emit(Event("start", dict(self.start_data)))
        self._set_status(VOTING, now)
        down: list[str] = []
        for name in self.nodes:
            if name in idle_nodes and name not in replaced:
                self._emit(SendCommand(name, "commit"))
            else:
                down.append(name)
        for name in down:
            self._down_while_voting(self.nodes[name], now, rehab=name not in replaced)
        self._check_phase_end(now)
        return self._take()

    def message(
        self,
        node: str,
        msg_type: str,
        now: float,
        *,
        exit_status: int | None = None,
        signal: str | None = None,
    ) -> list[Output]:
        """A job message (or `aborted`) from a member node naming this job (§5.1, §5.2)."""
        entry = self.nodes.get(node)
        if entry is None or self.status not in (VOTING, RUNNING):
            return []
        if self.status == VOTING:
            self._message_while_voting(entry, msg_type, now)
        else:
            self._message_while_running(entry, msg_type, now, exit_status, signal)
        self._check_phase_end(now)
        return self._take()

    def node_down(self, node: str, now: float) -> list[Output]:
        """The node's state ended (or it was not idle at start)."""
        entry = self.nodes.get(node)
        if entry is None or entry.final or self.status not in (VOTING, RUNNING):
            return []
        if self.status == VOTING:
            self._down_while_voting(entry, now)
        else:
            self._crash_node(entry, now)
        self._check_phase_end(now)
        return self._take()

    def voting_timeout(self, now: float) -> list[Output]:
        """The voting timer fired: nodes still `new` are out (silent rehab)."""
        if self.status != VOTING:
            return []
        for entry in self.nodes.values():
            if entry.status == NEW:
                self._emit(Event("quorum_vote", {"node": entry.name, "status": "voting_timeout"}))
                self._set_node(entry, UNAVAILABLE, now)
                self._emit(RehabRequest(entry.name, silent=True))
        self._check_phase_end(now)
        return self._take()

    def run_timer(self, now: float) -> list[Output]:
        """The run timer fired: `ready`/`running` nodes time out (silent rehab), job `timed_out`."""
        if self.status != RUNNING:
            return []
        self._time_out(now)
        return self._take()

    def abort(self, now: float) -> list[Output]:
        """Abort through the API (§7): unfinished nodes `aborted` with silent rehab."""
        if self.finished:
            return []
        for entry in self.nodes.values():
            if not entry.final:
                self._set_node(entry, ABORTED, now)
                self._emit(RehabRequest(entry.name, silent=True))
        self._finish(ABORTED, now)
        return self._take()

    def crash(self, now: float, *, rehab: bool = True) -> list[Output]:
        """The job's handling failed or the server stops (§9): non-final nodes `crashed`."""
        if self.finished:
            return []
        self._out.clear()  # outputs of a failed input are not carried out
        for entry in self.nodes.values():
            if not entry.final:
                self._set_node(entry, CRASHED, now)
            if rehab:
                self._emit(RehabRequest(entry.name, silent=True))
        self._finish(CRASHED, now)
        return self._take()

    # ---- voting -----------------------------------------------------------------------

    def _message_while_voting(self, entry: NodeInJob, msg_type: str, now: float) -> None:
        name = entry.name
        status = entry.status
        if msg_type == "ack_commit":
            if status == NEW:
                self._set_node(entry, READY, now)
                self._vote(name, "success")
            elif status == READY:
                self._vote(name, "unexpected_commit")
            else:
                self._rehab(name)
                self._vote(name, "client_died_while_voting")
        elif msg_type == "nack_commit":
            if status == NEW:
                self._set_node(entry, NACKED, now)
                self._vote(name, "failure")
            elif status == READY:
                self._set_node(entry, UNAVAILABLE, now)
                self._rehab(name)
                self._vote(name, "lost_availibility")
            else:
                self._rehab(name)
                self._vote(name, "client_died_while_voting")
        elif msg_type == "aborted":
            if not entry.final:
                self._set_node(entry, UNAVAILABLE, now)
                self._rehab(name)
        elif entry.final:
            self._rehab(name)
        else:
            self._set_node(entry, UNAVAILABLE, now)
            self._rehab(name)

    def _down_while_voting(self, entry: NodeInJob, now: float, *, rehab: bool = True) -> None:
        self._vote(entry.name, "down")
        self._set_node(entry, UNAVAILABLE, now)
        if rehab:
            self._rehab(entry.name)
        else:  # the event stays, as when a node state ends while voting (the request is moot)
            self._emit(Event("rehab", {"node": entry.name}))

    def _end_voting(self, now: float) -> None:
        ready = [e for e in self.nodes.values() if e.status == READY]
        if len(ready) >= self.quorum:
            self._emit(Event("quorum_succeeded", {}))
            self._set_status(RUNNING, now)
            for entry in ready:
                self._emit(SendCommand(entry.name, "run"))
            if self.run_timeout == 0 and ready:
                self._time_out(now)
        else:
            for entry in ready:
                self._set_node(entry, WAS_READY, now)
                self._emit(RehabRequest(entry.name, silent=True))
            self._finish(QUORUM_FAILED, now)

    # ---- running ----------------------------------------------------------------------

    def _message_while_running(
        self,
        entry: NodeInJob,
        msg_type: str,
        now: float,
        exit_status: int | None,
        signal: str | None,
    ) -> None:
        name = entry.name
        status = entry.status
        if entry.final:
            if msg_type == "aborted":
                return
            if msg_type == "ack_run":
                self._run_complete(name, "client_died_while_running")
                self._rehab(name)
            else:
                self._rehab(name)
                self._run_complete(name, "client_died_while_running")
            return
        if msg_type == "ack_run":
            if status == READY:
                entry.started_at = now
                self._emit(Event("run_start", {"node": name}))
                self._set_node(entry, RUNNING, now)
            return
        if msg_type == "nack_run":
            self._set_node(entry, FAILED, now)
            self._rehab(name)
            self._run_complete(
                name, "run_nacked" if status == READY else "run_nacked_while_running"
            )
        elif msg_type in ("succeeded", "failed") and status == RUNNING:
            entry.exit_status = exit_status
            entry.signal = signal
            if msg_type == "succeeded":
                self._set_node(entry, SUCCEEDED, now)
                self._run_complete(name, "success")
            else:
                self._set_node(entry, FAILED, now)
                self._run_complete(name, "failure")
        else:
            self._crash_node(entry, now)

    def _crash_node(self, entry: NodeInJob, now: float) -> None:
        self._set_node(entry, CRASHED, now)
        self._rehab(entry.name)
        self._run_complete(entry.name, "crashed")

    def _time_out(self, now: float) -> None:
        for entry in self.nodes.values():
            if entry.status in (READY, RUNNING):
                self._set_node(entry, TIMED_OUT, now)
                self._emit(RehabRequest(entry.name, silent=True))
        self._finish(TIMED_OUT, now)

    # ---- common -----------------------------------------------------------------------

    def _check_phase_end(self, now: float) -> None:
        if self.status == VOTING and self.counts[NEW] == 0:
            self._end_voting(now)
        if self.status == RUNNING and self.counts[READY] + self.counts[RUNNING] == 0:
            self._finish(COMPLETE, now)

    def _finish(self, status: str, now: float) -> None:
        self._set_status(status, now)
        self._emit(Event("job_complete", {"status": status}))

    def _set_status(self, status: str, now: float) -> None:
        self.status = status
        self.updated_at = now
        self._emit(JobChanged(status, now))

    def _set_node(self, entry: NodeInJob, status: str, now: float) -> None:
        self.counts[entry.status] -= 1
        self.counts[status] += 1
        entry.status = status
        if status in FINAL_NODE_STATUSES:
            entry.finished_at = now
        self._emit(NodeChanged(entry.name))

    def _vote(self, node: str, status: str) -> None:
        self._emit(Event("quorum_vote", {"node": node, "status": status}))

    def _run_complete(self, node: str, status: str) -> None:
        self._emit(Event("run_complete", {"node": node, "status": status}))

    def _rehab(self, node: str) -> None:
        self._emit(RehabRequest(node, silent=False))
        self._emit(Event("rehab", {"node": node}))

    def _emit(self, output: Output) -> None:
        self._out.append(output)

    def _take(self) -> list[Output]:
        out, self._out = self._out, []
        return out

"""Pure state machine of one job (lifecycle.md §4, §5, §7, §9, §12).

Inputs are method calls (node messages, node down, timers, abort, crash), each taking the
current time; every call returns the ordered list of outputs the caller must carry out:
commands to send, rehab requests, feed events and records to persist. No I/O, no clock.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from pushjobs.protocol.vocabulary import (
    FINAL_JOB_STATUSES,
    FINAL_NODE_STATUSES,
    JobStatus,
    MessageType,
    NodeStatus,
)


@dataclass(slots=True)
class NodeInJob:
    """One node's row in the job (the `job_nodes` record)."""

    name: str
    status: NodeStatus = NodeStatus.NEW
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
    msg_type: MessageType


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

    status: JobStatus
    updated_at: float


@dataclass(frozen=True, slots=True)
class NodeDeadline:
    """Call `node_run_timeout(node)` after `delay` seconds (a job with `max_concurrency`)."""

    node: str
    delay: float


Output = SendCommand | RehabRequest | Event | NodeChanged | JobChanged | NodeDeadline

ERROR_STATUSES = frozenset({NodeStatus.FAILED, NodeStatus.CRASHED, NodeStatus.TIMED_OUT})


class JobState:
    """Voting, quorum, running, timeouts, abort and crash of one job.

    `nodes` must be distinct names, in the job's order. `start_data` is the `start` event's data
    (without `timestamp`), built by the caller from the job's options. `max_concurrency` and
    `max_errors` are node counts (percentages already resolved) or None (lifecycle.md §12).
    """

    def __init__(
        self,
        job_id: str,
        nodes: list[str],
        quorum: int,
        run_timeout: int,
        start_data: dict[str, Any],
        *,
        max_concurrency: int | None = None,
        max_errors: int | None = None,
    ) -> None:
        self.job_id = job_id
        self.quorum = quorum
        self.run_timeout = run_timeout
        self.start_data = start_data
        self.max_concurrency = max_concurrency
        self.max_errors = max_errors
        self.budget_exhausted = False
        self._waiting: deque[str] = deque()  # `ready` nodes not sent `run` yet, in job order
        self._in_flight: set[str] = set()  # sent `run`, not final yet
        self.status: JobStatus = JobStatus.NEW
        self.updated_at: float | None = None
        self.nodes: dict[str, NodeInJob] = {name: NodeInJob(name) for name in nodes}
        self.counts: Counter[NodeStatus] = Counter({NodeStatus.NEW: len(self.nodes)})
        self._out: list[Output] = []

    # ---- queries ----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in FINAL_JOB_STATUSES

    def node_status(self, node: str) -> NodeStatus | None:
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
        if self.status != JobStatus.NEW:
            return []
        self._emit(Event("start", dict(self.start_data)))
        self._set_status(JobStatus.VOTING, now)
        down: list[str] = []
        for name in self.nodes:
            if name in idle_nodes and name not in replaced:
                self._emit(SendCommand(name, MessageType.COMMIT))
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
        if entry is None or self.status not in (JobStatus.VOTING, JobStatus.RUNNING):
            return []
        if self.status == JobStatus.VOTING:
            self._message_while_voting(entry, msg_type, now)
        else:
            self._message_while_running(entry, msg_type, now, exit_status, signal)
        self._check_phase_end(now)
        return self._take()

    def node_down(self, node: str, now: float) -> list[Output]:
        """The node's state ended (or it was not idle at start)."""
        entry = self.nodes.get(node)
        if entry is None or entry.final or self.status not in (JobStatus.VOTING, JobStatus.RUNNING):
            return []
        if self.status == JobStatus.VOTING:
            self._down_while_voting(entry, now)
        else:
            self._crash_node(entry, now)
        self._check_phase_end(now)
        return self._take()

    def voting_timeout(self, now: float) -> list[Output]:
        """The voting timer fired: nodes still `new` are out (silent rehab)."""
        if self.status != JobStatus.VOTING:
            return []
        for entry in self.nodes.values():
            if entry.status == NodeStatus.NEW:
                self._emit(Event("quorum_vote", {"node": entry.name, "status": "voting_timeout"}))
                self._set_node(entry, NodeStatus.UNAVAILABLE, now)
                self._emit(RehabRequest(entry.name, silent=True))
        self._check_phase_end(now)
        return self._take()

    def run_timer(self, now: float) -> list[Output]:
        """The run timer fired: `ready`/`running` nodes time out (silent rehab), job `timed_out`."""
        if self.status != JobStatus.RUNNING:
            return []
        self._time_out(now)
        return self._take()

    def node_run_timeout(self, node: str, now: float) -> list[Output]:
        """A node's own run deadline passed (§12.2): it is `timed_out`, the job goes on."""
        entry = self.nodes.get(node)
        if (
            self.status != JobStatus.RUNNING
            or entry is None
            or entry.final
            or node not in self._in_flight
        ):
            return []
        self._set_node(entry, NodeStatus.TIMED_OUT, now)
        self._emit(RehabRequest(node, silent=True))
        self._run_complete(node, "timed_out")
        self._check_phase_end(now)
        return self._take()

    def abort(self, now: float, by: str | None = None) -> list[Output]:
        """Abort through the API (§7): unfinished nodes `aborted` with silent rehab. `by` is the
        principal, named in `job_complete` as `aborted_by`."""
        if self.finished:
            return []
        for entry in self.nodes.values():
            if not entry.final:
                self._set_node(entry, NodeStatus.ABORTED, now)
                self._emit(RehabRequest(entry.name, silent=True))
        self._finish(JobStatus.ABORTED, now, {"aborted_by": by} if by is not None else None)
        return self._take()

    def crash(self, now: float, *, rehab: bool = True) -> list[Output]:
        """The job's handling failed or the server stops (§9): non-final nodes `crashed`."""
        if self.finished:
            return []
        self._out.clear()  # outputs of a failed input are not carried out
        for entry in self.nodes.values():
            if not entry.final:
                self._set_node(entry, NodeStatus.CRASHED, now)
            if rehab:
                self._emit(RehabRequest(entry.name, silent=True))
        self._finish(JobStatus.CRASHED, now)
        return self._take()

    # ---- voting -----------------------------------------------------------------------

    def _message_while_voting(self, entry: NodeInJob, msg_type: str, now: float) -> None:
        name = entry.name
        status = entry.status
        if msg_type == MessageType.ACK_COMMIT:
            if status == NodeStatus.NEW:
                self._set_node(entry, NodeStatus.READY, now)
                self._vote(name, "success")
            elif status == NodeStatus.READY:
                self._vote(name, "unexpected_commit")
            else:
                self._rehab(name)
                self._vote(name, "client_died_while_voting")
        elif msg_type == MessageType.NACK_COMMIT:
            if status == NodeStatus.NEW:
                self._set_node(entry, NodeStatus.NACKED, now)
                self._vote(name, "failure")
            elif status == NodeStatus.READY:
                self._set_node(entry, NodeStatus.UNAVAILABLE, now)
                self._rehab(name)
                self._vote(name, "lost_availibility")
            else:
                self._rehab(name)
                self._vote(name, "client_died_while_voting")
        elif msg_type == MessageType.ABORTED:
            if not entry.final:
                self._set_node(entry, NodeStatus.UNAVAILABLE, now)
                self._rehab(name)
        elif entry.final:
            self._rehab(name)
        else:
            self._set_node(entry, NodeStatus.UNAVAILABLE, now)
            self._rehab(name)

    def _down_while_voting(self, entry: NodeInJob, now: float, *, rehab: bool = True) -> None:
        self._vote(entry.name, "down")
        self._set_node(entry, NodeStatus.UNAVAILABLE, now)
        if rehab:
            self._rehab(entry.name)
        else:  # the event stays, as when a node state ends while voting (the request is moot)
            self._emit(Event("rehab", {"node": entry.name}))

    def _end_voting(self, now: float) -> None:
        ready = [e for e in self.nodes.values() if e.status == NodeStatus.READY]
        if len(ready) >= self.quorum:
            self._emit(Event("quorum_succeeded", {}))
            self._set_status(JobStatus.RUNNING, now)
            self._waiting.extend(entry.name for entry in ready)
            self._refill()
            if self.run_timeout == 0 and ready:
                self._time_out(now)
        else:
            for entry in ready:
                self._set_node(entry, NodeStatus.WAS_READY, now)
                self._emit(RehabRequest(entry.name, silent=True))
            self._finish(JobStatus.QUORUM_FAILED, now)

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
            if msg_type == MessageType.ABORTED:
                return
            if msg_type == MessageType.ACK_RUN:
                self._run_complete(name, "client_died_while_running")
                self._rehab(name)
            else:
                self._rehab(name)
                self._run_complete(name, "client_died_while_running")
            return
        if msg_type == MessageType.ACK_RUN:
            if status == NodeStatus.READY:
                self._in_flight.add(name)  # it runs, whether or not it was sent `run` yet
                entry.started_at = now
                self._emit(Event("run_start", {"node": name}))
                self._set_node(entry, NodeStatus.RUNNING, now)
            return
        if msg_type == MessageType.NACK_RUN:
            self._set_node(entry, NodeStatus.FAILED, now)
            self._rehab(name)
            self._run_complete(
                name, "run_nacked" if status == NodeStatus.READY else "run_nacked_while_running"
            )
        elif (
            msg_type in (MessageType.SUCCEEDED, MessageType.FAILED) and status == NodeStatus.RUNNING
        ):
            entry.exit_status = exit_status
            entry.signal = signal
            if msg_type == MessageType.SUCCEEDED:
                self._set_node(entry, NodeStatus.SUCCEEDED, now)
                self._run_complete(name, "success")
            else:
                self._set_node(entry, NodeStatus.FAILED, now)
                self._run_complete(name, "failure")
        else:
            self._crash_node(entry, now)

    def _crash_node(self, entry: NodeInJob, now: float) -> None:
        self._set_node(entry, NodeStatus.CRASHED, now)
        self._rehab(entry.name)
        self._run_complete(entry.name, "crashed")

    def _time_out(self, now: float) -> None:
        for entry in self.nodes.values():
            if entry.status in (NodeStatus.READY, NodeStatus.RUNNING):
                self._set_node(entry, NodeStatus.TIMED_OUT, now)
                self._emit(RehabRequest(entry.name, silent=True))
        self._finish(JobStatus.TIMED_OUT, now)

    # ---- concurrency limit and error budget (§12) ----------------------------------------

    def _refill(self) -> None:
        """Send `run` to waiting nodes while fewer than `max_concurrency` are in flight."""
        limit = self.max_concurrency
        waiting = self._waiting
        in_flight = self._in_flight
        while waiting and (limit is None or len(in_flight) < limit):
            name = waiting.popleft()
            if self.nodes[name].status != NodeStatus.READY or name in in_flight:
                continue  # went down (or started) while waiting
            in_flight.add(name)
            self._emit(SendCommand(name, MessageType.RUN))
            if limit is not None and self.run_timeout > 0:
                self._emit(NodeDeadline(name, float(self.run_timeout)))

    def _check_budget(self, now: float) -> None:
        """Past the error budget: no more `run`; every waiting node is `skipped`."""
        if self.max_errors is None or self.budget_exhausted:
            return
        errors = sum(self.counts[status] for status in ERROR_STATUSES)
        if errors <= self.max_errors:
            return
        self.budget_exhausted = True
        self._emit(Event("budget_exhausted", {"errors": errors, "max_errors": self.max_errors}))
        while self._waiting:
            entry = self.nodes[self._waiting.popleft()]
            if entry.status == NodeStatus.READY and entry.name not in self._in_flight:
                self._set_node(entry, NodeStatus.SKIPPED, now)
                self._emit(Event("run_skipped", {"node": entry.name}))
                self._emit(RehabRequest(entry.name, silent=True))

    # ---- common -----------------------------------------------------------------------

    def _check_phase_end(self, now: float) -> None:
        if self.status == JobStatus.VOTING and self.counts[NodeStatus.NEW] == 0:
            self._end_voting(now)
        if self.status != JobStatus.RUNNING:
            return
        self._check_budget(now)
        if not self.budget_exhausted:
            self._refill()
        if self.counts[NodeStatus.READY] + self.counts[NodeStatus.RUNNING] == 0:
            self._finish(JobStatus.STOPPED if self.budget_exhausted else JobStatus.COMPLETE, now)

    def _finish(self, status: JobStatus, now: float, extra: dict[str, Any] | None = None) -> None:
        self._set_status(status, now)
        self._emit(Event("job_complete", {"status": status, **(extra or {})}))

    def _set_status(self, status: JobStatus, now: float) -> None:
        self.status = status
        self.updated_at = now
        self._emit(JobChanged(status, now))

    def _set_node(self, entry: NodeInJob, status: NodeStatus, now: float) -> None:
        self.counts[entry.status] -= 1
        self.counts[status] += 1
        entry.status = status
        if status in FINAL_NODE_STATUSES:
            entry.finished_at = now
            self._in_flight.discard(entry.name)
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

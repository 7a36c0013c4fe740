"""Job progress derived from feed events or polled job objects (cli.md §3.5). Pure, no I/O.

With a rollout limit (lifecycle.md §12) the progress also knows the concurrency limit and the
error budget, resolved against the node count as the server resolves them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container
from typing import Any

from pushjobs.cli.jobspec import resolve_concurrency, resolve_errors
from pushjobs.protocol.vocabulary import (
    FINAL_JOB_STATUSES,
    FINAL_NODE_STATUSES,
    OPEN_NODE_STATUSES,
    JobStatus,
    NodeStatus,
)

# Display order of per-status counts: outcomes first, then what is still in flight.
STATUS_ORDER: tuple[NodeStatus, ...] = (
    NodeStatus.SUCCEEDED,
    NodeStatus.FAILED,
    NodeStatus.CRASHED,
    NodeStatus.TIMED_OUT,
    NodeStatus.ABORTED,
    NodeStatus.SKIPPED,
    NodeStatus.NACKED,
    NodeStatus.UNAVAILABLE,
    NodeStatus.WAS_READY,
    NodeStatus.RUNNING,
    NodeStatus.READY,
    NodeStatus.NEW,
)

# `quorum_vote` / `run_complete` statuses (lifecycle.md §6.1) → the node's new status.
VOTE_STATES = {
    "success": NodeStatus.READY,
    "failure": NodeStatus.NACKED,
    "down": NodeStatus.UNAVAILABLE,
    "voting_timeout": NodeStatus.UNAVAILABLE,
    "lost_availibility": NodeStatus.UNAVAILABLE,
    "client_died_while_voting": NodeStatus.UNAVAILABLE,
}
RUN_STATES = {
    "success": NodeStatus.SUCCEEDED,
    "failure": NodeStatus.FAILED,
    "run_nacked": NodeStatus.FAILED,
    "run_nacked_while_running": NodeStatus.FAILED,
    "crashed": NodeStatus.CRASHED,
    "client_died_while_running": NodeStatus.CRASHED,
    "timed_out": NodeStatus.TIMED_OUT,  # a node's own deadline (lifecycle.md §12.2)
}
# Nodes that count against the error budget (lifecycle.md §12.3).
ERROR_NODE_STATUSES = frozenset({NodeStatus.FAILED, NodeStatus.CRASHED, NodeStatus.TIMED_OUT})
# What the server does to nodes still in flight when the job ends without per-node events
# (lifecycle.md §4.4–§4.5, §7); the final GET confirms it.
END_STATES: dict[str, tuple[frozenset[NodeStatus], NodeStatus]] = {
    JobStatus.QUORUM_FAILED: (frozenset({NodeStatus.READY}), NodeStatus.WAS_READY),
    JobStatus.TIMED_OUT: (frozenset({NodeStatus.READY, NodeStatus.RUNNING}), NodeStatus.TIMED_OUT),
    JobStatus.ABORTED: (OPEN_NODE_STATUSES, NodeStatus.ABORTED),
    JobStatus.STOPPED: (frozenset({NodeStatus.READY}), NodeStatus.SKIPPED),
}


def status_order_key(status: str) -> tuple[int, str]:
    """Sort key putting node statuses in display order."""
    try:
        return STATUS_ORDER.index(status), status
    except ValueError:
        return len(STATUS_ORDER), status


class JobProgress:
    """Node-in-job states and the job phase, updated from events or from job objects."""

    def __init__(self, job_id: str, nodes: list[str] | None = None) -> None:
        self.job_id = job_id
        self.nodes: dict[str, str] = dict.fromkeys(nodes or [], NodeStatus.NEW)
        self.phase: str = JobStatus.NEW
        self.node_count = len(self.nodes)
        self.max_concurrency: int | str | None = None  # as given (int or "N%")
        self.max_errors: int | str | None = None
        self.budget_exhausted = False

    @property
    def finished(self) -> bool:
        return self.phase in FINAL_JOB_STATUSES

    @property
    def total(self) -> int:
        return max(self.node_count, len(self.nodes))

    def _set(self, node: Any, state: str) -> None:
        if isinstance(node, str):
            self.nodes[node] = state

    def apply_event(self, name: str, data: Any) -> None:
        """Apply one job-feed event (`lifecycle.md` §6.1); unknown events change nothing."""
        if not isinstance(data, dict):
            data = {}
        if name == "start":
            for node in self.nodes:
                self.nodes[node] = NodeStatus.NEW
            if isinstance(data.get("node_count"), int):
                self.node_count = data["node_count"]
            self._limits(data)
            self.phase = JobStatus.VOTING
        elif name == "quorum_vote":
            state = VOTE_STATES.get(data.get("status", ""))
            if state:
                self._set(data.get("node"), state)
        elif name == "quorum_succeeded":
            self.phase = JobStatus.RUNNING
        elif name == "run_start":
            self._set(data.get("node"), NodeStatus.RUNNING)
            self.phase = JobStatus.RUNNING
        elif name == "run_complete":
            state = RUN_STATES.get(data.get("status", ""))
            if state:
                self._set(data.get("node"), state)
        elif name == "run_skipped":
            self._set(data.get("node"), NodeStatus.SKIPPED)
        elif name == "budget_exhausted":
            self.budget_exhausted = True
        elif name == "job_complete":
            status = data.get("status")
            if isinstance(status, str):
                self._finish(status)
        elif name == "summary":
            self.apply_job(data)

    def _limits(self, data: dict[str, Any]) -> None:
        for key in ("max_concurrency", "max_errors"):
            value = data.get(key)
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                setattr(self, key, value)

    def _finish(self, status: str) -> None:
        self.phase = status
        if status in END_STATES:
            from_states, to_state = END_STATES[status]
            for node, state in self.nodes.items():
                if state in from_states:
                    self.nodes[node] = to_state

    def apply_job(self, job: Any) -> None:
        """Replace the state with a job object (`http-api.md` §7.5) from a poll or a summary."""
        if not isinstance(job, dict):
            return
        nodes = job.get("nodes")
        if isinstance(nodes, dict):
            for status, names in nodes.items():
                if isinstance(names, list):
                    for name in names:
                        self._set(name, status)
        self._limits(job)
        status = job.get("status")
        if isinstance(status, str):
            self.phase = status
        if status == JobStatus.STOPPED:
            self.budget_exhausted = True

    def counts(self) -> list[tuple[str, int]]:
        """Non-zero node counts per status in display order."""
        c = Counter(self.nodes.values())
        return sorted(((s, n) for s, n in c.items() if n), key=lambda sn: status_order_key(sn[0]))

    def completed(self) -> int:
        return self.count(FINAL_NODE_STATUSES)

    def in_progress(self) -> int:
        return self.count(OPEN_NODE_STATUSES)

    def count(self, statuses: Container[str]) -> int:
        """How many nodes are in one of `statuses`."""
        return sum(1 for s in self.nodes.values() if s in statuses)

    @property
    def limit(self) -> int | None:
        """The concurrency limit L, resolved (None without `max_concurrency`)."""
        return resolve_concurrency(self.max_concurrency, self.total)

    @property
    def budget(self) -> int | None:
        """The error budget E, resolved (None without `max_errors`)."""
        return resolve_errors(self.max_errors, self.total)

    def limits_label(self) -> str:
        """`running 10/400 (limit 10) · failed 1 of 5 allowed`; empty without limits.

        "failed" counts every node that uses up the budget: failed, crashed and timed_out.
        """
        parts = []
        if self.limit is not None:
            running = self.count({NodeStatus.RUNNING})
            parts.append(f"running {running}/{self.total} (limit {self.limit})")
        if self.budget is not None:
            part = f"failed {self.count(ERROR_NODE_STATUSES)} of {self.budget} allowed"
            if self.budget_exhausted and not self.finished:
                part += " (stopping)"
            parts.append(part)
        return " · ".join(parts)

    def plain_line(self) -> str | None:
        """The knife-style progress line for the current state (None while `new`)."""
        if self.phase == JobStatus.VOTING:
            return "Voting."
        if self.phase == JobStatus.RUNNING:
            line = f"Running ({self.in_progress()}/{self.total} in progress) ..."
            limits = self.limits_label()
            return f"{line} {limits}" if limits else line
        if self.finished:
            return self.phase.capitalize() + "."
        return None

    def counts_label(self) -> str:
        return " · ".join(f"{s} {n}" for s, n in self.counts())

"""What the manager keeps in memory, and what feed readers wait on.

`LiveJob` wraps one job's pure `JobState` with its row, event log and timers; `OutputSlot` wraps
one node's pure `OutputSlotState` with its close timer; `OrgFeed` is an organization's recent
`start`/`job_complete` events. Each has a `Notifier` that the HTTP feeds wait on. Node downs
reach a live job or slot as `NodeWatcher` calls and go straight back to the manager.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from pushjobs.server.jobs.events import JobEventLog, OrgFeedLog

if TYPE_CHECKING:
    from pushjobs.server.jobs.output import NodeOutput
    from pushjobs.server.jobs.output_slots import OutputSlotState
    from pushjobs.server.jobs.state import JobState
    from pushjobs.server.jobs.timers import Timer
    from pushjobs.server.store.records import Job


class Notifier:
    """A re-armed trio.Event: `notify` wakes everyone waiting on `event`, then re-arms it."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = trio.Event()

    def notify(self) -> None:
        event, self.event = self.event, trio.Event()
        event.set()


@dataclass(frozen=True, slots=True)
class OutputArrival:
    """Bytes `start`..`end` of a node's channel arrived (the per-job output feed's order)."""

    node: str
    channel: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class OutputEnd:
    """A node's channel is complete: its output record closed."""

    node: str
    channel: str


class LiveJob:
    """One job in memory (running, or finished less than `wait_complete_time` ago)."""

    def __init__(
        self, job: Job, state: JobState, on_node_down: Callable[[LiveJob, str], None]
    ) -> None:
        self.job = job
        self.state = state
        self.log = JobEventLog()
        self.changed = Notifier()
        self.started = trio.Event()
        self.phase_timer: Timer | None = None
        self.finishing = False
        self.closed_outputs: set[str] = set()  # nodes whose output slot is done
        self.command_fields: dict[str, dict[str, Any]] = {}  # see JobManager._send
        # Capture jobs: every node's output growth and ends in arrival order, for the per-job
        # output feed (http/output_feed.py); `output_changed` wakes its readers.
        self.output_log: list[OutputArrival | OutputEnd] = []
        self.output_changed = Notifier()
        self.node_timers: dict[str, Timer] = {}  # per-node run deadlines (max_concurrency)
        self._on_node_down = on_node_down

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def org(self) -> str:
        return self.job.org_name

    def output_may_open(self, node: str) -> bool:
        """True when the node is in the job and has not had its output slot yet."""
        return node in self.state.nodes and node not in self.closed_outputs

    def node_down(self, org: str, node: str) -> None:
        """NodeWatcher: the node's state ended."""
        self._on_node_down(self, node)


class OutputSlot:
    """The live output of (job, node): its pure lifecycle, close timer and readers' notifier."""

    __slots__ = ("_on_node_down", "changed", "close_timer", "logged", "state")

    def __init__(self, state: OutputSlotState, on_node_down: Callable[[OutputSlot], None]) -> None:
        self.state = state
        self.changed = Notifier()
        self.close_timer: Timer | None = None
        # Per channel: (generation, length) of the stored bytes already in the job's output log.
        self.logged: dict[str, tuple[int, int]] = {}
        self._on_node_down = on_node_down

    @property
    def org(self) -> str:
        return self.state.org

    @property
    def job_id(self) -> str:
        return self.state.job_id

    @property
    def node(self) -> str:
        return self.state.node

    @property
    def record(self) -> NodeOutput | None:
        return self.state.record

    @property
    def done(self) -> bool:
        return self.state.done

    def node_down(self, org: str, node: str) -> None:
        """NodeWatcher: the node went down while the record was open → closed."""
        self._on_node_down(self)


class OrgFeed:
    """One organization's feed: its retained `start`/`job_complete` events and notifier."""

    __slots__ = ("changed", "log")

    def __init__(self, expiration: float) -> None:
        self.log = OrgFeedLog(expiration)
        self.changed = Notifier()

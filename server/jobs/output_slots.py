"""One node's captured output in one job, from open to forgotten (lifecycle.md §8). Pure.

An `OutputSlotState` opens when a capture job's node starts running (or when its first chunk or
result arrives first). It holds the node's `NodeOutput` once there is something to store, and
closes exactly once: at the node's `succeeded`/`failed`, its `aborted`, the node going down,
server shutdown, or `output_close_timeout` after the node reached a final status. Every input
takes what it needs (`now` included: nothing here reads a clock) and returns the ordered effects
the caller carries out: watch the node, set or cancel the close timer, write the record and wake
its readers, drop a slot that never had a record.

Each change bumps `version`; a write of the record takes a `SlotWrite` tagged with it, and a
closed slot is forgotten once the store holds its last version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pushjobs.protocol.messages import Failed, Succeeded
from pushjobs.protocol.messages import Output as OutputMessage
from pushjobs.server.jobs.output import NodeOutput
from pushjobs.server.jobs.state import NodeInJob
from pushjobs.server.store.records import OutputDelta

CLOSE_TIMEOUT_REASON = "output_close_timeout"
NODE_DOWN_REASON = "node down"

# ---- outputs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchNode:
    """Watch the node: its state ending closes the slot (`node_down`)."""


@dataclass(frozen=True, slots=True)
class UnwatchNode:
    """Stop watching the node."""


@dataclass(frozen=True, slots=True)
class ScheduleClose:
    """Call `close(CLOSE_TIMEOUT_REASON)` in `delay` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class CancelClose:
    """Cancel the close timer."""


@dataclass(frozen=True, slots=True)
class GapMismatch:
    """A chunk's `omitted_bytes` disagrees with the gap it revealed (worth a log line)."""

    channel: str
    omitted_bytes: int
    gap: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The slot closed: the node gets no other output slot in this job."""

    reason: str
    with_record: bool


@dataclass(frozen=True, slots=True)
class MarkDirty:
    """The record changed: write it, wake its readers."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Closed without a record: nothing to write; drop the slot, wake its readers."""


@dataclass(frozen=True, slots=True)
class OutputActivity:
    """A slot or record appeared or closed: wake the output streams waiting for one."""


SlotOutput = (
    WatchNode
    | UnwatchNode
    | ScheduleClose
    | CancelClose
    | GapMismatch
    | Closed
    | MarkDirty
    | Forget
    | OutputActivity
)


@dataclass(frozen=True, slots=True)
class SlotWrite:
    """What the store lacks of a record, the slot version it reflects, and the call to make
    once the store has it."""

    delta: OutputDelta
    version: int
    mark_written: Callable[[], None]


# ---- result messages -----------------------------------------------------------------


def carries_v2_output(msg: Succeeded | Failed, version: str) -> bool:
    """A protocol 2.0 result with `stdout` or `stderr`: the node's whole output."""
    return version == "2.0" and (msg.stdout is not None or msg.stderr is not None)


def result_updates_output(msg: Succeeded | Failed, version: str, *, capture: bool) -> bool:
    """Does this result update the node's output record (lifecycle.md §8)?

    A 2.0 result with output always does; a 3.0 result does in a capture job.
    """
    return carries_v2_output(msg, version) or (version != "2.0" and capture)


def apply_result(record: NodeOutput, msg: Succeeded | Failed, version: str) -> None:
    """Put what a result says about the output into the record (it closes it afterwards)."""
    if carries_v2_output(msg, version):
        record.set_v2_results(msg.stdout, msg.stderr)
    elif version != "2.0":
        record.set_v3_totals(msg.stdout_bytes, msg.stderr_bytes)


# ---- the slot ------------------------------------------------------------------------


class OutputSlotState:
    """Output bookkeeping of (job, node): the record once one exists, and where it stands."""

    __slots__ = (
        "cap",
        "close_scheduled",
        "close_timeout",
        "done",
        "job_id",
        "node",
        "org",
        "record",
        "version",
        "watching",
        "written",
    )

    def __init__(self, org: str, job_id: str, node: str, *, cap: int, close_timeout: float) -> None:
        self.org = org
        self.job_id = job_id
        self.node = node
        self.cap = cap
        self.close_timeout = close_timeout
        self.record: NodeOutput | None = None
        self.version = 0  # bumped at every change; forgotten once `written` catches up
        self.written = 0
        self.watching = False
        self.close_scheduled = False
        self.done = False  # closed, or given up without a record

    # -- inputs ----------

    def open(self, *, node_online: bool, entry: NodeInJob | None, now: float) -> list[SlotOutput]:
        """The slot was created: watch the node while it has a state; close timer if final."""
        outputs: list[SlotOutput] = []
        if node_online:
            self.watching = True
            outputs.append(WatchNode())
        if entry is not None:
            outputs += self.node_changed(entry, now)
        outputs.append(OutputActivity())
        return outputs

    def node_changed(self, entry: NodeInJob, now: float) -> list[SlotOutput]:
        """The node's row changed: once final, close `close_timeout` after its `finished_at`
        (or after now when it has none)."""
        if not entry.final or self.close_scheduled or self.done:
            return []
        self.close_scheduled = True
        delay = self.close_timeout
        if entry.finished_at is not None:
            delay = max(0.0, entry.finished_at + delay - now)
        return [ScheduleClose(delay)]

    def chunk(self, msg: OutputMessage) -> list[SlotOutput]:
        """A 3.0 `output` chunk (its channel already checked): stored unless closed."""
        if self.done:
            return []
        outputs: list[SlotOutput] = []
        record = self._ensure_record(outputs)
        gap = record.add_chunk(msg.channel, msg.offset, msg.data)
        if gap is None:
            return outputs
        if msg.omitted_bytes is not None and msg.omitted_bytes != gap:
            outputs.append(GapMismatch(msg.channel, msg.omitted_bytes, gap))
        outputs += self._changed()
        return outputs

    def result(self, msg: Succeeded | Failed, version: str) -> list[SlotOutput]:
        """`succeeded`/`failed`: what it says of the output goes into the record; closed."""
        if self.done:
            return []
        outputs: list[SlotOutput] = []
        if carries_v2_output(msg, version) or version != "2.0":
            apply_result(self._ensure_record(outputs), msg, version)
        outputs += self.close(msg.TYPE)
        return outputs

    def close(self, reason: str) -> list[SlotOutput]:
        """Close the slot (idempotent): the record is closed and written, or the slot dropped."""
        if self.done:
            return []
        self.done = True
        outputs: list[SlotOutput] = []
        if self.close_scheduled:
            outputs.append(CancelClose())
        if self.watching:
            self.watching = False
            outputs.append(UnwatchNode())
        outputs.append(Closed(reason, with_record=self.record is not None))
        if self.record is not None:
            self.record.close()
            outputs += self._changed()
        else:
            outputs.append(Forget())
        outputs.append(OutputActivity())
        return outputs

    def node_down(self) -> list[SlotOutput]:
        """The node's state ended while the slot was open: closed."""
        return self.close(NODE_DOWN_REASON)

    def close_timer_fired(self) -> list[SlotOutput]:
        """`output_close_timeout` passed since the node's final status: closed."""
        return self.close(CLOSE_TIMEOUT_REASON)

    # -- writes ----------

    def take_write(self) -> SlotWrite | None:
        """What the store lacks of the record (None while there is none)."""
        if self.record is None:
            return None
        delta, mark_written = self.record.take_delta()
        return SlotWrite(delta, self.version, mark_written)

    def wrote(self, write: SlotWrite) -> bool:
        """The store holds `write`; True when the slot is closed and fully written (forget it)."""
        write.mark_written()
        self.written = max(self.written, write.version)
        return self.done and self.written == self.version

    # -- helpers ----------

    def _ensure_record(self, outputs: list[SlotOutput]) -> NodeOutput:
        if self.record is None:
            self.record = NodeOutput(self.job_id, self.node, self.cap)
            outputs.append(OutputActivity())
        return self.record

    def _changed(self) -> list[SlotOutput]:
        self.version += 1
        return [MarkDirty()]

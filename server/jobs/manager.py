"""The job manager: the trio driver of live jobs and their output (lifecycle.md §4–§9).

Each live job is a pure `JobState` in a `LiveJob`; each node's captured output a pure
`OutputSlotState` in an `OutputSlot` (`live.py`). The manager moves inputs in (broker dispatch,
node downs, timers, HTTP start and abort) and carries the pure outputs out (commands, rehab
requests, feed events, timers, rows to persist). Writes are batched: status and node rows within
~0.1 s, output records at most every 0.5 s, so thousands of nodes answering at once cost a few
transactions.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from pushjobs.protocol.messages import Failed, Succeeded
from pushjobs.protocol.messages import Output as OutputMessage
from pushjobs.protocol.vocabulary import (
    FINAL_JOB_STATUSES,
    JobStatus,
    MessageType,
    NodeStatus,
    OutputChannel,
)
from pushjobs.server.jobs.events import FeedEvent, SseClock, start_event_data
from pushjobs.server.jobs.live import (
    LiveJob,
    Notifier,
    OrgFeed,
    OutputArrival,
    OutputEnd,
    OutputSlot,
)
from pushjobs.server.jobs.output import NodeOutput
from pushjobs.server.jobs.output_slots import (
    CancelClose,
    Closed,
    Forget,
    GapMismatch,
    MarkDirty,
    OutputActivity,
    OutputSlotState,
    ScheduleClose,
    SlotOutput,
    SlotWrite,
    UnwatchNode,
    WatchNode,
    apply_result,
    result_updates_output,
)
from pushjobs.server.jobs.state import (
    Event,
    JobChanged,
    JobState,
    NodeChanged,
    NodeDeadline,
    Output,
    RehabRequest,
    SendCommand,
)
from pushjobs.server.jobs.timers import TimerQueue
from pushjobs.server.jobs.validation import resolve_limit
from pushjobs.server.nodes.state import NodePhase
from pushjobs.server.store.interfaces import StoreUnavailableError
from pushjobs.server.store.records import Job, JobNode, JobSpec, Org, OutputDelta, OutputRecord

if TYPE_CHECKING:
    from pushjobs.protocol.messages import AgentMessage
    from pushjobs.server.config import Settings
    from pushjobs.server.jobs.events import WallClock
    from pushjobs.server.nodes.registry import NodeWatcher
    from pushjobs.server.principals.requestor import Requestor

log = logging.getLogger("pushjobs.server.jobs")

STATUS_FLUSH_DELAY = 0.1  # batch window for job / node rows
OUTPUT_FLUSH_INTERVAL = 0.5  # output records are written at most this often (spec: ≤ 1 s)
ORG_FEED_EVENTS = frozenset({"start", "job_complete"})


class MemberNode(Protocol):
    """What the manager reads of a node's state: its phase and protocol version."""

    @property
    def phase(self) -> NodePhase: ...
    @property
    def version(self) -> str: ...


class JobNodes(Protocol):
    """What the manager needs of the node registry (`NodeRegistry`).

    `node_state` answers the same object until that state ends: the manager compares identities
    to find nodes whose state was replaced while a job was being created.
    """

    def node_state(self, org: str, node: str) -> MemberNode | None: ...
    def watch(self, org: str, node: str, watcher: NodeWatcher) -> None: ...
    def unwatch(self, org: str, node: str, watcher: NodeWatcher) -> None: ...
    def rehab(self, org: str, node: str) -> None: ...
    def send_command(self, org: str, node: str, msg_type: str, fields: dict[str, Any]) -> None: ...


class EventSink(Protocol):
    """Told of every event a live job records and of every output write (a cluster stores the
    events for the other servers and tells them that output grew)."""

    def recorded(self, job_id: str, event: FeedEvent) -> None: ...
    def outputs_written(self) -> None: ...


class JobRecordStore(Protocol):
    """What the manager needs of the async store: job rows, output records, batched writes."""

    async def write_batch(
        self,
        job_statuses: Mapping[str, tuple[str, float]],
        nodes: Sequence[JobNode],
        deltas: Sequence[OutputDelta],
    ) -> None: ...
    async def create_job(self, job: Job, node_names: Sequence[str]) -> None: ...
    async def set_job_aborted_by(self, job_id: str, name: str) -> None: ...
    async def get_job(self, org_name: str, job_id: str) -> Job | None: ...
    async def get_job_nodes(self, job_id: str) -> list[JobNode]: ...
    async def get_output(self, job_id: str, node_name: str) -> OutputRecord | None: ...
    async def save_outputs(self, records: Sequence[OutputRecord]) -> None: ...


class JobOutcomes(Protocol):
    """Told of each job reaching its final status (the metrics)."""

    def finished(self, status: str, seconds: float) -> None: ...


class JobNotFound(Exception):
    """No job with that id in the organization."""


class JobAlreadyFinished(Exception):
    """The job has a final status (abort → 409)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class JobElsewhere(Exception):
    """The job runs on another server of the cluster (its coordinator)."""

    def __init__(self, coordinator: str) -> None:
        super().__init__(coordinator)
        self.coordinator = coordinator


class JobManager:
    """Live jobs, timers, persistence, feeds and output records (lifecycle.md §4–§9)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: JobRecordStore,
        nodes: JobNodes,
        clock: WallClock,
        event_sink: EventSink | None = None,
        outcomes: JobOutcomes | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._outcomes = outcomes
        self._nodes = nodes
        self.server_name = settings.server_name
        # the server id recorded as each new job's coordinator (a cluster's start-up and
        # takeover crash only the jobs their server ran)
        self.coordinator = settings.cluster.server_id
        timing = settings.timing
        self.voting_timeout = float(timing.voting_timeout)
        self.wait_complete_time = float(timing.wait_complete_time)
        self.output_close_timeout = float(timing.output_close_timeout)
        self.org_feed_expiration = float(timing.org_feed_expiration)
        self.keep_alive_time = float(timing.keep_alive_time)
        self.max_output_bytes = int(settings.limits.max_output_bytes)
        self.sse = SseClock(clock)
        self._live: dict[str, LiveJob] = {}
        self._slots: dict[tuple[str, str], OutputSlot] = {}
        self._org_feeds: dict[str, OrgFeed] = {}
        self.output_activity = Notifier()
        self._timers = TimerQueue()
        # persistence
        self._pending_jobs: dict[str, tuple[str, float]] = {}
        self._pending_nodes: dict[tuple[str, str], JobNode] = {}
        self._dirty_slots: dict[tuple[str, str], OutputSlot] = {}
        self._write_lock = trio.Lock()
        self._flush_wakeup = trio.Event()
        self._last_output_flush = 0.0
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        # a cluster stores every job event, so any server's job feed can replay it
        self.event_sink = event_sink

    # ---- task ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Timers and the batch writer; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timers.run)
            nursery.start_soon(self._flush_loop)
            task_status.started()

    async def shutdown(self) -> None:
        """Graceful shutdown: live unfinished jobs → crashed (with `job_complete`), all written."""
        self._stopping = True
        for live in list(self._live.values()):
            if not live.state.finished:
                self._apply(live, functools.partial(live.state.crash, rehab=False))
        for slot in list(self._slots.values()):
            self._close_slot(slot, "server shutdown")
        await self.flush(outputs=True)

    def unfinished_count(self) -> int:
        """How many live jobs have not reached a final status (the metrics' live jobs)."""
        return sum(1 for live in self._live.values() if not live.state.finished)

    def live_job_ids(self) -> list[str]:
        """Ids of the live jobs (for `/pushy/_status`)."""
        return list(self._live)

    def live_job(self, org: str, job_id: str) -> LiveJob | None:
        """The live job with that id in the organization, if any."""
        live = self._live.get(job_id)
        return live if live is not None and live.org == org else None

    def output_slot(self, job_id: str, node: str) -> OutputSlot | None:
        """The live output of the node in the job, until it is closed and written."""
        return self._slots.get((job_id, node))

    def relay_org_event(self, org: str, job_id: str, name: str, data: dict[str, Any]) -> None:
        """A `start`/`job_complete` of a job another server of the cluster coordinates: this
        server's org feed shows it too (with its own id and time)."""
        feed = self.org_feed(org)
        fields = {key: value for key, value in data.items() if key != "timestamp"}
        feed.log.record(name, {"job": job_id, **fields}, self.sse.stamp())
        feed.changed.notify()

    def org_feed(self, org: str) -> OrgFeed:
        """The organization's feed (created at first use)."""
        feed = self._org_feeds.get(org)
        if feed is None:
            feed = self._org_feeds[org] = OrgFeed(self.org_feed_expiration)
        return feed

    # ---- start and abort (HTTP) ---------------------------------------------------------

    async def start_job(self, org: Org, requestor: Requestor, spec: JobSpec) -> str:
        """Store and start a job (lifecycle.md §4.3); returns its id once it is voting."""
        job = _new_job(org, requestor, spec, time.time(), self.coordinator)
        count = len(spec.nodes)
        state = JobState(
            job.id,
            list(spec.nodes),
            spec.quorum,
            spec.run_timeout,
            start_event_data(spec, requestor.name),
            max_concurrency=None
            if spec.max_concurrency is None
            else resolve_limit(spec.max_concurrency, count, round_up=True),
            max_errors=None
            if spec.max_errors is None
            else resolve_limit(spec.max_errors, count, round_up=False),
        )
        live = LiveJob(job, state, self._node_down)
        self._live[job.id] = live
        # The node states the job is created against. One that ends while the job is being
        # stored (an agent restarted: new client incarnation) takes its part in the job with
        # it; the new state must not get this job's commit (lifecycle.md §2.4).
        members = {name: self._nodes.node_state(org.name, name) for name in spec.nodes}
        try:
            await self._store.create_job(job, list(spec.nodes))
        except BaseException:
            del self._live[job.id]
            live.started.set()
            raise
        idle, replaced = self._watch_members(live, members)
        log.info(
            "job %s started by %s %s in %s: %d node(s), quorum %d%s",
            job.id,
            requestor.type,
            requestor.name,
            org.name,
            count,
            spec.quorum,
            _limits_text(state),
        )
        self._apply(live, lambda t: state.start(t, idle, replaced))
        live.started.set()
        await self._flush_soft()
        return job.id

    def _watch_members(
        self, live: LiveJob, members: dict[str, MemberNode | None]
    ) -> tuple[set[str], set[str]]:
        """Watch every member node; returns (idle, replaced since `members` was taken)."""
        idle: set[str] = set()
        replaced: set[str] = set()
        for name, member in members.items():
            self._nodes.watch(live.org, name, live)
            current = self._nodes.node_state(live.org, name)
            if current is not member:
                replaced.add(name)
            elif current is not None and current.phase == NodePhase.IDLE:
                idle.add(name)
        if replaced:
            log.info(
                "job %s: %d node(s) connected, restarted or went down while the job was being "
                "created, counted down: %s",
                live.id,
                len(replaced),
                ", ".join(repr(name) for name in sorted(replaced)[:10]),
            )
        return idle, replaced

    async def abort_job(self, org: Org, job_id: str, requestor: Requestor) -> LiveJob:
        """Abort a job in `new`/`voting`/`running` (lifecycle.md §7) on behalf of `requestor`;
        returns the live job.

        Raises JobNotFound or JobAlreadyFinished(status).
        """
        live = self.live_job(org.name, job_id)
        if live is None:
            job = await self._store.get_job(org.name, job_id)
            if job is None:
                raise JobNotFound(job_id)
            if job.status not in FINAL_JOB_STATUSES and job.coordinator != self.coordinator:
                raise JobElsewhere(job.coordinator or "another server")
            raise JobAlreadyFinished(job.status)
        await live.started.wait()
        if self._live.get(job_id) is not live:
            raise JobNotFound(job_id)  # its creation failed meanwhile
        if live.state.finished:
            raise JobAlreadyFinished(live.state.status)
        log.info("job %s: abort requested by %s %s", job_id, requestor.type, requestor.name)
        live.job.aborted_by = requestor.name
        self._apply(live, lambda now: live.state.abort(now, requestor.name))
        try:
            await self._store.set_job_aborted_by(job_id, requestor.name)
        except Exception:
            log.exception("job %s: recording who aborted it failed", job_id)
        await self._flush_soft()
        return live

    def _node_down(self, live: LiveJob, node: str) -> None:
        """A member node's state ended (the registry tells the `LiveJob`, it tells us)."""
        self._apply(live, lambda now: live.state.node_down(node, now))

    # ---- broker dispatch ----------------------------------------------------------------

    def is_live_member(self, org: str, node: str, job_id: str) -> bool:
        """True when a live job of the org has that id and includes the node."""
        live = self.live_job(org, job_id)
        return live is not None and node in live.state.nodes

    def on_job_message(self, org: str, node: str, msg: AgentMessage, version: str) -> bool:
        """ack/nack commit/run, succeeded, failed; False → the broker rehabs the node."""
        msg_type = msg.TYPE
        job_id = msg.job_id
        result = msg if isinstance(msg, (Succeeded, Failed)) else None
        if result is not None and job_id is not None:
            self._result_output(org, node, job_id, result, version)
        live = self.live_job(org, job_id) if job_id is not None else None
        if live is None or node not in live.state.nodes:
            return False
        if not live.started.is_set():
            log.info("job %s: %s from %s/%s before start, ignored", job_id, msg_type, org, node)
            return True
        if live.state.finished:
            log.info("job %s finished: %s from %s/%s ignored", job_id, msg_type, org, node)
            return True
        exit_status = result.exit_status if result is not None else None
        signal = result.signal if result is not None else None
        self._apply(
            live,
            lambda now: live.state.message(
                node, msg_type, now, exit_status=exit_status, signal=signal
            ),
        )
        return True

    def on_aborted(self, org: str, node: str, msg: AgentMessage) -> None:
        """`aborted` naming a job: close the output record; forward to the live job."""
        job_id = msg.job_id
        if job_id is None:
            return
        slot = self._slots.get((job_id, node))
        if slot is not None and slot.org == org:
            self._close_slot(slot, MessageType.ABORTED)
        live = self.live_job(org, job_id)
        if live is None or node not in live.state.nodes or not live.started.is_set():
            return
        if live.state.finished:
            log.debug("job %s finished: aborted from %s/%s ignored", job_id, org, node)
            return
        self._apply(live, lambda now: live.state.message(node, MessageType.ABORTED, now))

    def on_output(self, org: str, node: str, msg: AgentMessage) -> None:
        """A 3.0 output chunk: stored when the node belongs to a capture job of the org."""
        if not isinstance(msg, OutputMessage):
            return  # the broker hands over `output` messages only
        job_id = msg.job_id
        if job_id is None or msg.channel not in (OutputChannel.STDOUT, OutputChannel.STDERR):
            return
        slot = self._slots.get((job_id, node))
        if slot is None:
            live = self.live_job(org, job_id)
            if live is None or not live.job.capture or not live.output_may_open(node):
                log.debug("output from %s/%s for job %s dropped", org, node, job_id)
                return
            slot = self._new_slot(live, node)
        if slot.org == org:
            self._carry_out_slot(slot, slot.state.chunk(msg))

    def _result_output(
        self, org: str, node: str, job_id: str, msg: Succeeded | Failed, version: str
    ) -> None:
        """`succeeded`/`failed`: update and close the output record (lifecycle.md §8)."""
        slot = self._slots.get((job_id, node))
        if slot is None:
            live = self.live_job(org, job_id)
            if live is None:
                # Whether the job captures is known once its row is read.
                if result_updates_output(msg, version, capture=True):
                    self._spawn(self._result_output_stored(org, node, job_id, msg, version))
                return
            if not live.output_may_open(node):
                return
            if not result_updates_output(msg, version, capture=live.job.capture):
                return
            slot = self._new_slot(live, node)
        if slot.org == org:
            self._carry_out_slot(slot, slot.state.result(msg, version))

    async def _result_output_stored(
        self, org: str, node: str, job_id: str, msg: Succeeded | Failed, version: str
    ) -> None:
        """Result for a job that is no longer live: update its stored record if still open."""
        store = self._store
        job = await store.get_job(org, job_id)
        if job is None:
            return
        names = {n.node_name for n in await store.get_job_nodes(job.id)}
        if node not in names:
            return
        if not result_updates_output(msg, version, capture=job.capture):
            return
        if (job.id, node) in self._slots:
            return  # a slot appeared meanwhile; it owns the record
        existing = await store.get_output(job.id, node)
        if existing is not None and existing.closed:
            return
        record = NodeOutput(job.id, node, self.max_output_bytes)
        if existing is not None:
            record.stdout.set_whole(existing.stdout)
            record.stderr.set_whole(existing.stderr)
        apply_result(record, msg, version)
        record.close()
        await self._write_outputs([record.to_record()])

    # ---- output slots: carrying out their outputs -------------------------------------

    def _new_slot(self, live: LiveJob, node: str) -> OutputSlot:
        state = OutputSlotState(
            live.org,
            live.id,
            node,
            cap=self.max_output_bytes,
            close_timeout=self.output_close_timeout,
        )
        slot = OutputSlot(state, self._slot_node_down)
        self._slots[(live.id, node)] = slot
        online = self._nodes.node_state(live.org, node) is not None
        entry = live.state.nodes.get(node)
        self._carry_out_slot(slot, state.open(node_online=online, entry=entry, now=time.time()))
        return slot

    def _close_slot(self, slot: OutputSlot, reason: str) -> None:
        self._carry_out_slot(slot, slot.state.close(reason))

    def _slot_node_down(self, slot: OutputSlot) -> None:
        self._carry_out_slot(slot, slot.state.node_down())

    def _slot_close_timer(self, slot: OutputSlot) -> None:
        self._carry_out_slot(slot, slot.state.close_timer_fired())

    def _carry_out_slot(self, slot: OutputSlot, outputs: list[SlotOutput]) -> None:
        key = (slot.job_id, slot.node)
        live = self._live.get(slot.job_id)
        if live is not None and slot.record is not None:
            _log_growth(live, slot)
        for out in outputs:
            if isinstance(out, MarkDirty):
                self._dirty_slots[key] = slot
                slot.changed.notify()
                self._flush_wakeup.set()
            elif isinstance(out, OutputActivity):
                self.output_activity.notify()
            elif isinstance(out, WatchNode):
                self._nodes.watch(slot.org, slot.node, slot)
            elif isinstance(out, UnwatchNode):
                self._nodes.unwatch(slot.org, slot.node, slot)
            elif isinstance(out, ScheduleClose):
                slot.close_timer = self._timers.call_later(
                    out.delay, functools.partial(self._slot_close_timer, slot)
                )
            elif isinstance(out, CancelClose):
                if slot.close_timer is not None:
                    slot.close_timer.cancel()
            elif isinstance(out, Closed):
                if live is not None:
                    live.closed_outputs.add(slot.node)
                    if out.with_record:
                        live.output_log.append(OutputEnd(slot.node, OutputChannel.STDOUT))
                        live.output_log.append(OutputEnd(slot.node, OutputChannel.STDERR))
                        live.output_changed.notify()
                if out.with_record:
                    log.debug(
                        "output of %s in job %s closed: %s", slot.node, slot.job_id, out.reason
                    )
            elif isinstance(out, Forget):
                self._slots.pop(key, None)
                slot.changed.notify()
            elif isinstance(out, GapMismatch):
                log.info(
                    "job %s node %s/%s %s: omitted_bytes %d but the gap is %d",
                    slot.job_id,
                    slot.org,
                    slot.node,
                    out.channel,
                    out.omitted_bytes,
                    out.gap,
                )

    # ---- carrying out state machine outputs ---------------------------------------------

    def _apply(self, live: LiveJob, produce: Callable[[float], list[Output]]) -> None:
        """Run one input of a live job and carry out its outputs; failures crash the job."""
        now = time.time()
        try:
            outputs = produce(now)
            self._carry_out(live, outputs)
        except Exception:
            log.exception("job %s: handling failed; the job crashes", live.id)
            self._crash_after_failure(live, now)

    def _crash_after_failure(self, live: LiveJob, now: float) -> None:
        try:
            self._carry_out(live, live.state.crash(now))
        except Exception:
            log.exception("job %s: crash handling failed", live.id)
            if not live.state.finished:
                live.state.status = JobStatus.CRASHED
                self._pending_jobs[live.id] = (JobStatus.CRASHED, now)
        if live.state.finished and not live.finishing:
            self._finish_live(live)

    def _carry_out(self, live: LiveJob, outputs: list[Output]) -> None:
        if not outputs:
            return
        registry = self._nodes
        org = live.org
        finished = False
        for out in outputs:
            if isinstance(out, Event):
                self._record_event(live, out)
            elif isinstance(out, NodeChanged):
                self._node_changed(live, out.node)
            elif isinstance(out, RehabRequest):
                if not self._stopping:
                    registry.rehab(org, out.node)
            elif isinstance(out, SendCommand):
                if not self._stopping:
                    self._send(live, out)
            elif isinstance(out, NodeDeadline):
                self._set_node_deadline(live, out)
            elif isinstance(out, JobChanged):
                self._pending_jobs[live.id] = (out.status, out.updated_at)
                live.job.status = out.status
                live.job.updated_at = out.updated_at
                if out.status == JobStatus.VOTING:
                    self._set_phase_timer(live, self.voting_timeout, live.state.voting_timeout)
                elif out.status == JobStatus.RUNNING:
                    if live.state.max_concurrency is None:
                        self._set_phase_timer(
                            live, float(live.state.run_timeout), live.state.run_timer
                        )
                    elif live.phase_timer is not None:  # each node has its own deadline
                        live.phase_timer.cancel()
                        live.phase_timer = None
                elif live.state.finished:
                    finished = True
        self._flush_wakeup.set()
        live.changed.notify()
        if finished:
            self._finish_live(live)

    def _record_event(self, live: LiveJob, event: Event) -> None:
        stamp = self.sse.stamp()
        recorded = live.log.record(event.name, event.data, stamp)
        if self.event_sink is not None:
            self.event_sink.recorded(live.id, recorded)
        if event.name in ORG_FEED_EVENTS:
            feed = self.org_feed(live.org)
            feed.log.record(event.name, {"job": live.id, **event.data}, stamp)
            feed.changed.notify()

    def _node_changed(self, live: LiveJob, node: str) -> None:
        entry = live.state.nodes[node]
        self._pending_nodes[(live.id, node)] = JobNode.of(live.id, entry)
        if entry.final and live.node_timers:
            timer = live.node_timers.pop(node, None)
            if timer is not None:
                timer.cancel()
        if not live.job.capture:
            return
        slot = self._slots.get((live.id, node))
        if slot is not None:
            self._carry_out_slot(slot, slot.state.node_changed(entry, time.time()))
        elif entry.status == NodeStatus.RUNNING and live.output_may_open(node):
            self._new_slot(live, node)
        self.output_activity.notify()

    def _send(self, live: LiveJob, out: SendCommand) -> None:
        # The fields are built once per job and message kind, not once per node: a fan-out to
        # thousands of nodes only seals (`send_command` copies them into each body).
        key: str = out.msg_type
        if key == MessageType.COMMIT:
            st = self._nodes.node_state(live.org, out.node)
            if st is not None and st.version == "3.0":
                key = "commit/3.0"
        fields = live.command_fields.get(key)
        if fields is None:
            fields = live.command_fields[key] = self._command_fields(live.job, key)
        self._nodes.send_command(live.org, out.node, out.msg_type, fields)

    def _command_fields(self, job: Job, key: str) -> dict[str, Any]:
        """The fields of a `commit` (2.0 or 3.0 form) or `run` of the job, after the common ones."""
        fields: dict[str, Any] = {"job_id": job.id}
        if key.startswith("commit"):
            fields["server"] = self.server_name
            fields["command"] = job.command
            fields["capture"] = job.capture
            if job.run_as_user is not None:
                fields["user"] = job.run_as_user
            if job.dir is not None:
                fields["dir"] = job.dir
            if job.env is not None:
                fields["env"] = dict(job.env)
            if job.file is not None:
                fields["file"] = job.file
            if key == "commit/3.0":
                fields["run_timeout"] = job.run_timeout
        return fields

    def _set_node_deadline(self, live: LiveJob, out: NodeDeadline) -> None:
        node = out.node

        def fire() -> None:
            live.node_timers.pop(node, None)
            self._apply(live, lambda now: live.state.node_run_timeout(node, now))

        live.node_timers[node] = self._timers.call_later(out.delay, fire)

    def _set_phase_timer(
        self, live: LiveJob, delay: float, fire: Callable[[float], list[Output]]
    ) -> None:
        if live.phase_timer is not None:
            live.phase_timer.cancel()
        live.phase_timer = self._timers.call_later(delay, lambda: self._apply(live, fire))

    def _finish_live(self, live: LiveJob) -> None:
        """Final status reached (lifecycle.md §4.6): timers and watchers off, grace starts."""
        live.finishing = True
        if live.phase_timer is not None:
            live.phase_timer.cancel()
            live.phase_timer = None
        for timer in live.node_timers.values():
            timer.cancel()
        live.node_timers.clear()
        for name in live.state.nodes:
            self._nodes.unwatch(live.org, name, live)
        log.info("job %s finished: %s", live.id, live.state.status)
        if self._outcomes is not None:
            self._outcomes.finished(str(live.state.status), self._clock.now() - live.job.created_at)
        self._timers.call_later(self.wait_complete_time, lambda: self._spawn(self._expire(live)))

    async def _expire(self, live: LiveJob) -> None:
        """End of the grace period: make sure its rows are written, then forget the job."""
        await self.flush()
        if self._live.get(live.id) is live:
            del self._live[live.id]
        live.changed.notify()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._nursery is None:
            coro.close()
            return

        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("background job task failed")

        self._nursery.start_soon(guarded)

    # ---- persistence --------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wakeup.wait()
            self._flush_wakeup = trio.Event()
            await trio.sleep(STATUS_FLUSH_DELAY)
            outputs_due = trio.current_time() - self._last_output_flush >= OUTPUT_FLUSH_INTERVAL
            try:
                await self.flush(outputs=outputs_due)
            except StoreUnavailableError as exc:
                log.warning("writing job state failed (%s); will retry", exc.message)
                await trio.sleep(1.0)
            except Exception:
                log.exception("writing job state failed; will retry")
                await trio.sleep(1.0)
            if self._dirty_slots and not outputs_due:
                self._flush_wakeup.set()

    async def flush(self, *, outputs: bool = False) -> None:
        """Write pending job statuses and node rows (and output records when asked) now."""
        async with self._write_lock:
            jobs, self._pending_jobs = self._pending_jobs, {}
            nodes, self._pending_nodes = self._pending_nodes, {}
            writes = self._take_output_writes() if outputs else []
            if not (jobs or nodes or writes):
                return
            try:
                await self._store.write_batch(
                    jobs, list(nodes.values()), [write.delta for _, write in writes]
                )
            except BaseException:
                for job_id, value in jobs.items():
                    self._pending_jobs.setdefault(job_id, value)
                for job_node, row in nodes.items():
                    self._pending_nodes.setdefault(job_node, row)
                for slot, _ in writes:
                    self._dirty_slots.setdefault((slot.job_id, slot.node), slot)
                self._flush_wakeup.set()
                raise
            for slot, write in writes:
                key = (slot.job_id, slot.node)
                if slot.state.wrote(write) and self._slots.get(key) is slot:
                    del self._slots[key]
            if writes and self.event_sink is not None:
                self.event_sink.outputs_written()

    def _take_output_writes(self) -> list[tuple[OutputSlot, SlotWrite]]:
        """What the dirty output records gained since their last write."""
        self._last_output_flush = trio.current_time()
        writes: list[tuple[OutputSlot, SlotWrite]] = []
        for slot in self._dirty_slots.values():
            write = slot.state.take_write()
            if write is not None:
                writes.append((slot, write))
        self._dirty_slots = {}
        return writes

    async def _flush_soft(self) -> None:
        """Flush for an HTTP answer; a failing store is retried by the flush loop."""
        try:
            await self.flush()
        except StoreUnavailableError as exc:
            log.warning("writing job state failed (%s); will retry", exc.message)
        except Exception:
            log.exception("writing job state failed; will retry")

    async def _write_outputs(self, records: list[OutputRecord]) -> None:
        async with self._write_lock:
            await self._store.save_outputs(records)
        if self.event_sink is not None:
            self.event_sink.outputs_written()


def _new_job(org: Org, requestor: Requestor, spec: JobSpec, now: float, coordinator: str) -> Job:
    """The row of a new job, created (and last updated) at `now` in whole seconds."""
    created = float(math.floor(now))
    return Job(
        id=uuid.uuid4().hex,
        org_id=org.id,
        org_name=org.name,
        command=spec.command,
        status=JobStatus.NEW,
        quorum=spec.quorum,
        run_timeout=spec.run_timeout,
        requestor_name=requestor.name,
        requestor_type=requestor.type,
        created_at=created,
        updated_at=created,
        run_as_user=spec.user,
        dir=spec.dir,
        env=dict(spec.env) if spec.env is not None else None,
        file=spec.file,
        capture=spec.capture,
        max_concurrency=spec.max_concurrency,
        max_errors=spec.max_errors,
        coordinator=coordinator,
    )


def _log_growth(live: LiveJob, slot: OutputSlot) -> None:
    """Append what the slot's stored bytes gained since the last look to the job's output log
    (a replaced channel — a 2.0 result — is logged whole)."""
    record = slot.record
    assert record is not None
    grew = False
    for name in (OutputChannel.STDOUT, OutputChannel.STDERR):
        channel = record.channel(name)
        generation, length = slot.logged.get(name, (0, 0))
        size = len(channel.data)
        if channel.generation != generation:
            length = 0
        elif size <= length:
            continue
        slot.logged[name] = (channel.generation, size)
        if size > length:
            live.output_log.append(OutputArrival(slot.node, name, length, size))
            grew = True
    if grew:
        live.output_changed.notify()


def _limits_text(state: JobState) -> str:
    """`, at most N at once, stop after M errors` for the start log line (when set)."""
    text = ""
    if state.max_concurrency is not None:
        text += f", at most {state.max_concurrency} at once"
    if state.max_errors is not None:
        text += f", stop after {state.max_errors + 1} error(s)"
    return text

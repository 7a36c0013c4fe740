"""The per-job output feed (http-api.md §7.13): every node's captured output of one job in one
SSE stream — in arrival order while the job is live in memory; followed through the store while
another server of a cluster coordinates it; else replayed from the store.

The live stream follows the manager's arrival log (`LiveJob.output_log`); the bytes themselves
are read from the node's output slot, or from the store once the slot has been written and
forgotten. A resumed reader (`Last-Event-ID`) may get bytes again, never fewer.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from starlette.responses import Response

from pushjobs.protocol.vocabulary import FINAL_JOB_STATUSES, OutputChannel
from pushjobs.server.http.errors import HttpError
from pushjobs.server.http.feeds import SSE_HEADERS, SseResponse, followed_elsewhere, last_event_id
from pushjobs.server.http.job_views import job_not_found
from pushjobs.server.http.node_output import (
    FOLLOW_POLL,
    SETTLE_TIME,
    channel_of,
    still_followed,
    utf8_pieces,
    wait_for_change,
)
from pushjobs.server.jobs.events import KEEPALIVE, format_sse
from pushjobs.server.jobs.live import OutputArrival, OutputEnd

if TYPE_CHECKING:
    from pushjobs.server.http.context import RequestContext
    from pushjobs.server.http.deps import (
        HttpDeps,
        JobEngine,
        JobRecords,
        LiveJobView,
        StoredEvents,
    )
    from pushjobs.server.store.records import Job, JobNode, OutputRecord, OutputTotals

_OFFSET = re.compile(r"[0-9]{1,15}")
_CHANNELS = (OutputChannel.STDOUT, OutputChannel.STDERR)
_BATCH_BYTES = 65536  # events of already recorded output go out in writes of about this size
COMPLETE_ID = "job_complete"


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a `Last-Event-ID` points: a channel's offset, or just after its `end` (None)."""

    node: str
    channel: str
    offset: int | None


def parse_resume(value: str | None) -> Resume | None:
    """`<node>:<channel>:<offset|end>` (split at the last two colons); None for anything else."""
    if not value:
        return None
    parts = value.rsplit(":", 2)
    if len(parts) != 3 or parts[1] not in _CHANNELS or not parts[0]:
        return None
    node, channel, rest = parts
    if rest == "end":
        return Resume(node, channel, None)
    if _OFFSET.fullmatch(rest):
        return Resume(node, channel, int(rest))
    return None


def resume_in_log(
    log: Sequence[OutputArrival | OutputEnd], resume: Resume
) -> tuple[int, int | None] | None:
    """The log index to go on from and the offset its first arrival starts at (None: whole);
    None when the id is not in the log."""
    for index in range(len(log) - 1, -1, -1):
        entry = log[index]
        if entry.node != resume.node or entry.channel != resume.channel:
            continue
        if resume.offset is None:
            if isinstance(entry, OutputEnd):
                return index + 1, None
        elif isinstance(entry, OutputArrival) and entry.start < resume.offset <= entry.end:
            if resume.offset == entry.end:
                return index + 1, None
            return index, resume.offset
    return None


def first_byte(resume: Resume | None, node: str, channel: str) -> int | None:
    """Where a channel starts for a reader resuming at an id not in the log: the named channel
    from its offset (None: not at all), every other channel from 0."""
    if resume is None or resume.node != node or resume.channel != channel:
        return 0
    return resume.offset


def output_event(node: str, channel: str, offset: int, piece: bytes, stamp: str) -> bytes:
    """An `output` event: id `<node>:<channel>:<end offset>`, text or base64 data."""
    try:
        text, encoding = piece.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(piece).decode("ascii"), "base64"
    data = {
        "timestamp": stamp,
        "node": node,
        "channel": channel,
        "offset": offset,
        "encoding": encoding,
        "data": text,
    }
    return format_sse("output", f"{node}:{channel}:{offset + len(piece)}", data)


def end_event(node: str, channel: str, row: Any, length: int, omitted: int, stamp: str) -> bytes:
    """An `end` event: the node's status next to the channel's stored length."""
    data = {
        "timestamp": stamp,
        "node": node,
        "channel": channel,
        "status": row.status if row is not None else None,
        "exit_status": row.exit_status if row is not None else None,
        "signal": row.signal if row is not None else None,
        "bytes": length,
        "omitted_bytes": omitted,
    }
    return format_sse("end", f"{node}:{channel}:end", data)


def complete_event(status: str, stamp: str) -> bytes:
    return format_sse("job_complete", COMPLETE_ID, {"timestamp": stamp, "status": status})


async def job_output_feed(ctx: RequestContext, deps: HttpDeps) -> Response:
    """GET org/jobs/{id}/output (§7.13)."""
    org, _ = ctx.authorized()
    job_id = ctx.params["id"]
    live = deps.jobs.live_job(org.name, job_id)
    job = live.job if live is not None else await deps.store.get_job(org.name, job_id)
    if job is None:
        raise job_not_found(job_id)
    if not job.capture:
        raise HttpError(404, f"no output for job '{job_id}'")
    resume = parse_resume(last_event_id(ctx))
    stored = deps.stored_events
    if live is not None:
        events = _LiveFeed(deps.jobs, deps.store, live).events(resume)
    elif stored is not None and followed_elsewhere(job, deps.jobs):
        events = _FollowedFeed(deps.jobs, deps.store, stored, job).events(resume)
    else:
        events = _stored_events(deps.jobs, deps.store, job, resume)
    return SseResponse(events, headers=SSE_HEADERS)


async def _stored_events(
    engine: JobEngine, store: JobRecords, job: Job, resume: Resume | None
) -> AsyncIterator[bytes]:
    """The replay of a job no longer live: nodes in name order, stdout then stderr."""
    totals = await store.get_output_totals(job.id)
    rows = {row.node_name: row for row in await store.get_job_nodes(job.id)}
    for node in sorted(totals):
        record = await store.get_output(job.id, node)
        batch: list[bytes] = []
        for channel in _CHANNELS:
            start = first_byte(resume, node, channel)
            if start is None:
                continue
            data, omitted = channel_of(record, channel)
            for offset, piece in utf8_pieces(data, min(start, len(data)), len(data)):
                batch.append(output_event(node, channel, offset, piece, engine.sse.stamp()[1]))
            batch.append(
                end_event(node, channel, rows.get(node), len(data), omitted, engine.sse.stamp()[1])
            )
        yield b"".join(batch)
    yield complete_event(job.status, engine.sse.stamp()[1])


class _LiveFeed:
    """The stream of a job in memory: its arrival log, then `job_complete`."""

    def __init__(self, engine: JobEngine, store: JobRecords, live: LiveJobView) -> None:
        self._engine = engine
        self._store = store
        self._live = live
        self._stored: tuple[str, OutputRecord | None] | None = None  # the last store read

    async def _bytes(self, node: str, channel: str) -> tuple[bytes | bytearray, int]:
        """A channel's stored bytes and omitted count: the live slot's, else the store's."""
        slot = self._engine.output_slot(self._live.job.id, node)
        if slot is not None and slot.record is not None:
            output = slot.record.channel(channel)
            return output.data, output.omitted
        if self._stored is None or self._stored[0] != node:
            self._stored = (node, await self._store.get_output(self._live.job.id, node))
        return channel_of(self._stored[1], channel)

    def _outputs_open(self) -> bool:
        """True while a node of the finished job still has an output slot that is not closed."""
        engine, job_id = self._engine, self._live.job.id
        for node in self._live.state.nodes:
            slot = engine.output_slot(job_id, node)
            if slot is not None and not slot.done:
                return True
        return False

    async def _wait(self) -> bool:
        """Wait for more output or a change of the job; True when keepalive time passed first."""
        live = self._live
        output, job = live.output_changed.event, live.changed.event
        with trio.move_on_after(self._engine.keep_alive_time) as scope:
            async with trio.open_nursery() as nursery:

                async def wake(event: trio.Event) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wake, output)
                nursery.start_soon(wake, job)
        return scope.cancelled_caught

    async def events(self, resume: Resume | None) -> AsyncIterator[bytes]:
        live, stamp = self._live, self._engine.sse.stamp
        log = live.output_log
        found = resume_in_log(log, resume) if resume is not None else None
        pos, clip = found if found is not None else (0, None)
        skip = resume if found is None else None
        while True:
            batch: list[bytes] = []
            size = 0
            while pos < len(log) and size < _BATCH_BYTES:
                entry = log[pos]
                pos += 1
                start = first_byte(skip, entry.node, entry.channel)
                if start is None:
                    continue
                data, omitted = await self._bytes(entry.node, entry.channel)
                row = live.state.nodes.get(entry.node)
                if isinstance(entry, OutputEnd):
                    batch.append(
                        end_event(entry.node, entry.channel, row, len(data), omitted, stamp()[1])
                    )
                    continue
                begin = max(entry.start, start, clip or 0)
                clip = None
                for offset, piece in utf8_pieces(data, begin, min(entry.end, len(data))):
                    batch.append(output_event(entry.node, entry.channel, offset, piece, stamp()[1]))
                    size += len(piece)
            if batch:
                yield b"".join(batch)
                continue
            if live.state.finished and not self._outputs_open():
                yield complete_event(live.state.status, stamp()[1])
                return
            if await self._wait():
                yield KEEPALIVE


_SKIP = -1  # a channel the resumed reader already has up to its `end`


class _FollowedFeed:
    """The stream of a job coordinated by another server: each round reads the counters of
    the job's output records and then only the records that changed, sends what they gained
    (nodes in name order) and `end` for those that closed, until the job can no longer change;
    woken by the coordinator's announcements of stored output and job events."""

    def __init__(
        self, engine: JobEngine, store: JobRecords, stored: StoredEvents, job: Job
    ) -> None:
        self._engine = engine
        self._store = store
        self._stored = stored
        self._job = job
        self._sent: dict[tuple[str, str], int] = {}  # (node, channel) -> bytes sent, or _SKIP
        self._seen: dict[str, OutputTotals] = {}
        self._ended: set[str] = set()
        self._rows: dict[str, JobNode] | None = None  # node rows, read for `end` events

    async def _row(self, node: str) -> JobNode | None:
        if self._rows is None or node not in self._rows:
            self._rows = {
                row.node_name: row for row in await self._store.get_job_nodes(self._job.id)
            }
        return self._rows.get(node)

    async def _gained(self, node: str, record: OutputRecord, resume: Resume | None) -> list[bytes]:
        """Events for what `record` gained since the last round (and `end` once it closed)."""
        stamp = self._engine.sse.stamp
        batch: list[bytes] = []
        for channel in _CHANNELS:
            key = (node, channel)
            if key not in self._sent:
                start = first_byte(resume, node, channel)
                self._sent[key] = _SKIP if start is None else start
            sent = self._sent[key]
            if sent == _SKIP:
                continue
            data, _ = channel_of(record, channel)
            for offset, piece in utf8_pieces(data, min(sent, len(data)), len(data)):
                batch.append(output_event(node, channel, offset, piece, stamp()[1]))
            self._sent[key] = len(data)
        if record.closed:
            batch += await self._ends(node, record)
        return batch

    async def _ends(self, node: str, record: OutputRecord | None) -> list[bytes]:
        """`end` for every channel of `node` the reader follows (after a fresh row read)."""
        self._ended.add(node)
        self._rows = None
        row = await self._row(node)
        batch: list[bytes] = []
        for channel in _CHANNELS:
            if self._sent.get((node, channel)) == _SKIP:
                continue
            data, omitted = channel_of(record, channel)
            batch.append(
                end_event(node, channel, row, len(data), omitted, self._engine.sse.stamp()[1])
            )
        return batch

    async def events(self, resume: Resume | None) -> AsyncIterator[bytes]:
        engine, store, job_id = self._engine, self._store, self._job.id
        quiet_since = trio.current_time()
        final_seen: float | None = (
            None  # when the job was first seen final with every record closed
        )
        while True:
            totals = await store.get_output_totals(job_id)
            batch: list[bytes] = []
            for node in sorted(totals):
                if node in self._ended or totals[node] == self._seen.get(node):
                    continue
                self._seen[node] = totals[node]
                record = await store.get_output(job_id, node)
                if record is not None:
                    batch += await self._gained(node, record, resume)
            if batch:
                yield b"".join(batch)
                quiet_since = trio.current_time()
                continue
            current = await store.get_job(self._job.org_name, job_id)
            open_records = [node for node in sorted(totals) if node not in self._ended]
            done = not still_followed(current, engine, self._stored)
            if not done and current is not None and current.status in FINAL_JOB_STATUSES:
                # Final with every record closed: one more look after the coordinator's next
                # output write could have landed, then complete.
                if open_records:
                    final_seen = None
                elif final_seen is None:
                    final_seen = trio.current_time()
                else:
                    done = trio.current_time() - final_seen >= SETTLE_TIME
            if done:
                for node in open_records:  # left open by a lost coordinator
                    batch += await self._ends(node, await store.get_output(job_id, node))
                status = current.status if current is not None else self._job.status
                yield b"".join(batch) + complete_event(status, engine.sse.stamp()[1])
                return
            quiet = trio.current_time() - quiet_since
            if quiet >= engine.keep_alive_time:
                yield KEEPALIVE
                quiet_since = trio.current_time()
                continue
            wait = min(FOLLOW_POLL, engine.keep_alive_time - quiet)
            if final_seen is not None:
                wait = min(wait, SETTLE_TIME)
            await wait_for_change(self._stored, wait)

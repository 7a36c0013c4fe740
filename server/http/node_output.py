"""The live output stream of one (job, node, channel) (http-api.md §7.12).

A job live on this server streams from its output slot; a job coordinated by another server of
a cluster is followed through the store, woken when that server announces stored output; any
other job replays what the store holds.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import trio
from starlette.responses import Response

from pushjobs.protocol.vocabulary import FINAL_JOB_STATUSES, FINAL_NODE_STATUSES, OutputChannel
from pushjobs.server.http.feeds import (
    DIGITS,
    SSE_HEADERS,
    SseResponse,
    followed_elsewhere,
    quiet_for,
)
from pushjobs.server.http.job_views import no_output
from pushjobs.server.jobs.events import KEEPALIVE, format_sse, make_event
from pushjobs.server.store.records import JobNode

if TYPE_CHECKING:
    from pushjobs.server.http.context import RequestContext
    from pushjobs.server.http.deps import (
        HttpDeps,
        JobEngine,
        JobRecords,
        LiveJobView,
        OutputSlotView,
        StoredEvents,
    )
    from pushjobs.server.store.records import Job, OutputRecord

# The largest SSE `output` piece (http-api.md §7.13): an HTTP limit, kept apart from the ZeroMQ
# `output` message limit OUTPUT_CHUNK_LIMIT (wire-protocol.md §9) though the values agree.
MAX_SSE_CHUNK = 32768
# A reader of a job followed elsewhere looks at the store at least this often, whatever the
# notifications say (a lost coordinator announces nothing).
FOLLOW_POLL = 2.0
# The coordinator writes output at most every 0.5 s, in a transaction of its own: a node seen
# final without a record is given this long for one to appear.
SETTLE_TIME = 1.0


async def output_stream(
    ctx: RequestContext,
    deps: HttpDeps,
    job: Job,
    live: LiveJobView | None,
    node: str,
    channel: str,
) -> Response:
    """The live output stream of (job, node, channel); 404 unless the job captures output
    and the node is one of its nodes."""
    rows: dict[str, JobNode] = {}
    if live is None:
        rows = {row.node_name: row for row in await deps.store.get_job_nodes(job.id)}
        member = node in rows
    else:
        member = node in live.state.nodes
    if not job.capture or not member:
        raise no_output(node, job.id)
    last = ctx.request.headers.get("last-event-id")
    requested = int(last) if last is not None and DIGITS.fullmatch(last) else None
    stored = deps.stored_events
    if live is None and stored is not None and followed_elsewhere(job, deps.jobs):
        follower = FollowedOutput(deps.jobs, deps.store, stored, job, node, channel)
        return SseResponse(follower.events(requested), headers=SSE_HEADERS)
    stream = OutputStream(deps.jobs, deps.store, job, node, channel, rows.get(node), requested)
    return SseResponse(stream.events(), headers=SSE_HEADERS)


def utf8_pieces(
    data: bytes | bytearray, start: int, end: int, size: int = MAX_SSE_CHUNK
) -> Iterator[tuple[int, bytes]]:
    """Split data[start:end] into (offset, piece) with pieces ≤ size, preferring cuts between
    UTF-8 characters."""
    pos = start
    while pos < end:
        cut = min(pos + size, end)
        if cut < end:
            back = cut
            while back > pos and cut - back < 3 and (data[back] & 0xC0) == 0x80:
                back -= 1
            if back > pos and (data[back] & 0xC0) != 0x80:
                cut = back
        yield pos, bytes(data[pos:cut])
        pos = cut


def output_event(offset: int, piece: bytes, stamp: tuple[float, str]) -> bytes:
    """An `output` event (§7.12): id = offset after the chunk, text or base64 data."""
    try:
        text, encoding = piece.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(piece).decode("ascii"), "base64"
    data = {"timestamp": stamp[1], "offset": offset, "encoding": encoding, "data": text}
    return format_sse("output", str(offset + len(piece)), data)


def end_event(row: JobNode | None, length: int, omitted: int, stamp: tuple[float, str]) -> bytes:
    """The `end` event: the node's status next to the channel's stored length."""
    data = {
        "status": row.status if row else None,
        "exit_status": row.exit_status if row else None,
        "signal": row.signal if row else None,
        "bytes": length,
        "omitted_bytes": omitted,
    }
    return make_event("end", "end", 0, stamp, data).wire


def channel_of(record: OutputRecord | None, channel: str) -> tuple[bytes, int]:
    """A record's bytes and omitted count on `channel` (nothing for no record)."""
    if record is None:
        return b"", 0
    if channel == OutputChannel.STDOUT:
        return record.stdout, record.stdout_omitted
    return record.stderr, record.stderr_omitted


def still_followed(job: Job | None, engine: JobEngine, stored: StoredEvents) -> bool:
    """Whether a job of another server may still change: it is not final and its coordinator
    may still finish it, or it finished within the grace period and its coordinator lives."""
    if job is None:
        return False
    if job.status in FINAL_JOB_STATUSES and not stored.is_alive(job.coordinator or ""):
        return False
    return followed_elsewhere(job, engine)


async def wait_for_change(stored: StoredEvents, seconds: float) -> None:
    """Until the store announces output or job events, at most `seconds`."""
    output, events = stored.output_changed.event, stored.events_changed.event
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:

            async def wake(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wake, output)
            nursery.start_soon(wake, events)


class OutputStream:
    """The live output stream of one (job, node, channel) of this server (or replayed)."""

    def __init__(
        self,
        engine: JobEngine,
        store: JobRecords,
        job: Job,
        node: str,
        channel: str,
        row: JobNode | None,
        requested: int | None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.job = job
        self.node = node
        self.channel = channel
        self.row = row
        self.requested = requested

    async def _node_row(self) -> JobNode | None:
        live = self.engine.live_job(self.job.org_name, self.job.id)
        if live is not None:
            n = live.state.nodes.get(self.node)
            if n is not None:
                return JobNode.of(self.job.id, n)
        if self.row is None:
            rows = await self.store.get_job_nodes(self.job.id)
            self.row = next((row for row in rows if row.node_name == self.node), None)
        return self.row

    async def _snapshot(
        self, slot: OutputSlotView | None
    ) -> tuple[bytes | bytearray, int, trio.Event | None]:
        """The channel's bytes so far, its omitted count, and what to wait for before the next
        look (None: the output is complete)."""
        record = slot.record if slot is not None else None
        if slot is not None and record is not None:
            output = record.channel(self.channel)
            return output.data, output.omitted, None if record.closed else slot.changed.event
        row = await self._node_row()
        final = row is None or row.status in FINAL_NODE_STATUSES
        if slot is not None and (slot.done or final):
            return b"", 0, None  # a final node without a record: end at once
        live = self.engine.live_job(self.job.org_name, self.job.id)
        if live is not None and not final:
            return b"", 0, self.engine.output_activity.event
        data, omitted = channel_of(
            await self.store.get_output(self.job.id, self.node), self.channel
        )
        return data, omitted, None

    async def events(self) -> AsyncIterator[bytes]:
        """`output` events from `requested` on (unknown offsets start over), then `end`."""
        engine = self.engine
        sent: int | None = None
        slot: OutputSlotView | None = None
        while True:
            if slot is None:
                slot = engine.output_slot(self.job.id, self.node)
            data, omitted, waiter = await self._snapshot(slot)
            length = len(data)
            if sent is None:
                sent = self.requested if self.requested is not None else 0
                if sent > length:
                    sent = 0
            if length > sent:
                for offset, piece in utf8_pieces(data, sent, length):
                    yield output_event(offset, piece, engine.sse.stamp())
                sent = length
                continue
            if waiter is None:
                yield end_event(await self._node_row(), length, omitted, engine.sse.stamp())
                return
            if await quiet_for(waiter, engine.keep_alive_time):
                yield KEEPALIVE


class FollowedOutput:
    """The output stream of a node in a job coordinated by another server: what the store
    holds, then more each time that server announces stored output, until the record closes
    (or the job can no longer change)."""

    def __init__(
        self,
        engine: JobEngine,
        store: JobRecords,
        stored: StoredEvents,
        job: Job,
        node: str,
        channel: str,
    ) -> None:
        self.engine = engine
        self.store = store
        self.stored = stored
        self.job = job
        self.node = node
        self.channel = channel

    async def _row(self) -> JobNode | None:
        rows = await self.store.get_job_nodes(self.job.id)
        return next((row for row in rows if row.node_name == self.node), None)

    async def _finished(self, record: OutputRecord | None, settled: bool) -> bool:
        """No more output will come: the record is closed; or the node is final without a
        record (once `settled`); or the job can no longer change."""
        if record is not None and record.closed:
            return True
        current = await self.store.get_job(self.job.org_name, self.job.id)
        if not still_followed(current, self.engine, self.stored):
            return True
        if record is None and settled:
            row = await self._row()
            return row is None or row.status in FINAL_NODE_STATUSES
        return False

    async def events(self, requested: int | None) -> AsyncIterator[bytes]:
        engine = self.engine
        sent: int | None = None
        quiet_since = trio.current_time()
        settled = False
        while True:
            record = await self.store.get_output(self.job.id, self.node)
            data, omitted = channel_of(record, self.channel)
            if sent is None:
                sent = requested if requested is not None and requested <= len(data) else 0
            if len(data) > sent:
                for offset, piece in utf8_pieces(data, sent, len(data)):
                    yield output_event(offset, piece, engine.sse.stamp())
                sent = len(data)
                quiet_since = trio.current_time()
                continue
            if await self._finished(record, settled):
                yield end_event(await self._row(), len(data), omitted, engine.sse.stamp())
                return
            quiet = trio.current_time() - quiet_since
            if quiet >= engine.keep_alive_time:
                yield KEEPALIVE
                quiet_since = trio.current_time()
                continue
            await wait_for_change(self.stored, min(FOLLOW_POLL, engine.keep_alive_time - quiet))
            settled = trio.current_time() - quiet_since >= SETTLE_TIME

"""The SSE streams: the job feed and the org feed (http-api.md §7.9) and the live output
stream (§7.12).

Every stream waits for the next change of what it follows and sends a keepalive comment when
`keep_alive_time` passes without one.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import trio
from starlette.responses import Response, StreamingResponse

from pushjobs.protocol.vocabulary import (
    FINAL_JOB_STATUSES,
    FINAL_NODE_STATUSES,
    MediaType,
    OutputChannel,
)
from pushjobs.server.http.job_views import (
    group_nodes,
    job_not_found,
    job_object,
    no_output,
)
from pushjobs.server.jobs.events import KEEPALIVE, format_sse, make_event
from pushjobs.server.store.records import JobNode

if TYPE_CHECKING:
    from starlette.types import Send

    from pushjobs.server.http.context import RequestContext
    from pushjobs.server.http.deps import (
        HttpDeps,
        JobEngine,
        JobRecords,
        LiveJobView,
        OutputSlotView,
        StoredEvents,
    )
    from pushjobs.server.store.records import Job

SSE_HEADERS = {
    "content-type": MediaType.EVENT_STREAM.value,
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}
MAX_SSE_CHUNK = 32768
_DIGITS = re.compile(r"[0-9]{1,10}")


class SseResponse(StreamingResponse):
    """A streaming response whose end of body is sent shielded from cancellation.

    Starlette streams and watches for `http.disconnect` side by side and cancels both when
    either finishes. Sending the last body message makes hypercorn report the stream closed,
    which delivers `http.disconnect` at once; the watcher then cancelled that very send before
    hypercorn had closed a `Connection: close` socket, so finished streams kept their
    connection (and fd) open until the client went away.
    """

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        with trio.CancelScope(shield=True):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _quiet_for(event: trio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; True when the time passed first (send a keepalive)."""
    with trio.move_on_after(seconds) as scope:
        await event.wait()
    return scope.cancelled_caught


def last_event_id(ctx: RequestContext) -> str | None:
    value = ctx.request.headers.get("last-event-id")
    return value.strip() if value else None


# ---- job feed and org feed (§7.9) --------------------------------------------------------


async def job_feed(ctx: RequestContext, deps: HttpDeps) -> Response:
    """The job feed: live stream, or one `summary` event after the grace period."""
    org, _ = ctx.authorized()
    job_id = ctx.params["id"]
    engine = deps.jobs
    live = engine.live_job(org.name, job_id)
    if live is not None:
        start = live.log.replay_start(last_event_id(ctx))
        return SseResponse(_job_events(engine, live, start), headers=SSE_HEADERS)
    job = await deps.store.get_job(org.name, job_id)
    if job is None:
        raise job_not_found(job_id)
    stored = deps.stored_events
    if stored is not None and _followed_elsewhere(job, engine):
        start = _job_seq(last_event_id(ctx))
        return SseResponse(_stored_job_events(deps, stored, job, start), headers=SSE_HEADERS)
    nodes = group_nodes(await deps.store.get_job_nodes(job_id))
    summary = make_event("summary", "job-1", 1, engine.sse.stamp(), job_object(job, nodes))
    return Response(summary.wire, headers=SSE_HEADERS)


async def _job_events(engine: JobEngine, live: LiveJobView, seq: int) -> AsyncIterator[bytes]:
    while True:
        events = live.log.since(seq)
        if events:
            # Events already recorded go out in one write: replaying a large job's history
            # would otherwise cost one network write per event.
            batch = []
            for event in events:
                batch.append(event.wire)
                seq = event.seq
                if event.name == "job_complete":
                    yield b"".join(batch)
                    return
            yield b"".join(batch)
            continue
        if live.state.finished:
            return
        if await _quiet_for(live.changed.event, engine.keep_alive_time):
            yield KEEPALIVE


def _followed_elsewhere(job: Job, engine: JobEngine) -> bool:
    """A job of another server that is running, or finished within the grace period."""
    if job.status not in FINAL_JOB_STATUSES:
        return True
    return time.time() - job.updated_at < engine.wait_complete_time + 1


def _job_seq(last: str | None) -> int:
    """The sequence number of a `job-N` id (0: from the start)."""
    if last is not None and last.startswith("job-") and _DIGITS.fullmatch(last[4:]):
        return int(last[4:])
    return 0


async def _stored_job_events(
    deps: HttpDeps, stored: StoredEvents, job: Job, seq: int
) -> AsyncIterator[bytes]:
    """A job coordinated by another server, followed through its stored events until
    `job_complete`. A job that ended without one (its server was lost and the job crashed by
    a takeover) gets a `job_complete` with its stored status — but only once its coordinator
    is gone: a live coordinator may store the job's row before its last events."""
    engine = deps.jobs
    while True:
        waiter = stored.events_changed.event
        rows = await stored.events_after(job.id, seq)
        if rows:
            yield b"".join(wire for _, _, wire in rows)
            seq = rows[-1][0]
            if any(name == "job_complete" for _, name, _ in rows):
                return
            continue
        current = await deps.store.get_job(job.org_name, job.id)
        if current is None:
            return
        if current.status in FINAL_JOB_STATUSES and not stored.is_alive(current.coordinator or ""):
            data = {"status": current.status}
            stamp = engine.sse.stamp()
            yield make_event("job_complete", f"job-{seq + 1}", seq + 1, stamp, data).wire
            return
        if await _quiet_for(waiter, engine.keep_alive_time):
            yield KEEPALIVE


async def org_feed(ctx: RequestContext, deps: HttpDeps) -> Response:
    """The org feed: `start`/`job_complete` of every job, never ending on its own."""
    org, _ = ctx.authorized()
    engine = deps.jobs
    feed = engine.org_feed(org.name)
    first, seq = feed.log.replay(last_event_id(ctx), engine.sse.stamp())

    async def events() -> AsyncIterator[bytes]:
        nonlocal seq
        if first:
            yield b"".join(event.wire for event in first)
        while True:
            new = feed.log.since(seq)
            if new:
                yield b"".join(event.wire for event in new)
                seq = new[-1].seq
                continue
            if await _quiet_for(feed.changed.event, engine.keep_alive_time):
                yield KEEPALIVE

    return SseResponse(events(), headers=SSE_HEADERS)


# ---- live output (§7.12) -----------------------------------------------------------------


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
    requested = int(last) if last is not None and _DIGITS.fullmatch(last) else None
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


class OutputStream:
    """The live output stream of one (job, node, channel)."""

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

    async def _stored(self) -> tuple[bytes, int]:
        record = await self.store.get_output(self.job.id, self.node)
        if record is None:
            return b"", 0
        if self.channel == OutputChannel.STDOUT:
            return record.stdout, record.stdout_omitted
        return record.stderr, record.stderr_omitted

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
        data, omitted = await self._stored()
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
                yield await self._end(length, omitted)
                return
            if await _quiet_for(waiter, engine.keep_alive_time):
                yield KEEPALIVE

    async def _end(self, length: int, omitted: int) -> bytes:
        row = await self._node_row()
        data = {
            "status": row.status if row else None,
            "exit_status": row.exit_status if row else None,
            "signal": row.signal if row else None,
            "bytes": length,
            "omitted_bytes": omitted,
        }
        return make_event("end", "end", 0, self.engine.sse.stamp(), data).wire

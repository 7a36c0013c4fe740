"""The SSE job feed and org feed (http-api.md §7.9), and what every SSE stream shares.

Every stream waits for the next change of what it follows and sends a keepalive comment when
`keep_alive_time` passes without one.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio
from starlette.responses import Response, StreamingResponse

from pushjobs.protocol.vocabulary import (
    FINAL_JOB_STATUSES,
    MediaType,
)
from pushjobs.server.http.job_views import (
    group_nodes,
    job_not_found,
    job_object,
)
from pushjobs.server.jobs.events import KEEPALIVE, make_event

if TYPE_CHECKING:
    from starlette.types import Send

    from pushjobs.server.http.context import RequestContext
    from pushjobs.server.http.deps import (
        HttpDeps,
        JobEngine,
        LiveJobView,
        StoredEvents,
    )
    from pushjobs.server.store.records import Job

SSE_HEADERS = {
    "content-type": MediaType.EVENT_STREAM.value,
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}
DIGITS = re.compile(r"[0-9]{1,10}")


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


async def quiet_for(event: trio.Event, seconds: float) -> bool:
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
    if stored is not None and followed_elsewhere(job, engine):
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
        if await quiet_for(live.changed.event, engine.keep_alive_time):
            yield KEEPALIVE


def followed_elsewhere(job: Job, engine: JobEngine) -> bool:
    """A job of another server that is running, or finished within the grace period."""
    if job.status not in FINAL_JOB_STATUSES:
        return True
    return time.time() - job.updated_at < engine.wait_complete_time + 1


def _job_seq(last: str | None) -> int:
    """The sequence number of a `job-N` id (0: from the start)."""
    if last is not None and last.startswith("job-") and DIGITS.fullmatch(last[4:]):
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
        if await quiet_for(waiter, engine.keep_alive_time):
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
            if await quiet_for(feed.changed.event, engine.keep_alive_time):
                yield KEEPALIVE

    return SseResponse(events(), headers=SSE_HEADERS)

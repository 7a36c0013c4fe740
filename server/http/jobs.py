"""HTTP handlers for jobs (http-api.md §7.3–§7.6, §7.9–§7.12): JSON views, abort, SSE feeds."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import trio
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.server.http.errors import HttpError, RequestContext
from pushjobs.server.http.responses import json_response
from pushjobs.server.jobs.events import KEEPALIVE, format_sse, make_event
from pushjobs.server.jobs.manager import JobAlreadyFinished, JobNotFound
from pushjobs.server.jobs.state import FINAL_NODE_STATUSES
from pushjobs.server.jobs.validation import JobValidationError, validate_job_body
from pushjobs.server.store.records import JOB_STATUSES, Job, JobNode, OutputTotals

if TYPE_CHECKING:
    from pushjobs.server.jobs.manager import JobManager, LiveJob, OutputSlot
    from pushjobs.server.runtime import ServerRuntime

EVENT_STREAM = "text/event-stream"
OCTET_STREAM = "application/octet-stream"
SSE_HEADERS = {
    "content-type": EVENT_STREAM,
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


# ---- views ---------------------------------------------------------------------------


def _date(t: float | None) -> str | None:
    return None if t is None else format_rfc1123(t)


def job_object(
    job: Job, nodes: dict[str, list[str]] | None, *, include_file: bool = False
) -> dict[str, Any]:
    """The job object of §7.5 (without `nodes` when `nodes` is None, as in §7.3)."""
    obj: dict[str, Any] = {
        "id": job.id,
        "command": job.command,
        "status": job.status,
        "run_timeout": job.run_timeout,
        "created_at": format_rfc1123(job.created_at),
        "updated_at": format_rfc1123(max(job.updated_at, job.created_at)),
    }
    if nodes is not None:
        obj["nodes"] = nodes
    if job.run_as_user is not None:
        obj["user"] = job.run_as_user
    if job.dir is not None:
        obj["dir"] = job.dir
    if job.env is not None:
        obj["env"] = job.env
    if job.capture:
        obj["capture_output"] = True
    if job.file is not None:
        if include_file:
            obj["file"] = job.file
        else:
            obj["file_specified"] = True
    return obj


def _group_nodes(rows: list[JobNode]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for row in rows:
        result.setdefault(row.status, []).append(row.node_name)
    for names in result.values():
        names.sort()
    return result


def _not_found(job_id: str) -> HttpError:
    return HttpError(404, f"job '{job_id}' not found")


def _no_output(node: str, job_id: str) -> HttpError:
    return HttpError(404, f"no output for node '{node}' in job '{job_id}'")


async def _job_and_nodes(
    ctx: RequestContext, rt: ServerRuntime
) -> tuple[Job, dict[str, list[str]], LiveJob | None]:
    """The job (live view first) and its nodes by status; 404 when not in the org."""
    job_id = ctx.params["id"]
    live = rt.jobs.live_job(ctx.org.name, job_id)
    if live is not None:
        return live.job, live.state.nodes_by_status(), live
    job = await rt.store.get_job(ctx.org.name, job_id)
    if job is None:
        raise _not_found(job_id)
    return job, _group_nodes(await rt.store.get_job_nodes(job_id)), None


# ---- GET/POST org/jobs ---------------------------------------------------------------


def _query_filters(ctx: RequestContext) -> tuple[list[str] | None, int | None, int]:
    query = ctx.request.query_params
    statuses = None
    if "status" in query:
        value = query["status"]
        statuses = value.split(",")
        if any(status not in JOB_STATUSES for status in statuses):
            raise HttpError(400, f"invalid status filter '{value}'")
    limit = None
    if "limit" in query:
        value = query["limit"]
        if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= 1000:
            raise HttpError(400, f"invalid limit '{value}' (expected an integer from 1 to 1000)")
        limit = int(value)
    offset = 0
    if "offset" in query:
        value = query["offset"]
        if not _DIGITS.fullmatch(value):
            raise HttpError(400, f"invalid offset '{value}' (expected an integer >= 0)")
        offset = int(value)
    return statuses, limit, offset


async def list_jobs(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """GET org/jobs: summaries, newest first (§7.3)."""
    statuses, limit, offset = _query_filters(ctx)
    jobs = await rt.store.list_jobs(ctx.org.name, statuses, limit, offset)
    result = []
    for job in jobs:
        live = rt.jobs.live_job(ctx.org.name, job.id)
        result.append(job_object(live.job if live is not None else job, None))
    return json_response(result)


def _job_uri(ctx: RequestContext, rt: ServerRuntime, job_id: str) -> str:
    request = ctx.request
    # An empty X-Forwarded-Proto (or an empty first element) counts as absent.
    forwarded = request.headers.get("x-forwarded-proto") or ""
    scheme = forwarded.split(",")[0].strip() or request.url.scheme
    host_header = request.headers.get("host")
    if host_header:
        host, port = _split_host(host_header.strip())
    else:
        host, port = rt.settings.server_name, str(rt.http_port)
    netloc = host if port in (None, "", "80", "443") else f"{host}:{port}"
    return f"{scheme}://{netloc}/organizations/{quote(ctx.org.name, safe='')}/pushy/jobs/{job_id}"


def _split_host(value: str) -> tuple[str, str | None]:
    """Split a Host header into host and port (IPv6 literals keep their brackets)."""
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return value, None
        rest = value[end + 1 :]
        return value[: end + 1], rest[1:] if rest.startswith(":") else None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return value, None
    return host, port


async def create_job(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """POST org/jobs: 415, validation, start, 201 with Location (§7.4)."""
    content_type = ctx.request.headers.get("content-type") or OCTET_STREAM
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise HttpError(415, "Content-Type must be application/json")
    try:
        spec = validate_job_body(ctx.body, int(rt.settings.timing.default_run_timeout))
    except JobValidationError as exc:
        raise HttpError(400, exc.message, string_shape=True) from None
    job_id = await rt.jobs.start_job(ctx.org, ctx.requestor, spec)
    uri = _job_uri(ctx, rt, job_id)
    return json_response({"uri": uri}, status=201, headers={"Location": uri})


async def get_job(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """GET org/jobs/{id} (§7.5)."""
    job, nodes, _ = await _job_and_nodes(ctx, rt)
    include_file = ctx.request.query_params.get("include_file") == "true"
    return json_response(job_object(job, nodes, include_file=include_file))


async def abort_job(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """POST org/jobs/{id}/abort (§7.10): 200 with the aborted job, 404, or 409."""
    job_id = ctx.params["id"]
    try:
        live = await rt.jobs.abort_job(ctx.org, job_id)
    except JobNotFound:
        raise _not_found(job_id) from None
    except JobAlreadyFinished as exc:
        raise HttpError(
            409, f"job '{job_id}' has already finished with status '{exc.status}'"
        ) from None
    return json_response(job_object(live.job, live.state.nodes_by_status()))


async def job_nodes(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """GET org/jobs/{id}/nodes (§7.11): one element per node, sorted by name."""
    job_id = ctx.params["id"]
    live = rt.jobs.live_job(ctx.org.name, job_id)
    if live is not None:
        rows = [
            JobNode(job_id, n.name, n.status, n.exit_status, n.signal, n.started_at, n.finished_at)
            for n in live.state.nodes.values()
        ]
    else:
        if await rt.store.get_job(ctx.org.name, job_id) is None:
            raise _not_found(job_id)
        rows = await rt.store.get_job_nodes(job_id)
    rows.sort(key=lambda row: row.node_name)
    totals: dict[str, OutputTotals] = {}
    for row in rows:
        slot = rt.jobs.output_slot(job_id, row.node_name)
        if slot is not None and slot.record is not None:
            totals[row.node_name] = slot.record.totals()
    if len(totals) < len(rows):
        for node, found in (await rt.store.get_output_totals(job_id)).items():
            totals.setdefault(node, found)
    none = OutputTotals()
    result = []
    for row in rows:
        counts = totals.get(row.node_name, none)
        result.append(
            {
                "node_name": row.node_name,
                "status": row.status,
                "exit_status": row.exit_status,
                "signal": row.signal,
                "started_at": _date(row.started_at),
                "finished_at": _date(row.finished_at),
                "stdout_bytes": counts.stdout_total,
                "stderr_bytes": counts.stderr_total,
                "truncated": counts.truncated,
            }
        )
    return json_response(result)


# ---- output (§7.6, §7.12) ------------------------------------------------------------


async def get_output(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """Stored output as octet-stream, or the live SSE stream when negotiated."""
    job_id, node, channel = ctx.params["id"], ctx.params["node"], ctx.params["channel"]
    org = ctx.org.name
    live = rt.jobs.live_job(org, job_id)
    job = live.job if live is not None else await rt.store.get_job(org, job_id)
    if job is None:
        raise _not_found(job_id)
    if ctx.media_type == EVENT_STREAM:
        return await _output_stream(ctx, rt, job, live, node, channel)
    slot = rt.jobs.output_slot(job_id, node)
    if slot is not None and slot.record is not None:
        data = bytes(slot.record.channel(channel).data)
    else:
        record = await rt.store.get_output(job_id, node)
        if record is None:
            raise _no_output(node, job_id)
        data = record.stdout if channel == "stdout" else record.stderr
    return Response(data, media_type=OCTET_STREAM)


async def _output_stream(
    ctx: RequestContext,
    rt: ServerRuntime,
    job: Job,
    live: LiveJob | None,
    node: str,
    channel: str,
) -> Response:
    rows: dict[str, JobNode] = {}
    if live is None:
        rows = {row.node_name: row for row in await rt.store.get_job_nodes(job.id)}
        member = node in rows
    else:
        member = node in live.state.nodes
    if not job.capture or not member:
        raise _no_output(node, job.id)
    last = ctx.request.headers.get("last-event-id")
    requested = int(last) if last is not None and _DIGITS.fullmatch(last) else None
    stream = _OutputStream(rt, job, node, channel, rows.get(node), requested)
    return SseResponse(stream.events(), headers=SSE_HEADERS)


def utf8_pieces(data: bytes, start: int, end: int, size: int = MAX_SSE_CHUNK):
    """Split data[start:end] into pieces ≤ size, preferring cuts between UTF-8 characters."""
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


class _OutputStream:
    """The live output stream of one (job, node, channel)."""

    def __init__(
        self,
        rt: ServerRuntime,
        job: Job,
        node: str,
        channel: str,
        row: JobNode | None,
        requested: int | None,
    ) -> None:
        self.rt = rt
        self.manager: JobManager = rt.jobs
        self.job = job
        self.node = node
        self.channel = channel
        self.row = row
        self.requested = requested

    async def _node_row(self) -> JobNode | None:
        live = self.manager.live_job(self.job.org_name, self.job.id)
        if live is not None:
            n = live.state.nodes.get(self.node)
            if n is not None:
                return JobNode(
                    self.job.id,
                    n.name,
                    n.status,
                    n.exit_status,
                    n.signal,
                    n.started_at,
                    n.finished_at,
                )
        if self.row is None:
            rows = await self.rt.store.get_job_nodes(self.job.id)
            self.row = next((row for row in rows if row.node_name == self.node), None)
        return self.row

    async def _stored(self) -> tuple[bytes | None, int]:
        record = await self.rt.store.get_output(self.job.id, self.node)
        if record is None:
            return None, 0
        if self.channel == "stdout":
            return record.stdout, record.stdout_omitted
        return record.stderr, record.stderr_omitted

    async def events(self) -> AsyncIterator[bytes]:
        manager = self.manager
        sent: int | None = None
        slot: OutputSlot | None = None
        while True:
            waiter: trio.Event | None = None
            data: bytes | bytearray | None = None
            omitted = 0
            if slot is None:
                slot = manager.output_slot(self.job.id, self.node)
            record = slot.record if slot is not None else None
            if record is not None:
                data = record.channel(self.channel).data
                omitted = record.channel(self.channel).omitted
                closed = record.closed
                waiter = slot.changed.event
            else:
                row = await self._node_row()
                final = row is None or row.status in FINAL_NODE_STATUSES
                live = manager.live_job(self.job.org_name, self.job.id)
                if slot is not None and (slot.done or final):
                    closed = True  # a final node without a record: end at once
                elif live is not None and not final:
                    closed = False
                    waiter = manager.output_activity.event
                else:
                    data, omitted = await self._stored()
                    closed = True
            length = len(data) if data is not None else 0
            if sent is None:
                sent = self.requested if self.requested is not None else 0
                if sent > length:
                    sent = 0
            if length > sent:
                for offset, piece in utf8_pieces(data, sent, length):
                    yield output_event(offset, piece, manager.sse.stamp())
                sent = length
                continue
            if closed:
                yield await self._end(length, omitted)
                return
            with trio.move_on_after(manager.keep_alive_time) as scope:
                await waiter.wait()
            if scope.cancelled_caught:
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
        return make_event("end", "end", 0, self.manager.sse.stamp(), data).wire


# ---- feeds (§7.9) --------------------------------------------------------------------


def _last_event_id(ctx: RequestContext) -> str | None:
    value = ctx.request.headers.get("last-event-id")
    return value.strip() if value else None


async def job_feed(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """The job feed: live stream, or one `summary` event after the grace period."""
    job_id = ctx.params["id"]
    manager = rt.jobs
    live = manager.live_job(ctx.org.name, job_id)
    if live is not None:
        start = live.log.replay_start(_last_event_id(ctx))
        return SseResponse(_job_events(manager, live, start), headers=SSE_HEADERS)
    job = await rt.store.get_job(ctx.org.name, job_id)
    if job is None:
        raise _not_found(job_id)
    nodes = _group_nodes(await rt.store.get_job_nodes(job_id))
    summary = make_event("summary", "job-1", 1, manager.sse.stamp(), job_object(job, nodes))
    return Response(summary.wire, headers=SSE_HEADERS)


async def _job_events(manager: JobManager, live: LiveJob, seq: int) -> AsyncIterator[bytes]:
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
        waiter = live.changed.event
        with trio.move_on_after(manager.keep_alive_time) as scope:
            await waiter.wait()
        if scope.cancelled_caught:
            yield KEEPALIVE


async def org_feed(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """The org feed: `start`/`job_complete` of every job, never ending on its own."""
    manager = rt.jobs
    feed = manager.org_feed(ctx.org.name)
    first, seq = feed.log.replay(_last_event_id(ctx), manager.sse.stamp())

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
            waiter = feed.changed.event
            with trio.move_on_after(manager.keep_alive_time) as scope:
                await waiter.wait()
            if scope.cancelled_caught:
                yield KEEPALIVE

    return SseResponse(events(), headers=SSE_HEADERS)

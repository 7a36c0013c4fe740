"""HTTP handlers for jobs (http-api.md §7.3–§7.6, §7.10, §7.11): JSON views, start, abort,
stored output. The SSE streams are in `feeds.py`, `node_output.py` and `output_feed.py`."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

import trio
from starlette.responses import Response

from pushjobs.protocol.selector import parse_selector
from pushjobs.protocol.vocabulary import FINAL_JOB_STATUSES, MediaType, OutputChannel
from pushjobs.server.http import node_output
from pushjobs.server.http.errors import HttpError
from pushjobs.server.http.inventory import known_nodes
from pushjobs.server.http.job_filters import next_page_query, parse_list_query
from pushjobs.server.http.job_views import (
    format_date,
    group_nodes,
    job_not_found,
    job_object,
    no_output,
)
from pushjobs.server.http.responses import json_response
from pushjobs.server.jobs.manager import JobAlreadyFinished, JobElsewhere, JobNotFound
from pushjobs.server.jobs.validation import JobValidationError, validate_job_body
from pushjobs.server.store.records import JobNode, JobSpec, OutputTotals

if TYPE_CHECKING:
    from pushjobs.server.http.context import RequestContext
    from pushjobs.server.http.deps import HttpDeps, LiveJobView
    from pushjobs.server.principals.requestor import Requestor
    from pushjobs.server.store.records import Job


async def _job_and_nodes(
    ctx: RequestContext, deps: HttpDeps
) -> tuple[Job, dict[str, list[str]], LiveJobView | None]:
    """The job (live view first) and its nodes by status; 404 when not in the org."""
    org, _ = ctx.authorized()
    job_id = ctx.params["id"]
    live = deps.jobs.live_job(org.name, job_id)
    if live is not None:
        return live.job, live.state.nodes_by_status(), live
    job = await deps.store.get_job(org.name, job_id)
    if job is None:
        raise job_not_found(job_id)
    return job, group_nodes(await deps.store.get_job_nodes(job_id)), None


# ---- GET/POST org/jobs ---------------------------------------------------------------


async def list_jobs(ctx: RequestContext, deps: HttpDeps) -> Response:
    """GET org/jobs: summaries, newest first (§7.3), filtered; with `limit`, a `Link` to the
    next page when there is one (one row more is fetched to know)."""
    org, _ = ctx.authorized()
    query = parse_list_query(ctx.request.query_params)
    fetch = None if query.limit is None else query.limit + 1
    jobs = await deps.store.list_jobs(
        org.name, query.statuses, fetch, query.offset, filters=query.filters
    )
    headers: dict[str, str] = {}
    if query.limit is not None and len(jobs) > query.limit:
        jobs = jobs[: query.limit]
        next_url = _next_page_url(ctx, deps, org.name, query.offset + query.limit)
        headers["Link"] = f'<{next_url}>; rel="next"'
    result = []
    for job in jobs:
        live = deps.jobs.live_job(org.name, job.id)
        result.append(job_object(live.job if live is not None else job, None))
    return json_response(result, headers=headers)


def _next_page_url(ctx: RequestContext, deps: HttpDeps, org_name: str, offset: int) -> str:
    """This listing's URL with `offset` replaced, every other parameter kept as sent."""
    page = next_page_query(ctx.request.scope.get("query_string", b""), offset)
    return f"{_jobs_url(ctx, deps, org_name)}?{page}"


def _job_uri(ctx: RequestContext, deps: HttpDeps, org_name: str, job_id: str) -> str:
    return f"{_jobs_url(ctx, deps, org_name)}/{job_id}"


def _jobs_url(ctx: RequestContext, deps: HttpDeps, org_name: str) -> str:
    """The absolute URL of the org's `jobs` as the client reached the server (X-Forwarded-Proto,
    Host)."""
    request = ctx.request
    # An empty X-Forwarded-Proto (or an empty first element) counts as absent.
    forwarded = request.headers.get("x-forwarded-proto") or ""
    scheme = forwarded.split(",")[0].strip() or request.url.scheme
    host_header = request.headers.get("host")
    port: str | None
    if host_header:
        host, port = _split_host(host_header.strip())
    else:
        # No Host header (HTTP/1.0): the server name and the port this connection reached.
        host, port = deps.settings.server_name, _local_port(ctx)
    netloc = host if port in (None, "", "80", "443") else f"{host}:{port}"
    return f"{scheme}://{netloc}/organizations/{quote(org_name, safe='')}/pushy/jobs"


def _local_port(ctx: RequestContext) -> str | None:
    """The port of the socket that accepted the request (ASGI `server`), when known."""
    server = ctx.request.scope.get("server")
    return str(server[1]) if server and server[1] is not None else None


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


async def create_job(ctx: RequestContext, deps: HttpDeps) -> Response:
    """POST org/jobs: 415, validation, start, 201 with Location (§7.4)."""
    org, requestor = ctx.authorized()
    content_type = ctx.request.headers.get("content-type") or MediaType.OCTET_STREAM
    if content_type.split(";", 1)[0].strip().lower() != MediaType.JSON:
        raise HttpError(415, "Content-Type must be application/json")
    try:
        spec = validate_job_body(ctx.body, int(deps.settings.timing.default_run_timeout))
    except JobValidationError as exc:
        raise HttpError(400, exc.message, string_shape=True) from None
    if spec.selector is not None:
        spec = await _resolve_selector(deps, org.name, spec)
    job_id = await deps.jobs.start_job(org, requestor, spec)
    uri = _job_uri(ctx, deps, org.name, job_id)
    return json_response({"uri": uri}, status=201, headers={"Location": uri})


async def _resolve_selector(deps: HttpDeps, org_name: str, spec: JobSpec) -> JobSpec:
    """The spec with the nodes its selector matches now (online or ever connected, §7.4)."""
    assert spec.selector is not None
    selector = parse_selector(spec.selector)
    matches = [
        node.name
        for node in await known_nodes(deps, org_name, registered=False)
        if selector.matches(node.labels)
    ]
    if not matches:
        raise HttpError(400, f"no node matches selector '{spec.selector}'", string_shape=True)
    return spec.with_matches(matches)


async def get_job(ctx: RequestContext, deps: HttpDeps) -> Response:
    """GET org/jobs/{id} (§7.5)."""
    job, nodes, _ = await _job_and_nodes(ctx, deps)
    include_file = ctx.request.query_params.get("include_file") == "true"
    return json_response(job_object(job, nodes, include_file=include_file))


async def abort_job(ctx: RequestContext, deps: HttpDeps) -> Response:
    """POST org/jobs/{id}/abort (§7.10): 200 with the aborted job, 404, or 409."""
    org, requestor = ctx.authorized()
    job_id = ctx.params["id"]
    try:
        live = await deps.jobs.abort_job(org, job_id, requestor)
    except JobNotFound:
        raise job_not_found(job_id) from None
    except JobAlreadyFinished as exc:
        raise HttpError(
            409, f"job '{job_id}' has already finished with status '{exc.status}'"
        ) from None
    except JobElsewhere as exc:
        return await _abort_elsewhere(deps, org.name, job_id, requestor, exc.coordinator)
    return json_response(job_object(live.job, live.state.nodes_by_status()))


ABORT_WAIT = 10.0  # seconds an abort passed to another server waits for the job to end


async def _abort_elsewhere(
    deps: HttpDeps, org: str, job_id: str, requestor: Requestor, coordinator: str
) -> Response:
    """A cluster: the abort goes to the server that runs the job; the answer is the job as
    stored once it has ended (or after ABORT_WAIT, as it stands then)."""
    relay = deps.abort_relay
    if relay is None:
        raise HttpError(409, f"job '{job_id}' runs on server '{coordinator}'")
    await relay.relay_abort(coordinator, org, job_id, requestor)
    job = None
    with trio.move_on_after(ABORT_WAIT):
        while True:
            job = await deps.store.get_job(org, job_id)
            if job is None or job.status in FINAL_JOB_STATUSES:
                break
            await trio.sleep(0.2)
    job = job or await deps.store.get_job(org, job_id)
    if job is None:
        raise job_not_found(job_id)
    return json_response(job_object(job, group_nodes(await deps.store.get_job_nodes(job_id))))


async def job_nodes(ctx: RequestContext, deps: HttpDeps) -> Response:
    """GET org/jobs/{id}/nodes (§7.11): one element per node, sorted by name."""
    org, _ = ctx.authorized()
    job_id = ctx.params["id"]
    live = deps.jobs.live_job(org.name, job_id)
    if live is not None:
        rows = [JobNode.of(job_id, n) for n in live.state.nodes.values()]
    else:
        if await deps.store.get_job(org.name, job_id) is None:
            raise job_not_found(job_id)
        rows = await deps.store.get_job_nodes(job_id)
    rows.sort(key=lambda row: row.node_name)
    totals: dict[str, OutputTotals] = {}
    for row in rows:
        slot = deps.jobs.output_slot(job_id, row.node_name)
        if slot is not None and slot.record is not None:
            totals[row.node_name] = slot.record.totals()
    if len(totals) < len(rows):
        for node, found in (await deps.store.get_output_totals(job_id)).items():
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
                "started_at": format_date(row.started_at),
                "finished_at": format_date(row.finished_at),
                "stdout_bytes": counts.stdout_total,
                "stderr_bytes": counts.stderr_total,
                "truncated": counts.truncated,
            }
        )
    return json_response(result)


async def get_output(ctx: RequestContext, deps: HttpDeps) -> Response:
    """GET org/jobs/{id}/output/{node}/{channel} (§7.6): the stored output as octet-stream,
    or the live SSE stream (§7.12) when negotiated."""
    org, _ = ctx.authorized()
    job_id, node, channel = ctx.params["id"], ctx.params["node"], ctx.params["channel"]
    live = deps.jobs.live_job(org.name, job_id)
    job = live.job if live is not None else await deps.store.get_job(org.name, job_id)
    if job is None:
        raise job_not_found(job_id)
    if ctx.media_type == MediaType.EVENT_STREAM:
        return await node_output.output_stream(ctx, deps, job, live, node, channel)
    slot = deps.jobs.output_slot(job_id, node)
    if slot is not None and slot.record is not None:
        data = bytes(slot.record.channel(channel).data)
    else:
        record = await deps.store.get_output(job_id, node)
        if record is None:
            raise no_output(node, job_id)
        data = record.stdout if channel == OutputChannel.STDOUT else record.stderr
    return Response(data, media_type=MediaType.OCTET_STREAM)

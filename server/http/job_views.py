"""The JSON views of jobs and their nodes (http-api.md §7.3, §7.5, §7.11) and the 404s of the
job routes, shared by the job handlers and the feeds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.server.http.errors import HttpError
from pushjobs.server.store.records import JobNode

if TYPE_CHECKING:
    from pushjobs.server.store.records import Job


def format_date(t: float | None) -> str | None:
    """An RFC 1123 date, or None."""
    return None if t is None else format_rfc1123(t)


def job_object(
    job: Job, nodes: dict[str, list[str]] | None, *, include_file: bool = False
) -> dict[str, Any]:
    """The job object of §7.5 (without `nodes` when `nodes` is None, as in §7.3).

    Options and limits appear only when given, `aborted_by` only for a job aborted through the
    API; `requested_by` always.
    """
    obj: dict[str, Any] = {
        "id": job.id,
        "command": job.command,
        "status": job.status,
        "run_timeout": job.run_timeout,
        "created_at": format_rfc1123(job.created_at),
        "updated_at": format_rfc1123(max(job.updated_at, job.created_at)),
        "requested_by": job.requestor_name,
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
    if job.max_concurrency is not None:
        obj["max_concurrency"] = job.max_concurrency
    if job.max_errors is not None:
        obj["max_errors"] = job.max_errors
    if job.aborted_by is not None:
        obj["aborted_by"] = job.aborted_by
    return obj


def group_nodes(rows: list[JobNode]) -> dict[str, list[str]]:
    """Status → sorted node names of stored node rows (the `nodes` member of §7.5)."""
    result: dict[str, list[str]] = {}
    for row in rows:
        result.setdefault(row.status, []).append(row.node_name)
    for names in result.values():
        names.sort()
    return result


def job_not_found(job_id: str) -> HttpError:
    """The 404 of a job that is not in the organization."""
    return HttpError(404, f"job '{job_id}' not found")


def no_output(node: str, job_id: str) -> HttpError:
    """The 404 of output that does not exist."""
    return HttpError(404, f"no output for node '{node}' in job '{job_id}'")

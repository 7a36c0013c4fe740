"""Rows of the SQL store and the records they hold: one column list per table and one
conversion each way, shared by every query that reads or writes that table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeAlias

from pushjobs.server.store.records import Job, JobNode, Org, OutputRecord, User

Row: TypeAlias = tuple[Any, ...]
"""A row as the database returns it, or the parameters of one."""


def secs(t: float | None) -> int | None:
    """Epoch float → stored whole seconds."""
    return None if t is None else int(t)


def from_secs(t: int | None) -> float | None:
    """Stored whole seconds → epoch float."""
    return None if t is None else float(t)


def _upsert_set(columns: Sequence[str]) -> str:
    """`c = excluded.c, ...`: the SET clause of an upsert that rewrites `columns`."""
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


ORG_COLUMNS = "id, name, full_name, created_at"


def org_of(row: Row) -> Org:
    """An `ORG_COLUMNS` row as its record."""
    return Org(id=row[0], name=row[1], full_name=row[2], created_at=float(row[3]))


_USER_FIELDS = ("name", "display_name", "public_key", "created_at")


def user_columns(alias: str = "") -> str:
    """The user columns, each prefixed with `alias` (`u.`) when the query joins."""
    return ", ".join(alias + c for c in _USER_FIELDS)


def user_of(row: Row) -> User:
    """A `user_columns()` row as its record."""
    return User(name=row[0], display_name=row[1], public_key=row[2], created_at=float(row[3]))


# The select list joins the org for its name; stored rows carry only `org_id`.
JOB_COLUMNS = (
    "j.id, j.org_id, o.name, j.command, j.status, j.quorum, j.run_timeout, j.requestor_name, "
    "j.requestor_type, j.created_at, j.updated_at, j.run_as_user, j.dir, j.env_json, j.file, "
    "j.capture, j.max_concurrency, j.max_errors, j.aborted_by, j.coordinator"
)
JOB_INSERT = (
    "INSERT INTO jobs (id, org_id, command, status, quorum, run_timeout, requestor_name, "
    "requestor_type, created_at, updated_at, run_as_user, dir, env_json, file, capture, "
    "max_concurrency, max_errors, aborted_by, coordinator) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _limit_json(value: int | str | None) -> str | None:
    """A job limit as given (`5` or `"10%"`) as its stored JSON text."""
    return None if value is None else json.dumps(value)


def _limit_of(text: str | None) -> int | str | None:
    """A stored limit's JSON text back as the value given."""
    if text is None:
        return None
    value = json.loads(text)
    assert isinstance(value, int | str), text
    return value


def job_of(row: Row) -> Job:
    """A `JOB_COLUMNS` row as its record."""
    env = None if row[13] is None else json.loads(row[13])
    return Job(
        id=row[0],
        org_id=row[1],
        org_name=row[2],
        command=row[3],
        status=row[4],
        quorum=row[5],
        run_timeout=row[6],
        requestor_name=row[7],
        requestor_type=row[8],
        created_at=float(row[9]),
        updated_at=float(row[10]),
        run_as_user=row[11],
        dir=row[12],
        env=env,
        file=row[14],
        capture=bool(row[15]),
        max_concurrency=_limit_of(row[16]),
        max_errors=_limit_of(row[17]),
        aborted_by=row[18],
        coordinator=row[19],
    )


def job_params(job: Job) -> Row:
    """The parameters of `JOB_INSERT`."""
    env_json = None if job.env is None else json.dumps(job.env, ensure_ascii=False)
    return (
        job.id,
        job.org_id,
        job.command,
        job.status,
        job.quorum,
        job.run_timeout,
        job.requestor_name,
        job.requestor_type,
        secs(job.created_at),
        secs(job.updated_at),
        job.run_as_user,
        job.dir,
        env_json,
        job.file,
        int(job.capture),
        _limit_json(job.max_concurrency),
        _limit_json(job.max_errors),
        job.aborted_by,
        job.coordinator,
    )


_NODE_FIELDS = (
    "job_id",
    "node_name",
    "status",
    "exit_status",
    "signal",
    "started_at",
    "finished_at",
)
NODE_COLUMNS = ", ".join(_NODE_FIELDS)


def job_node_of(row: Row) -> JobNode:
    """A `NODE_COLUMNS` row as its record."""
    return JobNode(
        job_id=row[0],
        node_name=row[1],
        status=row[2],
        exit_status=row[3],
        signal=row[4],
        started_at=from_secs(row[5]),
        finished_at=from_secs(row[6]),
    )


def job_node_params(node: JobNode) -> Row:
    """A record as its `NODE_COLUMNS` row."""
    return (
        node.job_id,
        node.node_name,
        node.status,
        node.exit_status,
        node.signal,
        secs(node.started_at),
        secs(node.finished_at),
    )


# A new job's node rows: parameters `(job_id, node_name, status, updated_at)`; the JSON form
# (SQLite) takes `(job_id, status, updated_at, names)`, the names a JSON array.
_NEW_NODE = "INSERT INTO job_nodes (job_id, node_name, status, updated_at) "
NEW_NODE_INSERT = _NEW_NODE + "VALUES (?, ?, ?, ?)"
NEW_NODES_INSERT_JSON = _NEW_NODE + "SELECT ?, value, ?, ? FROM json_each(?)"

_NODE_CONFLICT = "ON CONFLICT (job_id, node_name) DO UPDATE SET " + _upsert_set(
    (*_NODE_FIELDS[2:], "updated_at")
)
NODE_UPSERT = (
    f"INSERT INTO job_nodes ({NODE_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    + _NODE_CONFLICT
)
# The same for a whole batch in one statement (SQLite): parameters `(updated_at, rows)`, the rows
# a JSON array of `job_node_params` arrays. `WHERE true` keeps SQLite from reading the ON of
# ON CONFLICT as a join constraint.
NODE_UPSERT_JSON = (
    f"INSERT INTO job_nodes ({NODE_COLUMNS}, updated_at) SELECT "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_NODE_FIELDS)))
    + ", ? FROM json_each(?) WHERE true "
    + _NODE_CONFLICT
)

_OUTPUT_FIELDS = (
    "job_id",
    "node_name",
    "stdout",
    "stderr",
    "stdout_total",
    "stderr_total",
    "stdout_omitted",
    "stderr_omitted",
    "closed",
)
OUTPUT_COLUMNS = ", ".join(_OUTPUT_FIELDS)


def output_of(row: Row) -> OutputRecord:
    """An `OUTPUT_COLUMNS` row as its record (without the appended pieces)."""
    return OutputRecord(
        job_id=row[0],
        node_name=row[1],
        stdout=bytes(row[2]),
        stderr=bytes(row[3]),
        stdout_total=row[4],
        stderr_total=row[5],
        stdout_omitted=row[6],
        stderr_omitted=row[7],
        closed=bool(row[8]),
    )


def output_params(record: OutputRecord) -> Row:
    """A record as its `OUTPUT_COLUMNS` row."""
    return (
        record.job_id,
        record.node_name,
        bytes(record.stdout),
        bytes(record.stderr),
        record.stdout_total,
        record.stderr_total,
        record.stdout_omitted,
        record.stderr_omitted,
        int(record.closed),
    )


OUTPUT_UPSERT = (
    f"INSERT INTO job_output ({OUTPUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (job_id, node_name) DO UPDATE SET " + _upsert_set(_OUTPUT_FIELDS[2:])
)

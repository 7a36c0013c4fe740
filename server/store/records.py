"""Plain records exchanged with the store, and the job / node-in-job status names.

Times are float epoch seconds (UTC); the store keeps them at second precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Job statuses (lifecycle.md §4.1).
JOB_STATUSES: tuple[str, ...] = (
    "new",
    "voting",
    "running",
    "complete",
    "quorum_failed",
    "timed_out",
    "crashed",
    "aborted",
)
JOB_OPEN_STATUSES: frozenset[str] = frozenset({"new", "voting", "running"})
JOB_FINAL_STATUSES: frozenset[str] = frozenset(JOB_STATUSES) - JOB_OPEN_STATUSES

# Node-in-job statuses (lifecycle.md §4.2).
NODE_STATUSES: tuple[str, ...] = (
    "new",
    "ready",
    "running",
    "succeeded",
    "failed",
    "aborted",
    "unavailable",
    "nacked",
    "crashed",
    "was_ready",
    "timed_out",
)
NODE_OPEN_STATUSES: frozenset[str] = frozenset({"new", "ready", "running"})
NODE_FINAL_STATUSES: frozenset[str] = frozenset(NODE_STATUSES) - NODE_OPEN_STATUSES

PRINCIPAL_USER = "user"
PRINCIPAL_CLIENT = "client"
ADMINS_GROUP = "admins"


@dataclass(slots=True)
class Org:
    """An organization."""

    id: str
    name: str
    full_name: str
    created_at: float


@dataclass(slots=True)
class Principal:
    """A user or client as seen by authentication (http-api.md §9)."""

    name: str
    type: str  # "user" | "client"
    public_key: str
    org_member: bool


@dataclass(slots=True)
class Group:
    """A group's direct members by kind, each list sorted by name."""

    name: str
    users: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


@dataclass(slots=True)
class User:
    """A global user (management view)."""

    name: str
    display_name: str
    public_key: str
    created_at: float


@dataclass(slots=True)
class Client:
    """A client of one organization (management view)."""

    org_name: str
    name: str
    public_key: str
    created_at: float


@dataclass(slots=True)
class Job:
    """A stored job. `run_as_user`, `dir`, `env` are None when not given (kept apart from ''/{})."""

    id: str
    org_id: str
    org_name: str
    command: str
    status: str
    quorum: int
    run_timeout: int
    requestor_name: str
    requestor_type: str
    created_at: float
    updated_at: float
    run_as_user: str | None = None
    dir: str | None = None
    env: dict[str, str] | None = None
    file: str | None = None  # with its "raw:" / "base64:" prefix
    capture: bool = False


@dataclass(slots=True)
class JobNode:
    """One node's row in a job."""

    job_id: str
    node_name: str
    status: str = "new"
    exit_status: int | None = None
    signal: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(slots=True)
class OutputRecord:
    """Captured output of one node in one job (lifecycle.md §8)."""

    job_id: str
    node_name: str
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_total: int = 0
    stderr_total: int = 0
    stdout_omitted: int = 0
    stderr_omitted: int = 0
    closed: bool = False


@dataclass(slots=True)
class OutputDelta:
    """What an output record gained since its last write (stored output is append-only).

    Per channel: `*_at` is the stored length the new bytes follow; the store drops anything it
    holds for that channel from that position on, then appends (`*_at = 0`: replace). The
    counters and `closed` are the record's current values.
    """

    job_id: str
    node_name: str
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_at: int = 0
    stderr_at: int = 0
    stdout_total: int = 0
    stderr_total: int = 0
    stdout_omitted: int = 0
    stderr_omitted: int = 0
    closed: bool = False


@dataclass(frozen=True, slots=True)
class OutputTotals:
    """An output record's counters without its bytes (`GET jobs/{id}/nodes`)."""

    stdout_total: int = 0
    stderr_total: int = 0
    truncated: bool = False  # some bytes are omitted on either channel


@dataclass(frozen=True)
class JobSpec:
    """A validated `POST org/jobs` body (nodes de-duplicated, first occurrence order kept)."""

    command: str
    nodes: list[str]
    quorum: int
    run_timeout: int
    user: str | None = None
    dir: str | None = None
    env: dict[str, str] | None = None
    file: str | None = None
    capture: bool = False

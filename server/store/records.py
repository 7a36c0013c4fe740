"""Plain records exchanged with the store, and the job / node-in-job status names.

Times are float epoch seconds (UTC); the store keeps them at second precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pushjobs.protocol.vocabulary import (
    FINAL_JOB_STATUSES,
    OPEN_JOB_STATUSES,
    OPEN_NODE_STATUSES,
    JobStatus,
    NodeStatus,
)

# Job and node-in-job status names for the store's queries (lifecycle.md §4.1, §4.2).
JOB_STATUSES: tuple[str, ...] = tuple(JobStatus)
JOB_OPEN_STATUSES: frozenset[str] = OPEN_JOB_STATUSES
JOB_FINAL_STATUSES: frozenset[str] = FINAL_JOB_STATUSES
NODE_OPEN_STATUSES: frozenset[str] = OPEN_NODE_STATUSES

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
    max_concurrency: int | str | None = None  # as given: a count or "N%"
    max_errors: int | str | None = None  # as given: a count or "N%"
    aborted_by: str | None = None  # the principal that aborted it through the API
    coordinator: str | None = None  # the server id running its state machine (a cluster)


@dataclass(frozen=True, slots=True)
class JobFilters:
    """What a job listing is narrowed to (`GET org/jobs`); each given condition must hold.

    `nodes`: jobs including any of them; `since` inclusive, `until` exclusive, both epoch
    seconds compared with `created_at`.
    """

    nodes: Sequence[str] = ()
    requested_by: str | None = None
    command: str | None = None
    since: float | None = None
    until: float | None = None


class NodeProgress(Protocol):
    """A node's progress in a live job, as the state machine holds it (`jobs.state.NodeInJob`)."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def exit_status(self) -> int | None: ...
    @property
    def signal(self) -> str | None: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def finished_at(self) -> float | None: ...


@dataclass(slots=True)
class JobNode:
    """One node's row in a job."""

    job_id: str
    node_name: str
    status: str = NodeStatus.NEW
    exit_status: int | None = None
    signal: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def of(cls, job_id: str, node: NodeProgress) -> JobNode:
        """The row a live job's node is stored as."""
        return cls(
            job_id=job_id,
            node_name=node.name,
            status=node.status,
            exit_status=node.exit_status,
            signal=node.signal,
            started_at=node.started_at,
            finished_at=node.finished_at,
        )


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
    closed: bool = False  # the record is complete (readers elsewhere stop following it)


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
    max_concurrency: int | str | None = None  # as given: a count or "N%"
    max_errors: int | str | None = None  # as given: a count or "N%"
    # Extension (http-api.md §7.4): resolved to nodes before the job starts (`with_matches`)
    selector: str | None = None
    # False: `quorum` is the node count, recounted on resolution
    quorum_given: bool = field(default=True, compare=False)

    def with_matches(self, matches: list[str]) -> JobSpec:
        """The spec with the selector's `matches` after the given nodes, resolved."""
        nodes = list(dict.fromkeys([*self.nodes, *matches]))
        quorum = self.quorum if self.quorum_given else len(nodes)
        return dataclasses.replace(self, nodes=nodes, quorum=quorum, selector=None)


@dataclass(frozen=True, slots=True)
class InventoryUpdate:
    """A node seen connecting (`labels` None) or reporting labels, at `seen_at` (epoch s)."""

    org_name: str
    node_name: str
    seen_at: float
    labels: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class InventoryNode:
    """A node that connected at least once: the labels it last reported (None: never any)."""

    node_name: str
    labels: dict[str, str] | None
    first_seen: float
    last_seen: float

"""The words server, agent and CLI share: statuses, message types, media types.

Every member's value is the exact string on the wire or in the API, and a `StrEnum` member
compares equal to that string, so code may mix members and plain strings (e.g. decoded JSON).
"""

from __future__ import annotations

from .compat import StrEnum


class JobStatus(StrEnum):
    """A job's status (lifecycle.md §4.1)."""

    NEW = "new"
    VOTING = "voting"
    RUNNING = "running"
    COMPLETE = "complete"
    QUORUM_FAILED = "quorum_failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    ABORTED = "aborted"  # extension (lifecycle.md §7)
    STOPPED = "stopped"  # extension: the error budget ran out (lifecycle.md §12)


class NodeStatus(StrEnum):
    """A node's status within one job (lifecycle.md §4.2)."""

    NEW = "new"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"  # extension (lifecycle.md §7)
    UNAVAILABLE = "unavailable"
    NACKED = "nacked"
    CRASHED = "crashed"
    WAS_READY = "was_ready"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"  # extension: never run, the error budget ran out (lifecycle.md §12)


OPEN_JOB_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.NEW, JobStatus.VOTING, JobStatus.RUNNING}
)
FINAL_JOB_STATUSES: frozenset[JobStatus] = frozenset(JobStatus) - OPEN_JOB_STATUSES
OPEN_NODE_STATUSES: frozenset[NodeStatus] = frozenset(
    {NodeStatus.NEW, NodeStatus.READY, NodeStatus.RUNNING}
)
FINAL_NODE_STATUSES: frozenset[NodeStatus] = frozenset(NodeStatus) - OPEN_NODE_STATUSES


class NodePresence(StrEnum):
    """`status` of a node in `org/node_states` (http-api.md §7.8)."""

    ONLINE = "online"
    OFFLINE = "offline"


class Availability(StrEnum):
    """`availability` of a node in `org/node_states` (http-api.md §7.8)."""

    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"


class AgentJobState(StrEnum):
    """`job_state` of an agent heartbeat (wire-protocol.md §15)."""

    IDLE = "idle"
    COMMITTED = "committed"
    RUNNING = "running"


class MessageType(StrEnum):
    """The `type` of a ZeroMQ message, both directions (wire-protocol.md §14, §15).

    `HEARTBEAT` is used both ways (server on PUB, agent on the command socket).
    """

    HEARTBEAT = "heartbeat"
    # server → agent (wire-protocol.md §14)
    ABORT = "abort"
    ACK = "ack"
    COMMIT = "commit"
    RUN = "run"
    # agent → server (wire-protocol.md §15)
    ACK_COMMIT = "ack_commit"
    NACK_COMMIT = "nack_commit"
    ACK_RUN = "ack_run"
    NACK_RUN = "nack_run"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    OUTPUT = "output"  # 3.0 only (wire-protocol.md §17)


class OutputChannel(StrEnum):
    """A captured output channel (wire-protocol.md §15 `output.channel`, http-api.md §7.6)."""

    STDOUT = "stdout"
    STDERR = "stderr"


class MediaType(StrEnum):
    """A media type of the HTTP API; the value is the exact `Content-Type` / `Accept` string
    (http-api.md §3, "Accept rule")."""

    JSON = "application/json"
    EVENT_STREAM = "text/event-stream"
    OCTET_STREAM = "application/octet-stream"

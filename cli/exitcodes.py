"""Exit codes (cli.md §10).

| job outcome | code |
|---|---|
| `complete`, every node `succeeded` | 0 |
| `complete` with another node status; `timed_out`, `aborted`, `crashed`, `stopped` | 1 |
| `quorum_failed` | 2 |
"""

from __future__ import annotations

from typing import Any

from pushjobs.protocol.vocabulary import JobStatus, NodeStatus

OK = 0
JOB_FAILED = 1
QUORUM_FAILED = 2
ERROR = 3
INTERRUPTED = 130

KNIFE_FAILED = 1
KNIFE_USAGE = 1
KNIFE_ERROR = 100
KNIFE_OK_NODE_STATUSES = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.NACKED, NodeStatus.UNAVAILABLE}
)


def job_exit_code(job: Any, knife_compatible: bool = False) -> int:
    """Exit code of `job start` / `job watch` for a finished job object."""
    status = job.get("status") if isinstance(job, dict) else None
    nodes = job.get("nodes") if isinstance(job, dict) else None
    keys = {k for k, v in nodes.items() if v} if isinstance(nodes, dict) else set()
    if knife_compatible:
        return (
            OK if status == JobStatus.COMPLETE and keys <= KNIFE_OK_NODE_STATUSES else KNIFE_FAILED
        )
    if status == JobStatus.QUORUM_FAILED:
        return QUORUM_FAILED
    if status == JobStatus.STOPPED:  # the error budget ran out (lifecycle.md §12.3)
        return JOB_FAILED
    if status == JobStatus.COMPLETE and keys <= {NodeStatus.SUCCEEDED}:
        return OK
    return JOB_FAILED


def error_exit_code(is_usage: bool, knife_compatible: bool = False) -> int:
    """Exit code for a usage/configuration error or a request error."""
    if knife_compatible:
        return KNIFE_USAGE if is_usage else KNIFE_ERROR
    return ERROR

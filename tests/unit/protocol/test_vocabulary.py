"""The shared vocabulary and limits: exact wire strings and spec values."""

from __future__ import annotations

import json

from pushjobs.protocol import limits
from pushjobs.protocol.vocabulary import (
    FINAL_JOB_STATUSES,
    FINAL_NODE_STATUSES,
    OPEN_JOB_STATUSES,
    OPEN_NODE_STATUSES,
    JobStatus,
    MediaType,
    MessageType,
    NodeStatus,
)


def test_job_statuses_match_lifecycle_4_1() -> None:
    assert [s.value for s in JobStatus] == [
        "new",
        "voting",
        "running",
        "complete",
        "quorum_failed",
        "timed_out",
        "crashed",
        "aborted",
        "stopped",
    ]
    assert {"new", "voting", "running"} == OPEN_JOB_STATUSES
    final = {"complete", "quorum_failed", "timed_out", "crashed", "aborted", "stopped"}
    assert final == FINAL_JOB_STATUSES


def test_node_statuses_match_lifecycle_4_2() -> None:
    assert {"new", "ready", "running"} == OPEN_NODE_STATUSES
    assert {
        "succeeded",
        "failed",
        "nacked",
        "unavailable",
        "was_ready",
        "crashed",
        "timed_out",
        "aborted",
        "skipped",
    } == FINAL_NODE_STATUSES
    assert set(NodeStatus) == OPEN_NODE_STATUSES | FINAL_NODE_STATUSES


def test_message_types_cover_both_directions() -> None:
    assert {t.value for t in MessageType} == {
        "heartbeat",
        "abort",
        "ack",
        "commit",
        "run",
        "ack_commit",
        "nack_commit",
        "ack_run",
        "nack_run",
        "succeeded",
        "failed",
        "aborted",
        "output",
    }


def test_members_are_the_plain_strings_on_the_wire() -> None:
    assert json.dumps({"type": MessageType.ACK_RUN, "s": JobStatus.CRASHED}) == (
        '{"type": "ack_run", "s": "crashed"}'
    )
    assert f"{NodeStatus.WAS_READY}" == "was_ready" and str(MediaType.JSON) == "application/json"
    assert {"commit": 1}[MessageType.COMMIT] == 1 and MessageType("run") is MessageType.RUN


def test_fixed_limits_match_the_spec() -> None:
    assert limits.HTTP_BODY_LIMIT == 1_000_000
    assert limits.JOB_FILE_LIMIT == 100_000
    assert limits.HTTP_MAX_SKEW == 900
    assert limits.HEADER_LIMIT == 2048
    assert limits.JOB_ID_LIMIT == 64
    assert limits.OUTPUT_CHUNK_LIMIT == 32768
    assert limits.AGENT_BODY_LIMIT == 2 * 1024 * 1024
    assert limits.AGENT_DEALER_MESSAGE_LIMIT == 2 * 1024 * 1024 + 2048
    assert (limits.OFFLINE_THRESHOLD, limits.ONLINE_THRESHOLD) == (3, 2)

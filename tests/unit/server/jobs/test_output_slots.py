"""OutputSlotState: every transition of a node's output slot (lifecycle.md §8), no trio."""

from __future__ import annotations

import pytest

from pushjobs.protocol.messages import Failed, Output, Succeeded
from pushjobs.protocol.vocabulary import NodeStatus
from pushjobs.server.jobs.output import NodeOutput
from pushjobs.server.jobs.output_slots import (
    CancelClose,
    Closed,
    Forget,
    GapMismatch,
    MarkDirty,
    OutputActivity,
    OutputSlotState,
    ScheduleClose,
    UnwatchNode,
    WatchNode,
    apply_result,
    carries_v2_output,
    result_updates_output,
)
from pushjobs.server.jobs.state import NodeInJob

COMMON = {"client": "n1", "org": "acme", "job_id": "j1", "timestamp": "x", "incarnation_id": "i"}
NOW = 1_700_000_000.0
TIMEOUT = 60.0


def slot(*, cap: int = 1024) -> OutputSlotState:
    return OutputSlotState("acme", "j1", "n1", cap=cap, close_timeout=TIMEOUT)


def chunk(offset: int, data: bytes, channel: str = "stdout", omitted: int | None = None) -> Output:
    return Output(
        node="n1", channel=channel, offset=offset, data=data, omitted_bytes=omitted, **COMMON
    )


def result(cls=Succeeded, **fields) -> Succeeded | Failed:
    return cls(node="n1", exit_status=0, **COMMON, **fields)


def running() -> NodeInJob:
    return NodeInJob("n1", NodeStatus.RUNNING, started_at=NOW - 5)


def final(finished_at: float | None = NOW) -> NodeInJob:
    return NodeInJob("n1", NodeStatus.SUCCEEDED, started_at=NOW - 5, finished_at=finished_at)


def opened(**kw) -> OutputSlotState:
    s = slot(**kw)
    s.open(node_online=True, entry=running(), now=NOW)
    return s


# ---- open ----------------------------------------------------------------------------


def test_open_watches_an_online_node():
    s = slot()
    assert s.open(node_online=True, entry=running(), now=NOW) == [WatchNode(), OutputActivity()]
    assert s.watching and not s.done and not s.close_scheduled and s.record is None


def test_open_does_not_watch_a_node_without_state():
    s = slot()
    assert s.open(node_online=False, entry=running(), now=NOW) == [OutputActivity()]
    assert not s.watching


def test_open_without_a_row_schedules_nothing():
    assert slot().open(node_online=True, entry=None, now=NOW) == [WatchNode(), OutputActivity()]


def test_open_for_a_final_node_schedules_the_close_after_its_finish():
    s = slot()
    outputs = s.open(node_online=True, entry=final(NOW - 10), now=NOW)
    assert outputs == [WatchNode(), ScheduleClose(TIMEOUT - 10), OutputActivity()]
    assert s.close_scheduled


# ---- the node's row changes ----------------------------------------------------------


def test_a_running_node_schedules_nothing():
    assert opened().node_changed(running(), NOW) == []


@pytest.mark.parametrize(
    ("finished_at", "delay"),
    [
        (NOW, TIMEOUT),  # close `output_close_timeout` after the final status
        (NOW - 20, TIMEOUT - 20),  # the row says when it became final
        (NOW - 2 * TIMEOUT, 0.0),  # long ago: at once
        (None, TIMEOUT),  # no finish time: from now
    ],
)
def test_a_final_node_schedules_the_close(finished_at, delay):
    s = opened()
    assert s.node_changed(final(finished_at), NOW) == [ScheduleClose(delay)]


def test_the_close_is_scheduled_once():
    s = opened()
    s.node_changed(final(), NOW)
    assert s.node_changed(final(), NOW + 1) == []


def test_a_closed_slot_schedules_nothing():
    s = opened()
    s.close("aborted")
    assert s.node_changed(final(), NOW) == []


# ---- output chunks -------------------------------------------------------------------


def test_first_chunk_creates_the_record():
    s = opened()
    assert s.chunk(chunk(0, b"hi")) == [OutputActivity(), MarkDirty()]
    assert isinstance(s.record, NodeOutput) and bytes(s.record.stdout.data) == b"hi"
    assert s.record.cap == 1024 and (s.record.job_id, s.record.node) == ("j1", "n1")
    assert s.version == 1


def test_later_chunks_only_mark_dirty():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    assert s.chunk(chunk(0, b"err", channel="stderr")) == [MarkDirty()]
    assert s.version == 2
    assert s.record is not None and bytes(s.record.stderr.data) == b"err"


def test_the_cap_comes_from_the_slot():
    s = opened(cap=4)
    s.chunk(chunk(0, b"abcdefgh"))
    assert s.record is not None and bytes(s.record.stdout.data) == b"abcd"


def test_gap_matching_omitted_bytes_is_quiet():
    s = opened()
    s.chunk(chunk(0, b"a\n"))
    assert s.chunk(chunk(10, b"b\n", omitted=8)) == [MarkDirty()]


def test_gap_disagreeing_with_omitted_bytes_is_reported():
    s = opened()
    s.chunk(chunk(0, b"a\n"))
    assert s.chunk(chunk(10, b"b\n", omitted=3)) == [GapMismatch("stdout", 3, 8), MarkDirty()]
    assert s.chunk(chunk(12, b"c\n", omitted=1)) == [GapMismatch("stdout", 1, 0), MarkDirty()]


def test_chunk_after_close_is_dropped():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    s.close("aborted")
    version = s.version
    assert s.chunk(chunk(2, b"!")) == []
    assert s.record is not None and bytes(s.record.stdout.data) == b"hi" and s.version == version


def test_chunk_to_a_closed_record_of_an_open_slot_changes_nothing():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    assert s.record is not None
    s.record.close()  # not reachable through the slot's inputs; the record still refuses
    assert s.chunk(chunk(2, b"!")) == []
    assert s.version == 1


# ---- close ---------------------------------------------------------------------------


def test_close_with_a_record_closes_and_writes_it():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    s.node_changed(final(), NOW)
    assert s.close("aborted") == [
        CancelClose(),
        UnwatchNode(),
        Closed("aborted", with_record=True),
        MarkDirty(),
        OutputActivity(),
    ]
    assert s.done and not s.watching and s.record is not None and s.record.closed
    assert s.version == 2


def test_close_without_a_record_forgets_the_slot():
    s = slot()
    s.open(node_online=False, entry=running(), now=NOW)
    assert s.close("server shutdown") == [
        Closed("server shutdown", with_record=False),
        Forget(),
        OutputActivity(),
    ]
    assert s.done and s.record is None and s.version == 0


def test_close_is_idempotent():
    s = opened()
    s.close("aborted")
    assert s.close("node down") == []
    assert s.node_down() == []
    assert s.close_timer_fired() == []


def test_node_down_closes():
    s = opened()
    assert s.node_down() == [
        UnwatchNode(),
        Closed("node down", with_record=False),
        Forget(),
        OutputActivity(),
    ]


def test_close_timer_closes():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    s.node_changed(final(), NOW)
    outputs = s.close_timer_fired()
    assert Closed("output_close_timeout", with_record=True) in outputs
    assert outputs[0] == CancelClose()  # harmless on a timer that has just fired


# ---- results -------------------------------------------------------------------------


def test_v3_result_sets_totals_and_closes():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    outputs = s.result(result(stdout_bytes=5, stderr_bytes=0), "3.0")
    assert outputs == [
        UnwatchNode(),
        Closed("succeeded", with_record=True),
        MarkDirty(),
        OutputActivity(),
    ]
    assert s.record is not None
    assert s.record.closed and s.record.stdout.total == 5 and s.record.stdout.omitted == 3


def test_v3_result_without_output_creates_an_empty_record():
    s = opened()
    outputs = s.result(result(Failed, stdout_bytes=0, stderr_bytes=0), "3.0")
    assert outputs == [
        OutputActivity(),
        UnwatchNode(),
        Closed("failed", with_record=True),
        MarkDirty(),
        OutputActivity(),
    ]
    assert s.record is not None and s.record.closed and s.record.to_record().stdout == b""


def test_v2_result_with_output_replaces_both_channels():
    s = opened()
    s.result(result(stdout="out\n"), "2.0")
    assert s.record is not None and s.record.closed
    assert bytes(s.record.stdout.data) == b"out\n" and bytes(s.record.stderr.data) == b""


def test_v2_result_without_output_only_closes():
    s = opened()
    assert s.result(result(), "2.0") == [
        UnwatchNode(),
        Closed("succeeded", with_record=False),
        Forget(),
        OutputActivity(),
    ]
    assert s.record is None


def test_v2_result_without_output_keeps_an_existing_record():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    s.result(result(), "2.0")
    assert s.record is not None and s.record.closed and bytes(s.record.stdout.data) == b"hi"


def test_result_after_close_is_ignored():
    s = opened()
    s.close("aborted")
    assert s.result(result(stdout="late"), "2.0") == []
    assert s.record is None


@pytest.mark.parametrize(
    ("fields", "version", "capture", "v2", "updates"),
    [
        ({"stdout": "x"}, "2.0", False, True, True),
        ({"stderr": ""}, "2.0", False, True, True),
        ({}, "2.0", True, False, False),
        ({"stdout_bytes": 1}, "3.0", True, False, True),
        ({"stdout": "x"}, "3.0", False, False, False),
        ({}, "3.0", False, False, False),
    ],
)
def test_which_results_touch_the_output(fields, version, capture, v2, updates):
    msg = result(**fields)
    assert carries_v2_output(msg, version) is v2
    assert result_updates_output(msg, version, capture=capture) is updates


def test_apply_result_to_a_stored_record():
    record = NodeOutput("j1", "n1", 1024)
    apply_result(record, result(stdout="a", stderr="b"), "2.0")
    assert (bytes(record.stdout.data), bytes(record.stderr.data), record.closed) == (
        b"a",
        b"b",
        True,
    )
    record = NodeOutput("j1", "n1", 1024)
    apply_result(record, result(stdout_bytes=7, stderr_bytes=None), "3.0")
    assert (record.stdout.reported, record.stderr.reported, record.closed) == (7, None, False)


# ---- writes --------------------------------------------------------------------------


def test_no_write_without_a_record():
    assert opened().take_write() is None


def test_write_carries_the_delta_and_version():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    write = s.take_write()
    assert write is not None
    assert (write.delta.stdout, write.delta.stdout_at, write.delta.closed, write.version) == (
        b"hi",
        0,
        False,
        1,
    )
    assert s.wrote(write) is False  # still open
    s.chunk(chunk(2, b"!"))
    later = s.take_write()
    assert later is not None and (later.delta.stdout, later.delta.stdout_at) == (b"!", 2)


def test_a_failed_write_is_taken_again():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    assert s.take_write() is not None  # the store failed: `wrote` never called
    s.chunk(chunk(2, b"!"))
    again = s.take_write()
    assert again is not None and (again.delta.stdout, again.delta.stdout_at) == (b"hi!", 0)


def test_closed_slot_is_forgotten_once_its_last_version_is_written():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    early = s.take_write()
    s.close("succeeded")
    last = s.take_write()
    assert early is not None and last is not None and last.delta.closed
    assert s.wrote(early) is False  # the close is not written yet
    assert s.wrote(last) is True
    assert s.written == s.version == 2


def test_an_older_write_after_a_newer_one_does_not_regress():
    s = opened()
    s.chunk(chunk(0, b"hi"))
    first = s.take_write()
    s.close("succeeded")
    second = s.take_write()
    assert first is not None and second is not None
    assert s.wrote(second) is True
    assert s.wrote(first) is True
    assert s.written == 2

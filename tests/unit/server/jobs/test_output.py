"""Captured output records (wire-protocol.md §17): append, gaps, overlaps, cap, 2.0 results."""

from __future__ import annotations

from pushjobs.server.jobs.output import NodeOutput, omission_marker
from pushjobs.server.store.records import OutputRecord, OutputTotals


def rec(cap=1024):
    return NodeOutput("j1", "n1", cap)


def test_append_in_order():
    r = rec()
    assert r.add_chunk("stdout", 0, b"hello ") == 0
    assert r.add_chunk("stdout", 6, b"world\n") == 0
    assert bytes(r.stdout.data) == b"hello world\n"
    assert r.stdout.received_end == 12
    assert r.stderr.data == b""
    assert r.to_record() == OutputRecord("j1", "n1", b"hello world\n", b"", 12, 0, 0, 0, False)


def test_gap_appends_marker_and_counts_omitted():
    r = rec()
    r.add_chunk("stdout", 0, b"abc")
    assert r.add_chunk("stdout", 10, b"xyz\n") == 7
    assert bytes(r.stdout.data) == b"abc\n[pushjobs: 7 bytes omitted]\nxyz\n"
    assert r.stdout.omitted == 7
    assert r.stdout.received_end == 14
    assert r.stdout.total == 14


def test_gap_after_newline_has_no_extra_newline():
    r = rec()
    r.add_chunk("stderr", 0, b"line\n")
    r.add_chunk("stderr", 6, b"z")
    assert bytes(r.stderr.data) == b"line\n[pushjobs: 1 bytes omitted]\nz"


def test_gap_at_start():
    r = rec()
    r.add_chunk("stdout", 5, b"tail")
    assert bytes(r.stdout.data) == b"[pushjobs: 5 bytes omitted]\ntail"


def test_overlap_drops_already_stored_bytes():
    r = rec()
    r.add_chunk("stdout", 0, b"abcdef")
    r.add_chunk("stdout", 3, b"defghi")
    assert bytes(r.stdout.data) == b"abcdefghi"
    assert r.stdout.received_end == 9
    # a chunk entirely inside what is stored changes nothing
    r.add_chunk("stdout", 2, b"cd")
    assert bytes(r.stdout.data) == b"abcdefghi"
    assert r.stdout.received_end == 9
    assert r.stdout.omitted == 0


def test_cap_discards_and_marks_at_close():
    r = rec(cap=8)
    r.add_chunk("stdout", 0, b"12345")
    r.add_chunk("stdout", 5, b"67890ab")
    assert bytes(r.stdout.data) == b"12345678"
    assert r.stdout.omitted == 4
    r.close()
    assert bytes(r.stdout.data) == b"12345678\n[pushjobs: 4 bytes omitted]\n"
    assert r.closed
    record = r.to_record()
    assert record.stdout_omitted == 4 and record.stdout_total == 12 and record.closed


def test_markers_count_towards_cap():
    r = rec(cap=40)
    r.add_chunk("stdout", 0, b"abc\n")
    r.add_chunk("stdout", 100, b"de")  # marker (28) + "de" fit: 34 bytes
    assert bytes(r.stdout.data) == b"abc\n[pushjobs: 96 bytes omitted]\nde"
    r.add_chunk("stdout", 200, b"fg")  # a second marker would pass the cap: dropped
    assert bytes(r.stdout.data) == b"abc\n[pushjobs: 96 bytes omitted]\nde"
    assert r.stdout.omitted == 96 + 98 + 2 and r.stdout.payload == 6
    r.close()
    assert (
        bytes(r.stdout.data)
        == b"abc\n[pushjobs: 96 bytes omitted]\nde\n[pushjobs: 100 bytes omitted]\n"
    )
    assert r.stdout.total == 202


def test_marker_that_leaves_no_room_for_data_is_not_stored():
    r = rec(cap=30)
    r.add_chunk("stdout", 0, b"ab\n")
    r.add_chunk("stdout", 10, b"x")  # 3 + 28 bytes of marker: no room for "x"
    assert bytes(r.stdout.data) == b"ab\n"
    r.close()
    assert bytes(r.stdout.data) == b"ab\n[pushjobs: 8 bytes omitted]\n"
    assert r.stdout.omitted == 8


def test_agent_style_head_and_tail_with_omitted_bytes():
    # C = 256: H = 192, T = 64; total 300 → tail at 236 with omitted_bytes 44
    r = rec(cap=256)
    head, tail = b"h" * 191 + b"\n", b"t" * 64
    r.add_chunk("stdout", 0, head)
    r.add_chunk("stdout", 236, tail[:40])
    r.add_chunk("stdout", 276, tail[40:])
    marker = b"[pushjobs: 44 bytes omitted]\n"
    assert bytes(r.stdout.data) == head + marker + tail[: 256 - 192 - len(marker)]
    r.set_v3_totals(300, 0)
    r.close()
    # the one marker line beyond the cap: the tail is stored whole
    assert bytes(r.stdout.data) == head + marker + tail
    assert len(r.stdout.data) == 256 + len(marker)
    assert r.to_record().stdout_total == 300
    assert r.stdout.omitted == 44


def test_held_tail_bytes_give_way_to_the_closing_marker():
    r = rec(cap=256)
    r.add_chunk("stdout", 0, b"h" * 191 + b"\n")
    r.add_chunk("stdout", 236, b"t" * 64)  # 29 bytes (the marker's length) held past the cap
    r.add_chunk("stdout", 300, b"more")  # beyond what the agent may send: now it overflows
    r.close()
    data = bytes(r.stdout.data)
    assert data.endswith(b"t\n[pushjobs: 33 bytes omitted]\n")
    assert len(data) == 256 + len(b"\n[pushjobs: 33 bytes omitted]\n")
    assert r.stdout.omitted == 44 + 33 and r.stdout.total == 304


def test_lost_tail_after_the_cap_is_one_marker():
    r = rec(cap=8)
    r.add_chunk("stdout", 0, b"0123456789")
    r.set_v3_totals(20, None)
    r.close()
    assert bytes(r.stdout.data) == b"01234567\n[pushjobs: 12 bytes omitted]\n"
    assert r.stdout.omitted == 12 and r.stdout.total == 20


def test_one_byte_chunks_with_gaps_stay_within_cap_plus_one_marker():
    cap = 4096
    r = rec(cap=cap)
    for i in range(50_000):
        r.add_chunk("stdout", 2 * i, b"x")
    assert len(r.stdout.data) <= cap
    r.set_v3_totals(100_000, 0)
    r.close()
    data = bytes(r.stdout.data)
    last = data[data.rindex(b"\n[pushjobs: ") :]
    assert len(data) <= cap + len(last) and len(last) <= 64
    assert data.count(b"[pushjobs:") < cap // 28 + 2
    assert r.stdout.total == 100_000
    assert r.stdout.omitted == 100_000 - r.stdout.payload


def test_closed_record_drops_chunks():
    r = rec()
    r.add_chunk("stdout", 0, b"a")
    r.close()
    assert r.add_chunk("stdout", 1, b"b") is None
    assert bytes(r.stdout.data) == b"a"


def test_binary_bytes_kept_exactly():
    blob = bytes(range(256)) * 3
    r = rec(cap=4096)
    r.add_chunk("stdout", 0, blob[:100])
    r.add_chunk("stdout", 100, blob[100:])
    r.close()
    assert bytes(r.stdout.data) == blob


def test_reported_total_beyond_received_marks_lost_tail():
    r = rec()
    r.add_chunk("stdout", 0, b"abc\n")
    r.set_v3_totals(10, None)
    r.close()
    assert bytes(r.stdout.data) == b"abc\n[pushjobs: 6 bytes omitted]\n"
    assert r.stdout.omitted == 6 and r.stdout.total == 10


def test_v2_results_replace_both_channels_and_close():
    r = rec()
    r.set_v2_results("out ✓\n", None)
    assert r.closed
    assert bytes(r.stdout.data) == "out ✓\n".encode()
    assert r.stderr.data == b""
    record = r.to_record()
    assert record.stdout_total == len("out ✓\n".encode()) and record.stderr_total == 0
    # a later result does not overwrite the closed record
    r.set_v2_results("other", "x")
    assert bytes(r.stdout.data) == "out ✓\n".encode()


def test_v3_final_with_nothing_received_is_empty():
    r = rec()
    r.set_v3_totals(0, 0)
    r.close()
    assert r.to_record() == OutputRecord("j1", "n1", b"", b"", 0, 0, 0, 0, True)


def test_marker_helper():
    assert omission_marker(3, b"") == b"[pushjobs: 3 bytes omitted]\n"
    assert omission_marker(3, b"x") == b"\n[pushjobs: 3 bytes omitted]\n"
    assert omission_marker(3, b"x\n") == b"[pushjobs: 3 bytes omitted]\n"


def test_delta_carries_only_bytes_added_since_the_last_write():
    r = rec(cap=10)
    r.add_chunk("stdout", 0, b"abc")
    delta, written = r.take_delta()
    assert (delta.stdout, delta.stdout_at, delta.stderr, delta.stderr_at) == (b"abc", 0, b"", 0)
    written()
    r.add_chunk("stdout", 3, b"de")
    r.add_chunk("stderr", 0, b"E")
    delta, written = r.take_delta()
    assert (delta.stdout, delta.stdout_at, delta.stderr, delta.stderr_at) == (b"de", 3, b"E", 0)
    assert (delta.stdout_total, delta.stderr_total, delta.closed) == (5, 1, False)
    written()
    r.add_chunk("stdout", 5, b"0123456789")  # 5 kept, 5 discarded at the cap
    r.close()
    delta, _ = r.take_delta()
    assert delta.stdout == b"01234\n[pushjobs: 5 bytes omitted]\n" and delta.stdout_at == 5
    assert (delta.stderr, delta.stdout_omitted, delta.closed) == (b"", 5, True)


def test_unconfirmed_delta_is_sent_again_with_what_came_meanwhile():
    r = rec()
    r.add_chunk("stdout", 0, b"abc")
    r.take_delta()  # the write failed: never confirmed
    r.add_chunk("stdout", 3, b"def")
    delta, written = r.take_delta()
    assert (delta.stdout, delta.stdout_at) == (b"abcdef", 0)
    written()
    assert r.take_delta()[0].stdout == b""


def test_replacement_during_a_write_is_sent_whole():
    r = rec()
    r.add_chunk("stdout", 0, b"streamed")
    _, written = r.take_delta()
    r.set_v2_results("whole", None)  # arrives while that write is in flight
    written()
    delta, _ = r.take_delta()
    assert (delta.stdout, delta.stdout_at, delta.closed) == (b"whole", 0, True)


def test_totals_without_copying_bytes():
    r = rec(cap=4)
    assert r.totals() == OutputTotals(0, 0, False)
    r.add_chunk("stderr", 0, b"123456")
    assert r.totals() == OutputTotals(0, 6, True)

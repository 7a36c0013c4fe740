"""The CLI's SSE parser (WHATWG event-stream rules, http-api.md §8)."""

from pushjobs.cli.sse import SseEvent, SseParser


def parse_all(chunks: list[bytes], parser: SseParser | None = None) -> list[SseEvent]:
    parser = parser or SseParser()
    out: list[SseEvent] = []
    for c in chunks:
        out.extend(parser.feed(c))
    return out


def test_server_event_format() -> None:
    stream = (
        b"event: start\nid: job-1\n"
        b'data: {"command":"x","timestamp":"2026-11-27 08:00:00.000001Z"}\n\n'
        b'event: job_complete\nid: job-2\ndata: {"status":"complete"}\n\n'
    )
    events = parse_all([stream])
    assert [(e.event, e.id) for e in events] == [("start", "job-1"), ("job_complete", "job-2")]
    assert events[0].json()["command"] == "x"
    assert events[1].json() == {"status": "complete"}


def test_byte_by_byte_equals_whole() -> None:
    stream = 'event: a\nid: 1\ndata: {"t":"ü"}\n\n:keepalive\nevent: b\ndata: x\n\n'.encode()
    whole = parse_all([stream])
    split = parse_all([stream[i : i + 1] for i in range(len(stream))])
    assert whole == split
    assert whole[0].json() == {"t": "ü"}  # a multi-byte character split across chunks


def test_multiline_data_and_default_event() -> None:
    events = parse_all([b"data: one\ndata: two\ndata:three\n\n"])
    assert events == [SseEvent("message", "one\ntwo\nthree", None)]


def test_comments_and_keepalives_are_not_events() -> None:
    p = SseParser()
    assert p.feed(b":keepalive\n:keepalive\n\n") == []
    assert p.comments == 2


def test_line_endings_crlf_cr_lf() -> None:
    events = parse_all([b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\revent: c\ndata: 3\n\n"])
    assert [(e.event, e.data) for e in events] == [("a", "1"), ("b", "2"), ("c", "3")]


def test_crlf_split_across_chunks() -> None:
    events = parse_all([b"data: 1\r", b"\n\r", b"\ndata: 2\r\n\r\n"])
    assert [e.data for e in events] == ["1", "2"]


def test_id_persists_and_reconnect_id() -> None:
    p = SseParser()
    events = parse_all([b"id: job-1\ndata: a\n\ndata: b\n\n"], p)
    assert [e.id for e in events] == ["job-1", "job-1"]  # the last event id carries over
    assert p.last_event_id == "job-1"
    p2 = SseParser(last_event_id=p.last_event_id)
    assert p2.feed(b"data: c\n\n")[0].id == "job-1"


def test_id_without_data_updates_last_id_but_dispatches_nothing() -> None:
    p = SseParser()
    assert p.feed(b"id: 7\n\n") == []
    assert p.last_event_id == "7"


def test_id_with_nul_ignored_and_empty_id_resets() -> None:
    p = SseParser()
    p.feed(b"id: a\x00b\ndata: x\n\n")
    assert p.last_event_id is None
    p.feed(b"id: 5\ndata: x\n\nid\ndata: y\n\n")
    assert p.last_event_id == ""


def test_field_without_space_and_unknown_fields() -> None:
    events = parse_all([b"event:x\nfoo: bar\ndata:d\nretry: 1500\n\n"])
    assert events == [SseEvent("x", "d", None)]


def test_retry_recorded() -> None:
    p = SseParser()
    p.feed(b"retry: 1500\nretry: nope\n\n")
    assert p.retry_ms == 1500


def test_empty_data_line_dispatches_empty_string() -> None:
    assert parse_all([b"data:\n\n"]) == [SseEvent("message", "", None)]


def test_incomplete_event_not_dispatched() -> None:
    p = SseParser()
    assert p.feed(b"event: a\ndata: 1\n") == []
    assert p.feed(b"\n") == [SseEvent("a", "1", None)]


def test_bom_stripped_at_start_only() -> None:
    events = parse_all([b"\xef\xbb\xbfdata: a\n\n"])
    assert events == [SseEvent("message", "a", None)]


def test_non_json_data() -> None:
    assert SseEvent("m", "not json", None).json() == "not json"

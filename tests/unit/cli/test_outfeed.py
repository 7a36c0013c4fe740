"""The per-job output feed as lines and JSON lines (cli.md §3.8): repeats dropped, lines whole."""

import base64
import io
import json
from typing import Any

from pushjobs.cli.outfeed import (
    NODE_PALETTE,
    Complete,
    End,
    Line,
    LineAssembler,
    NodeColours,
    OutputFeed,
    Piece,
    encode_piece,
    json_record,
    line_prefix,
    piece_bytes,
)
from pushjobs.cli.stream import ChannelFilter, JsonSink, TextSink


def out(node: str, channel: str, offset: int, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"timestamp": "t", "node": node, "channel": channel, "offset": offset,
            **encode_piece(data), **extra}  # fmt: skip


def end(node: str, channel: str) -> dict[str, Any]:
    return {"timestamp": "t", "node": node, "channel": channel, "status": "succeeded",
            "exit_status": 0, "signal": None, "bytes": 0, "omitted_bytes": 0}  # fmt: skip


def run(feed: OutputFeed, events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    return [item for name, data in events if (item := feed.apply(name, data)) is not None]


def test_pieces_pass_and_exact_repeats_are_dropped() -> None:
    feed = OutputFeed()
    items = run(
        feed,
        [
            ("output", out("a", "stdout", 0, b"one\n")),
            ("output", out("b", "stdout", 0, b"x")),
            ("output", out("a", "stdout", 4, b"two\n")),
            # a reopened stream replays channel a/stdout whole and b/stdout again
            ("output", out("a", "stdout", 0, b"one\n")),
            ("output", out("a", "stdout", 4, b"two\n")),
            ("output", out("b", "stdout", 0, b"x")),
            ("output", out("a", "stdout", 8, b"three\n")),
        ],
    )
    assert [(i.node, i.offset, i.data) for i in items] == [
        ("a", 0, b"one\n"),
        ("b", 0, b"x"),
        ("a", 4, b"two\n"),
        ("a", 8, b"three\n"),
    ]


def test_a_piece_partly_held_is_trimmed_and_re_encoded() -> None:
    feed = OutputFeed()
    data = "héllo".encode()  # h, é (2 bytes), l, l, o
    assert feed.apply("output", out("a", "stdout", 0, data[:2])) is not None
    # a replay from the store sends the channel as one bigger piece from offset 0
    item = feed.apply("output", out("a", "stdout", 0, data))
    assert isinstance(item, Piece)
    assert (item.offset, item.data) == (2, data[2:])
    # the trimmed bytes start inside `é`: not valid UTF-8 any more, so base64
    assert item.record["offset"] == 2 and item.record["encoding"] == "base64"
    assert base64.b64decode(item.record["data"]) == data[2:]
    assert item.record["timestamp"] == "t"


def test_ends_once_and_nothing_after_end_or_job_complete() -> None:
    feed = OutputFeed()
    items = run(
        feed,
        [
            ("output", out("a", "stderr", 0, b"e")),
            ("end", end("a", "stderr")),
            ("end", end("a", "stderr")),  # resent after a reopen
            ("output", out("a", "stderr", 0, b"e")),
            ("job_complete", {"timestamp": "t", "status": "stopped"}),
            ("output", out("b", "stdout", 0, b"late")),
            ("job_complete", {"timestamp": "t", "status": "stopped"}),
        ],
    )
    assert [type(i) for i in items] == [Piece, End, Complete]
    assert feed.complete is not None and feed.complete.status == "stopped"


def test_malformed_and_unknown_events_are_ignored() -> None:
    feed = OutputFeed()
    assert feed.apply("output", "text") is None
    assert feed.apply("output", {"node": "a", "channel": "stdin", "offset": 0, "data": ""}) is None
    assert (
        feed.apply("output", {"node": "a", "channel": "stdout", "offset": -1, "data": "x"}) is None
    )
    assert feed.apply("output", out("a", "stdout", True, b"x")) is None
    assert feed.apply("output", {**out("a", "stdout", 0, b"x"), "encoding": "base64",
                                 "data": "!!"}) is None  # fmt: skip
    assert feed.apply("keepalive", out("a", "stdout", 0, b"x")) is None
    assert piece_bytes({"encoding": "text"}) is None


def test_lines_are_whole_per_node_and_channel() -> None:
    lines = LineAssembler()
    assert lines.piece("a", "stdout", b"par") == []
    assert lines.piece("a", "stderr", b"err1\nerr") == [Line("a", "stderr", b"err1")]
    assert lines.piece("b", "stdout", b"b1\n\nb2\n") == [
        Line("b", "stdout", b"b1"),
        Line("b", "stdout", b""),
        Line("b", "stdout", b"b2"),
    ]
    assert lines.piece("a", "stdout", b"tial\nnext") == [Line("a", "stdout", b"partial")]
    # the channel's end flushes its remainder only
    assert lines.end("a", "stdout") == [Line("a", "stdout", b"next")]
    assert lines.end("a", "stdout") == []
    assert lines.flush() == [Line("a", "stderr", b"err")]
    assert lines.flush() == []


def test_prefixes_and_json_records() -> None:
    assert line_prefix("web1", "stdout") == "web1: "
    assert line_prefix("web1", "stderr") == "web1 [stderr]: "
    assert json_record("end", {"node": "a", "event": "x"}) == {"event": "end", "node": "a"}


def test_node_colours_by_first_appearance() -> None:
    colours = NodeColours()
    assert [colours(n) for n in ("b", "a", "b")] == [
        NODE_PALETTE[0],
        NODE_PALETTE[1],
        NODE_PALETTE[0],
    ]
    for i in range(len(NODE_PALETTE)):
        colours(f"n{i}")
    assert colours("n-wrap") in NODE_PALETTE


def feed_through(sink: Any, events: list[tuple[str, dict[str, Any]]]) -> None:
    feed = OutputFeed()
    for name, data in events:
        item = feed.apply(name, data)
        if item is not None:
            sink.item(item)
    sink.close()


RECONNECTED = [
    ("output", out("web1", "stdout", 0, b"hello wo")),
    ("output", out("web2", "stderr", 0, b"oops\n")),
    # dropped here; the reopened stream replays from the store: web1 from its offset, web2 whole
    ("output", out("web1", "stdout", 8, b"rld\nbye")),
    ("end", end("web1", "stdout")),
    ("output", out("web2", "stderr", 0, b"oops\n")),
    ("end", end("web2", "stderr")),
    ("job_complete", {"timestamp": "t", "status": "complete"}),
]


def test_text_sink_prints_each_line_once_with_its_prefix() -> None:
    buf = io.BytesIO()
    feed_through(TextSink(buf), RECONNECTED)
    assert buf.getvalue().decode().splitlines() == [
        "web2 [stderr]: oops",
        "web1: hello world",
        "web1: bye",
    ]


def test_text_sink_through_a_rich_console_colours_the_prefix() -> None:
    from rich.console import Console

    text = io.StringIO()
    console = Console(file=text, force_terminal=True, color_system="standard", width=200)
    feed_through(TextSink(io.BytesIO(), console), RECONNECTED[:3])
    assert text.getvalue().splitlines() == [
        "\x1b[36mweb2 [stderr]: \x1b[0moops",  # the prefix in the node's colour, the text plain
        "\x1b[35mweb1: \x1b[0mhello world",
        "\x1b[35mweb1: \x1b[0mbye",  # the partial line, flushed when the sink closes
    ]


def test_json_sink_one_object_per_event() -> None:
    buf = io.StringIO()
    feed_through(JsonSink(buf), RECONNECTED)
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["output", "output", "output", "end", "end",
                                             "job_complete"]  # fmt: skip
    assert records[0] == {"event": "output", **out("web1", "stdout", 0, b"hello wo")}
    assert records[-1] == {"event": "job_complete", "timestamp": "t", "status": "complete"}


def test_channel_filter() -> None:
    buf = io.BytesIO()
    feed_through(ChannelFilter(TextSink(buf), ("stderr",)), RECONNECTED)
    assert buf.getvalue() == b"web2 [stderr]: oops\n"

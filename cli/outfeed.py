"""The per-job output feed (http-api.md §7.13) as new pieces, lines and JSON lines. Pure, no I/O.

A resumed feed may send bytes the reader already holds: after a reopen with `Last-Event-ID`
the server resends the rest of a piece, or whole channels when it replays from the store.
`OutputFeed` keeps, per node and channel, how many bytes it holds and drops (or trims) what
it has seen, so every byte is handed out once and in order. `LineAssembler` turns pieces into
whole lines per node and channel, holding a partial line until its newline or that channel's
`end` (cli.md §3.8).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from pushjobs.protocol.vocabulary import OutputChannel

Key = tuple[str, str]  # (node, channel)

# per-node prefix colours, assigned in order of first appearance (no red: that reads as error)
NODE_PALETTE = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
)


@dataclass(frozen=True, slots=True)
class Piece:
    """New bytes of one channel; `record` is the event data (trimmed when partly held)."""

    node: str
    channel: str
    offset: int
    data: bytes
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class End:
    """A channel's `end` event (the first one only)."""

    node: str
    channel: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Complete:
    """`job_complete`: the feed is over."""

    status: str | None
    record: dict[str, Any]


FeedItem = Piece | End | Complete


@dataclass(frozen=True, slots=True)
class Line:
    """One output line without its newline."""

    node: str
    channel: str
    text: bytes


def piece_bytes(record: dict[str, Any]) -> bytes | None:
    """The bytes of an `output` event's data (`text` or `base64`), None when malformed."""
    data = record.get("data")
    if not isinstance(data, str):
        return None
    if record.get("encoding") == "base64":
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return None
    return data.encode("utf-8")


def encode_piece(data: bytes) -> dict[str, str]:
    """`encoding` and `data` for bytes, as the server encodes them: text when valid UTF-8."""
    try:
        return {"encoding": "text", "data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(data).decode("ascii")}


def _key(record: dict[str, Any]) -> Key | None:
    node, channel = record.get("node"), record.get("channel")
    if isinstance(node, str) and channel in tuple(OutputChannel):
        return node, str(channel)
    return None


class OutputFeed:
    """What a reader of the feed already holds; `apply` returns only what is new."""

    def __init__(self) -> None:
        self._held: dict[Key, int] = {}  # bytes held per channel, from offset 0
        self._ended: set[Key] = set()
        self.complete: Complete | None = None

    def apply(self, name: str, record: Any) -> FeedItem | None:
        """One feed event (http-api.md §7.13); None when it is a repeat or malformed."""
        if not isinstance(record, dict) or self.complete is not None:
            return None
        if name == "job_complete":
            status = record.get("status")
            self.complete = Complete(status if isinstance(status, str) else None, record)
            return self.complete
        key = _key(record)
        if key is None or key in self._ended:
            return None
        if name == "end":
            self._ended.add(key)
            return End(*key, record)
        if name == "output":
            return self._output(key, record)
        return None

    def _output(self, key: Key, record: dict[str, Any]) -> Piece | None:
        offset, data = record.get("offset"), piece_bytes(record)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or data is None:
            return None
        held = self._held.get(key, 0)
        if offset + len(data) <= held:
            return None  # every byte of it is held already
        if offset < held:
            data = data[held - offset :]
            offset = held
            record = {**record, "offset": offset, **encode_piece(data)}
        self._held[key] = offset + len(data)
        return Piece(*key, offset, data, record)


class LineAssembler:
    """Whole lines per node and channel; a partial line waits for its newline or `end`."""

    def __init__(self) -> None:
        self._partial: dict[Key, bytes] = {}

    def piece(self, node: str, channel: str, data: bytes) -> list[Line]:
        key = (node, channel)
        parts = (self._partial.pop(key, b"") + data).split(b"\n")
        if parts[-1]:
            self._partial[key] = parts[-1]
        return [Line(node, channel, text) for text in parts[:-1]]

    def end(self, node: str, channel: str) -> list[Line]:
        """The channel ended: its partial line, if any."""
        rest = self._partial.pop((node, channel), b"")
        return [Line(node, channel, rest)] if rest else []

    def flush(self) -> list[Line]:
        """Every partial line (the feed is over), in the order the channels first held one."""
        lines = [Line(node, channel, rest) for (node, channel), rest in self._partial.items()]
        self._partial.clear()
        return lines

    def feed(self, item: FeedItem) -> list[Line]:
        """The lines an item completes."""
        if isinstance(item, Piece):
            return self.piece(item.node, item.channel, item.data)
        if isinstance(item, End):
            return self.end(item.node, item.channel)
        return self.flush()


def line_prefix(node: str, channel: str) -> str:
    """`web1: ` for stdout, `web1 [stderr]: ` for stderr."""
    return f"{node}: " if channel == OutputChannel.STDOUT else f"{node} [stderr]: "


def json_record(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """A `--json` line of the stream: the event data plus its `event` name."""
    return {"event": name, **{k: v for k, v in record.items() if k != "event"}}


def item_event(item: FeedItem) -> str:
    """The feed event name of an item."""
    if isinstance(item, Piece):
        return "output"
    return "end" if isinstance(item, End) else "job_complete"


class NodeColours:
    """A colour per node, from `NODE_PALETTE` in order of first appearance."""

    def __init__(self) -> None:
        self._styles: dict[str, str] = {}

    def __call__(self, node: str) -> str:
        style = self._styles.get(node)
        if style is None:
            style = NODE_PALETTE[len(self._styles) % len(NODE_PALETTE)]
            self._styles[node] = style
        return style

"""A small Server-Sent Events parser (the WHATWG event-stream rules), fed raw bytes.

Pure: `SseParser.feed(chunk)` returns the events completed by that chunk. `last_event_id`
is kept across events (and is what a reconnect sends as `Last-Event-ID`).
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: `event` name (default `message`), `data` text, the last event id."""

    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        """The data decoded as JSON, or the raw text when it is not JSON."""
        try:
            return json.loads(self.data)
        except ValueError:
            return self.data


class SseParser:
    """Incremental parser: lines end in CRLF, LF or CR; `:` comments; event/data/id/retry."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Parse a chunk; return the events it completes (in order)."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._pending_cr = False
        events: list[SseEvent] = []
        buf = self._buffer + text
        start = 0
        i = 0
        n = len(buf)
        while i < n:
            c = buf[i]
            if c == "\n" or c == "\r":
                line = buf[start:i]
                if c == "\r":
                    if i + 1 < n and buf[i + 1] == "\n":
                        i += 1
                    elif i + 1 == n:
                        self._pending_cr = True
                self._line(line, events)
                start = i + 1
            i += 1
        self._buffer = buf[start:]
        return events

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self, events: list[SseEvent]) -> None:
        if self._data:
            events.append(
                SseEvent(self._event or "message", "\n".join(self._data), self.last_event_id)
            )
        self._event = ""
        self._data = []

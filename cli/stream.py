"""Printing the per-job output feed `GET pushy/jobs/<id>/output` (cli.md §3.8, §7).

One SSE stream carries every node's output (http-api.md §7.13). It is read through
`reopened_events` (a dropped stream is reopened with `Last-Event-ID`), `OutputFeed` drops
what a resumed stream sends again, and a sink prints: prefixed lines (`TextSink`) or one JSON
object per event (`JsonSink`). `StreamThread` runs it beside the job feed for `--stream`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, TextIO

from pushjobs.cli.client import HttpError, SignedClient, segment
from pushjobs.cli.errors import RequestError
from pushjobs.cli.outfeed import (
    End,
    FeedItem,
    LineAssembler,
    NodeColours,
    OutputFeed,
    Piece,
    item_event,
    json_record,
    line_prefix,
)
from pushjobs.cli.reopen import NotEventStream, StreamFailed, reopened_events

SHUT_WAIT = 1.0  # how long an interrupt waits for a write in progress


class Sink(Protocol):
    """Where the new items of the feed go."""

    def item(self, item: FeedItem) -> None: ...

    def close(self) -> None: ...


class TextSink:
    """Prefixed lines (`<node>: `, `<node> [stderr]: `), whole lines only.

    Plain: bytes to `out` unchanged. With `console` (a rich Console): coloured prefixes, and
    lines printed through that console, so that a live progress bar on it stays intact.
    """

    def __init__(self, out: BinaryIO, console: Any = None) -> None:
        self.out = out
        self.console = console
        self.lines = LineAssembler()
        self.colours = NodeColours()

    def item(self, item: FeedItem) -> None:
        self._write(self.lines.feed(item))

    def close(self) -> None:
        self._write(self.lines.flush())

    def _write(self, lines: list[Any]) -> None:
        if not lines:
            return
        if self.console is None:
            self.out.write(
                b"".join(line_prefix(x.node, x.channel).encode() + x.text + b"\n" for x in lines)
            )
            self.out.flush()
            return
        from rich.text import Text

        for x in lines:
            text = Text()
            text.append(line_prefix(x.node, x.channel), style=self.colours(x.node))
            text.append(x.text.decode("utf-8", errors="replace"))
            self.console.print(text, soft_wrap=True, highlight=False)


class JsonSink:
    """One compact JSON object per event: the event data plus `event` (cli.md §3.8)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def item(self, item: FeedItem) -> None:
        line = json.dumps(
            json_record(item_event(item), item.record), ensure_ascii=False, separators=(",", ":")
        )
        self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class ChannelFilter:
    """Only the pieces and ends of some channels reach `inner` (`job output --channel`)."""

    def __init__(self, inner: Sink, channels: tuple[str, ...]) -> None:
        self.inner = inner
        self.channels = channels

    def item(self, item: FeedItem) -> None:
        if isinstance(item, (Piece, End)) and item.channel not in self.channels:
            return
        self.inner.item(item)

    def close(self) -> None:
        self.inner.close()


class GatedSink:
    """A sink written through until the main thread shuts it (Ctrl-C, cli.md §3.5)."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._open = True

    def item(self, item: FeedItem) -> None:
        with self._lock:
            if self._open:
                self.inner.item(item)

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                self.inner.close()

    def shut(self) -> None:
        """Nothing more is written (partial lines are dropped)."""
        got = self._lock.acquire(timeout=SHUT_WAIT)
        self._open = False
        if got:
            self._lock.release()


def output_feed_url(client: SignedClient, job_id: str) -> str:
    return client.push_url(f"jobs/{segment(job_id)}/output")


def stream_output(
    client: SignedClient,
    job_id: str,
    sink: Sink,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Print the job's output feed until `job_complete`; return the job's final status.

    Raises HttpError (e.g. 404 `no output for job`), NotEventStream, or StreamFailed when the
    stream dropped again after the reopen attempts. The sink is closed in every case.
    """
    feed = OutputFeed()
    events = reopened_events(
        client,
        output_feed_url(client, job_id),
        what="output feed",
        ended="the server ended the output feed before job_complete",
        require_event_stream=True,
        sleep=sleep,
    )
    try:
        for ev in events:
            item = feed.apply(ev.event, ev.json())
            if item is not None:
                sink.item(item)
            if feed.complete is not None:
                return feed.complete.status
    finally:
        events.close()
        sink.close()
    return None  # not reached: the events end only by an exception


def stream_failure(job_id: str, e: BaseException) -> str:
    """The warning for a `--stream` feed that failed (the job is still followed)."""
    if isinstance(e, HttpError) and e.status == 404:
        return f"no live output for job {job_id}: {'; '.join(e.texts) or e.message}"
    if isinstance(e, NotEventStream):
        return f"the server has no output feed for job {job_id} (it answered {e.content_type!r})"
    if isinstance(e, StreamFailed):
        return f"the output feed failed ({e.reason}); the output shown may be incomplete"
    if isinstance(e, RequestError):
        return f"the output feed failed: {e.message}"
    return f"the output feed failed: {type(e).__name__}: {e}"


class StreamThread:
    """`stream_output` in a daemon thread beside the job feed (`--stream`)."""

    def __init__(self, client: SignedClient, job_id: str, sink: Sink) -> None:
        self.job_id = job_id
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(client, sink), name="pushjobs-stream", daemon=True
        )

    def _run(self, client: SignedClient, sink: Sink) -> None:
        try:
            stream_output(client, self.job_id, sink)
        except Exception as e:  # reported as a warning once following ends
            self.error = e

    def start(self) -> StreamThread:
        self._thread.start()
        return self

    def wait(self) -> str | None:
        """Wait for `job_complete` on the output feed; the failure warning, if any."""
        self._thread.join()
        return None if self.error is None else stream_failure(self.job_id, self.error)

"""Captured output of one node in one job (wire-protocol.md §17, lifecycle.md §8). Pure.

Per channel: the stored bytes, `received_end` (next expected stream position), `omitted`
(bytes known to be missing from what is stored) and the total the agent reported.
Stored bytes only grow (2.0 results replace them whole), so each write to the store sends
just what was added since the last one (`NodeOutput.take_delta`).

The cap counts every stored byte, gap markers included, except one marker line: a channel
never holds more than `cap` bytes plus one marker. Once something does not fit, everything
later is dropped and counted, and a single marker for all of it closes the channel. The one
free marker is the first gap marker (the agent's head/tail omission): up to its length of
bytes past the cap is held back and stored at close, unless something had to be dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pushjobs.protocol.vocabulary import OutputChannel
from pushjobs.server.store.records import OutputDelta, OutputRecord, OutputTotals


def omission_marker(count: int, stored: bytes | bytearray) -> bytes:
    """`[pushjobs: N bytes omitted]\\n`, after a `\\n` when `stored` does not end a line."""
    text = f"[pushjobs: {count} bytes omitted]\n".encode("ascii")
    if stored and not stored.endswith(b"\n"):
        return b"\n" + text
    return text


@dataclass(slots=True)
class ChannelOutput:
    """One channel's stored output and counters."""

    data: bytearray = field(default_factory=bytearray)
    received_end: int = 0
    omitted: int = 0
    payload: int = 0  # stored bytes that are output, not markers
    discarded: int = 0  # bytes dropped at the cap (gaps included), marked once at close
    reported: int | None = None  # total the agent reported in its final message
    flushed: int = 0  # leading bytes of `data` the store already holds
    generation: int = 0  # bumped when `data` is replaced: a write of older bytes no longer counts
    slack: int = 0  # length of the first gap marker: how far past the cap `held` may reach
    held: bytearray = field(default_factory=bytearray)  # bytes past the cap, stored at close

    def add_chunk(self, offset: int, chunk: bytes, cap: int) -> int:
        """Store a chunk at stream position `offset`; return the gap it revealed (0 if none)."""
        gap = 0
        end = offset + len(chunk)
        if offset > self.received_end:
            gap = offset - self.received_end
            self.omitted += gap
        elif offset < self.received_end:
            chunk = chunk[self.received_end - offset :]
        self.received_end = max(self.received_end, end)
        if gap:
            self._add_gap(gap, cap)
        if chunk:
            self._add_bytes(chunk, cap)
        return gap

    def _add_gap(self, gap: int, cap: int) -> None:
        if self.discarded or self.held:
            # Past the cap already: the gap joins the one closing marker.
            self._drop(gap, counted=True)
            return
        marker = omission_marker(gap, self.data)
        if len(self.data) + len(marker) >= cap:  # room for the marker and at least one byte
            self._drop(gap, counted=True)
            return
        self.data += marker
        if not self.slack:
            self.slack = len(marker)

    def _add_bytes(self, chunk: bytes, cap: int) -> None:
        if self.discarded:
            self._drop(len(chunk))
            return
        room = max(cap - len(self.data), 0)
        kept = chunk[:room]
        self.data += kept
        self.payload += len(kept)
        rest = chunk[room:]
        if not rest:
            return
        if len(self.held) + len(rest) <= self.slack:
            self.held += rest
        else:
            self._drop(len(rest))

    def _drop(self, count: int, *, counted: bool = False) -> None:
        """Drop `count` bytes (and the held ones): from now on nothing more is stored."""
        self.discarded += count + len(self.held)
        self.omitted += len(self.held) + (0 if counted else count)
        self.held.clear()

    def set_whole(self, content: bytes) -> None:
        """Replace the channel with a complete content (protocol 2.0 results)."""
        self.data = bytearray(content)
        self.flushed = 0
        self.generation += 1
        self.payload = len(content)
        self.received_end = len(content)
        self.omitted = 0
        self.discarded = 0
        self.slack = 0
        self.held.clear()

    def close(self) -> None:
        """Store the held bytes, or one marker for everything dropped or never received."""
        if self.reported is not None and self.reported > self.received_end:
            missing = self.reported - self.received_end
            self.omitted += missing
            self.received_end = self.reported
            self._drop(missing, counted=True)
        if self.discarded:
            self.data += omission_marker(self.discarded, self.data)
            self.discarded = 0
        elif self.held:
            self.data += self.held
            self.payload += len(self.held)
            self.held.clear()

    @property
    def total(self) -> int:
        """Bytes the command wrote to the channel as far as the server knows."""
        return max(self.received_end, self.reported or 0)


class NodeOutput:
    """The output record of (job, node): two channels and a closed flag."""

    __slots__ = ("cap", "closed", "job_id", "node", "stderr", "stdout")

    def __init__(self, job_id: str, node: str, cap: int) -> None:
        self.job_id = job_id
        self.node = node
        self.cap = cap
        self.stdout = ChannelOutput()
        self.stderr = ChannelOutput()
        self.closed = False

    def channel(self, name: str) -> ChannelOutput:
        if name == OutputChannel.STDOUT:
            return self.stdout
        if name == OutputChannel.STDERR:
            return self.stderr
        raise ValueError(f"unknown channel {name!r}")

    def add_chunk(self, channel: str, offset: int, chunk: bytes) -> int | None:
        """Store a 3.0 `output` chunk; None when the record is closed (dropped), else the gap."""
        if self.closed:
            return None
        return self.channel(channel).add_chunk(offset, chunk, self.cap)

    def set_v2_results(self, stdout: str | None, stderr: str | None) -> None:
        """2.0 `succeeded`/`failed` with output: both channels replaced, record closed."""
        if self.closed:
            return
        self.stdout.set_whole((stdout or "").encode("utf-8", "surrogateescape"))
        self.stderr.set_whole((stderr or "").encode("utf-8", "surrogateescape"))
        self.close()

    def set_v3_totals(self, stdout_bytes: int | None, stderr_bytes: int | None) -> None:
        """3.0 final message totals (recorded before the record is closed)."""
        if self.closed:
            return
        if stdout_bytes is not None:
            self.stdout.reported = stdout_bytes
        if stderr_bytes is not None:
            self.stderr.reported = stderr_bytes

    def close(self) -> None:
        if self.closed:
            return
        self.stdout.close()
        self.stderr.close()
        self.closed = True

    def totals(self) -> OutputTotals:
        """The counters, without copying any bytes."""
        return OutputTotals(
            self.stdout.total,
            self.stderr.total,
            bool(self.stdout.omitted or self.stderr.omitted),
            self.closed,
        )

    def take_delta(self) -> tuple[OutputDelta, Callable[[], None]]:
        """What the store lacks, and a function to call once the store has it.

        Until that function runs, later deltas start at the same positions again (so a failed
        write is simply retried with whatever was added meanwhile).
        """
        out, err = self.stdout, self.stderr
        marks = [(ch, ch.generation, len(ch.data)) for ch in (out, err)]
        delta = OutputDelta(
            job_id=self.job_id,
            node_name=self.node,
            stdout=bytes(out.data[out.flushed :]),
            stderr=bytes(err.data[err.flushed :]),
            stdout_at=out.flushed,
            stderr_at=err.flushed,
            stdout_total=out.total,
            stderr_total=err.total,
            stdout_omitted=out.omitted,
            stderr_omitted=err.omitted,
            closed=self.closed,
        )

        def written() -> None:
            for channel, generation, end in marks:
                if channel.generation == generation:
                    channel.flushed = max(channel.flushed, end)

        return delta, written

    def to_record(self) -> OutputRecord:
        """The store's view of this record (a copy of every byte)."""
        return OutputRecord(
            job_id=self.job_id,
            node_name=self.node,
            stdout=bytes(self.stdout.data),
            stderr=bytes(self.stderr.data),
            stdout_total=self.stdout.total,
            stderr_total=self.stderr.total,
            stdout_omitted=self.stdout.omitted,
            stderr_omitted=self.stderr.omitted,
            closed=self.closed,
        )

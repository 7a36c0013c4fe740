"""Head/tail output capture of one channel (wire-protocol.md §17, agent.md §13). Pure, no I/O.

The first `H = C − C//4` bytes are streamed as chunks; later bytes are kept only in a tail buffer
of the last `C//4` bytes and sent when the process has ended. A head chunk is released when
32 KiB have accumulated or `FLUSH_DELAY` after its first byte, whichever comes first.
"""

from __future__ import annotations

from pushjobs.protocol.compat import dataclass
from pushjobs.protocol.limits import OUTPUT_CHUNK_LIMIT

FLUSH_DELAY = 0.1


@dataclass(frozen=True, slots=True)
class Chunk:
    """One `output` message worth of bytes."""

    offset: int
    data: bytes
    omitted_bytes: int | None = None


def _split(offset: int, data: bytes | bytearray, omitted: int | None = None) -> list[Chunk]:
    chunks = []
    for start in range(0, len(data), OUTPUT_CHUNK_LIMIT):
        chunks.append(
            Chunk(offset + start, bytes(data[start : start + OUTPUT_CHUNK_LIMIT]), omitted)
        )
        omitted = None  # only the first chunk carries it
    return chunks


class ChannelCapture:
    """Capture state of one channel (stdout or stderr) of one job."""

    def __init__(self, max_output_bytes: int) -> None:
        cap = max(0, max_output_bytes)
        self.cap = cap
        self.tail_size = cap // 4
        self.head_size = cap - self.tail_size
        self.total = 0
        self._pending = bytearray()  # head bytes not yet released as chunks
        self._pending_offset = 0
        self._pending_since: float | None = None
        self._tail = bytearray()  # bytes at positions >= head_size, at most tail_size of them
        self._finished = False

    def feed(self, data: bytes, now: float) -> list[Chunk]:
        """Account for bytes read from the pipe; return the chunks ready to send now."""
        if not data or self._finished:
            return []
        start = self.total
        self.total += len(data)
        head_part = b""
        if start < self.head_size:
            head_part = data[: self.head_size - start]
        rest = data[len(head_part) :]
        chunks: list[Chunk] = []
        if head_part:
            if not self._pending:
                self._pending_offset = start
                self._pending_since = now
            self._pending += head_part
            while len(self._pending) >= OUTPUT_CHUNK_LIMIT:
                chunks.append(
                    Chunk(self._pending_offset, bytes(self._pending[:OUTPUT_CHUNK_LIMIT]))
                )
                del self._pending[:OUTPUT_CHUNK_LIMIT]
                self._pending_offset += OUTPUT_CHUNK_LIMIT
                self._pending_since = now if self._pending else None
        if rest and self.tail_size:
            self._tail += rest[-self.tail_size :]
            excess = len(self._tail) - self.tail_size
            if excess > 0:
                del self._tail[:excess]
        return chunks

    def next_flush(self) -> float | None:
        """When the pending head chunk is due, or None."""
        if self._pending_since is None:
            return None
        return self._pending_since + FLUSH_DELAY

    def poll(self, now: float) -> list[Chunk]:
        """Release the pending head chunk when its delay has passed."""
        due = self.next_flush()
        if due is None or now < due:
            return []
        return self._take_pending()

    def _take_pending(self) -> list[Chunk]:
        chunks = _split(self._pending_offset, self._pending)
        self._pending_offset += len(self._pending)
        self._pending.clear()
        self._pending_since = None
        return chunks

    def finish(self) -> list[Chunk]:
        """After the process ended: every chunk still to send (pending head, then the tail)."""
        if self._finished:
            return []
        self._finished = True
        chunks = self._take_pending()
        if self.total <= self.head_size:
            return chunks
        if self.total <= self.cap:
            chunks += _split(self.head_size, self._tail)
        else:
            omitted = self.total - self.tail_size - self.head_size
            chunks += _split(self.total - self.tail_size, self._tail, omitted)
        self._tail.clear()
        return chunks

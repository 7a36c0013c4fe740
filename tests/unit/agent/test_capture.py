"""Head/tail output capture and chunking (wire-protocol.md §17, agent.md §13)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pushjobs.agent.capture import FLUSH_DELAY, ChannelCapture, Chunk
from pushjobs.protocol.limits import OUTPUT_CHUNK_LIMIT


def reassemble(chunks: list[Chunk]) -> dict[int, int]:
    """offset -> byte, checking chunk sizes."""
    out: dict[int, int] = {}
    for chunk in chunks:
        assert 1 <= len(chunk.data) <= OUTPUT_CHUNK_LIMIT
        for i, byte in enumerate(chunk.data):
            out[chunk.offset + i] = byte
    return out


def test_small_output_waits_for_the_delay() -> None:
    cap = ChannelCapture(1000)
    assert cap.feed(b"hello", 10.0) == []
    assert cap.next_flush() == 10.0 + FLUSH_DELAY
    assert cap.poll(10.05) == []
    assert cap.poll(10.0 + FLUSH_DELAY) == [Chunk(0, b"hello")]
    assert cap.next_flush() is None
    cap.feed(b"!", 11.0)
    assert cap.finish() == [Chunk(5, b"!")]


def test_full_chunk_released_at_once() -> None:
    cap = ChannelCapture(1 << 20)
    data = bytes(range(256)) * 300  # 76800 bytes
    chunks = cap.feed(data, 0.0)
    assert [c.offset for c in chunks] == [0, OUTPUT_CHUNK_LIMIT]
    assert all(len(c.data) == OUTPUT_CHUNK_LIMIT for c in chunks)
    rest = cap.finish()
    assert rest == [Chunk(2 * OUTPUT_CHUNK_LIMIT, data[2 * OUTPUT_CHUNK_LIMIT :])]


def test_total_at_most_cap_sends_everything() -> None:
    cap = ChannelCapture(100)  # H = 75, T = 25
    data = bytes(range(90))
    chunks = cap.feed(data, 0.0) + cap.finish()
    assert b"".join(c.data for c in chunks) == data
    assert [c.offset for c in chunks] == [0, 75]
    assert all(c.omitted_bytes is None for c in chunks)


def test_exactly_cap() -> None:
    cap = ChannelCapture(100)
    data = bytes(range(100))
    chunks = cap.feed(data, 0.0) + cap.finish()
    assert b"".join(c.data for c in chunks) == data


def test_over_cap_sends_head_and_tail_with_omitted_bytes() -> None:
    cap = ChannelCapture(100)  # H = 75, T = 25
    data = bytes(i % 251 for i in range(1000))
    streamed = []
    for i in range(0, 1000, 7):
        streamed += cap.feed(data[i : i + 7], 0.0)
    final = cap.finish()
    head = streamed + [c for c in final if c.offset < 75]
    assert b"".join(c.data for c in head) == data[:75]
    tail = [c for c in final if c.offset >= 75]
    assert tail == [Chunk(975, data[975:], omitted_bytes=1000 - 25 - 75)]
    assert cap.total == 1000


def test_nothing_streamed_beyond_head() -> None:
    cap = ChannelCapture(100)
    assert cap.feed(b"x" * 75, 0.0) == []
    assert cap.poll(1.0) == [Chunk(0, b"x" * 75)]
    assert cap.feed(b"y" * 500, 2.0) == []
    assert cap.next_flush() is None


def test_large_tail_split_into_chunks_first_carries_omitted() -> None:
    cap = ChannelCapture(1 << 20)  # T = 262144
    total = 3 << 20
    block = b"z" * 65536
    for _ in range(total // len(block)):
        cap.feed(block, 0.0)
    final = cap.finish()
    tail = [c for c in final if c.offset >= cap.head_size]
    assert tail[0].offset == total - cap.tail_size
    assert tail[0].omitted_bytes == total - cap.tail_size - cap.head_size
    assert all(c.omitted_bytes is None for c in tail[1:])
    assert sum(len(c.data) for c in tail) == cap.tail_size


def test_finish_twice_is_empty() -> None:
    cap = ChannelCapture(100)
    cap.feed(b"abc", 0.0)
    assert cap.finish() == [Chunk(0, b"abc")]
    assert cap.finish() == []
    assert cap.feed(b"more", 1.0) == []


@given(
    cap_size=st.integers(min_value=4, max_value=5000),
    pieces=st.lists(st.binary(min_size=1, max_size=3000), max_size=20),
)
def test_property_head_and_tail_are_the_real_bytes(cap_size: int, pieces: list[bytes]) -> None:
    cap = ChannelCapture(cap_size)
    data = b"".join(pieces)
    chunks: list[Chunk] = []
    now = 0.0
    for piece in pieces:
        chunks += cap.feed(piece, now)
        now += 0.03
        chunks += cap.poll(now)
    chunks += cap.finish()
    got = reassemble(chunks)
    head, tail = cap.head_size, cap.tail_size
    offsets = [c.offset for c in chunks]
    assert offsets == sorted(offsets)
    if len(data) <= cap_size:
        assert got == dict(enumerate(data))
        assert all(c.omitted_bytes is None for c in chunks)
    else:
        expected = {i: data[i] for i in range(head)}
        expected.update({i: data[i] for i in range(len(data) - tail, len(data))})
        assert got == expected
        marked = [c for c in chunks if c.omitted_bytes is not None]
        if tail:
            assert marked == [c for c in chunks if c.offset == len(data) - tail]
            assert marked[0].omitted_bytes == len(data) - tail - head

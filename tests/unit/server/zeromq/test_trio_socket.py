"""TrioSocket: draining until EAGAIN and the edge-triggered zmq.FD rule, on real inproc sockets."""

import trio
import zmq

from pushjobs.server.zeromq.trio_socket import TrioSocket


def pair(ctx: zmq.Context, name: str) -> tuple[TrioSocket, TrioSocket]:
    a = ctx.socket(zmq.DEALER)
    b = ctx.socket(zmq.DEALER)
    for sock in (a, b):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
    a.bind(f"inproc://{name}")
    b.connect(f"inproc://{name}")
    return TrioSocket(a), TrioSocket(b)


async def test_recv_batch_drains_everything_pending():
    ctx = zmq.Context()
    try:
        a, b = pair(ctx, "drain")
        for i in range(10):
            assert b.send_nowait([b"m", str(i).encode()])
        got: list = []
        with trio.fail_after(5):
            while len(got) < 10:
                got += await a.recv_batch(limit=4)
        assert [m[1] for m in got] == [str(i).encode() for i in range(10)]
        a.close()
        b.close()
    finally:
        ctx.destroy(linger=0)


async def test_reader_wakes_while_another_task_sends_on_the_same_socket():
    """Sends on the reader's socket consume FD edges; the reader must still see every message."""
    ctx = zmq.Context()
    n = 3000
    try:
        a, b = pair(ctx, "edges")
        received: list = []

        async def reader():
            while len(received) < n:
                received.extend(await a.recv_batch())

        async def echo_sender():
            # Sends on `a` (the reader's socket) interleaved with the peer's messages.
            for _ in range(n):
                a.send_nowait([b"ping"])
                await trio.sleep(0)

        async def peer():
            for i in range(n):
                b.send_nowait([str(i).encode()])
                if i % 7 == 0:
                    await trio.sleep(0)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(echo_sender)
                nursery.start_soon(peer)
        assert [m[0] for m in received] == [str(i).encode() for i in range(n)]
        pings = 0
        with trio.fail_after(5):
            while pings < n:
                pings += len(await b.recv_batch())
        a.close()
        b.close()
    finally:
        ctx.destroy(linger=0)


async def test_frames_without_copy_and_closed_socket():
    ctx = zmq.Context()
    try:
        a, b = pair(ctx, "frames")
        b.send_nowait([b"x", b"y"])
        with trio.fail_after(5):
            (frames,) = await a.recv_batch(copy=False)
        assert [f.bytes for f in frames] == [b"x", b"y"]
        b.close()
        assert b.send_nowait([b"late"]) is False  # closed: refused, no exception
        b.close()  # idempotent
        a.close()
    finally:
        ctx.destroy(linger=0)


async def test_a_quiet_pause_lasts_its_interval_unless_a_send_ends_it(autojump_clock):
    """`pause_while_quiet` (the broker's idle read interval), on trio's clock."""
    ctx = zmq.Context()
    try:
        a, b = pair(ctx, "pause")
        start = trio.current_time()
        await a.pause_while_quiet(0.05, 1.0)  # nothing sent yet: the full pause
        assert trio.current_time() - start >= 0.05

        assert a.send_nowait([b"ping"])
        start = trio.current_time()
        await a.pause_while_quiet(5.0, 1.0)  # a command just went out: no pause
        assert trio.current_time() - start < 1.0

        await trio.sleep(1.0)
        async with trio.open_nursery() as nursery:
            ended = trio.Event()

            async def pause() -> None:
                await a.pause_while_quiet(30.0, 1.0)
                ended.set()

            nursery.start_soon(pause)
            await trio.sleep(0.01)
            assert not ended.is_set()
            start = trio.current_time()
            assert a.send_nowait([b"ping"])  # a send ends the pause at once
            with trio.fail_after(5):
                await ended.wait()
            assert trio.current_time() - start < 5.0
        a.close()
        b.close()
    finally:
        ctx.destroy(linger=0)

"""The agent's socket pair per config: replacing it again and again must not leak or collide
(every server restart and every config lifetime replaces it, for the life of the agent)."""

from __future__ import annotations

import os
import threading
from typing import Any

import trio
import zmq
from cryptography.hazmat.primitives.asymmetric import rsa

from pushjobs.agent.link import Identity, _Session
from pushjobs.agent.session import ServerConfig


def _config(pub_port: int, router_port: int) -> ServerConfig:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ServerConfig(
        out_addr=f"tcp://127.0.0.1:{pub_port}",
        command_addr=f"tcp://127.0.0.1:{router_port}",
        interval=1.0,
        offline_threshold=3,
        online_threshold=2,
        public_key=key.public_key(),
        curve_public_key=None,
        session_key=b"k" * 32,
        lifetime=3600.0,
        max_message_skew=300.0,
        incarnation_id="incarnation",
        max_output_bytes=1 << 20,
    )


def _drain(sock: zmq.Socket[Any]) -> None:
    try:
        while True:
            sock.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        pass


def test_replacing_the_session_many_times_keeps_descriptors_flat() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    pub = ctx.socket(zmq.PUB)
    config = _config(
        pub.bind_to_random_port("tcp://127.0.0.1"), router.bind_to_random_port("tcp://127.0.0.1")
    )
    ident = Identity("node", "org", "incarnation", "", "")

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def settle(limit: int) -> None:
        # libzmq's reaper thread closes released sockets a little later; a run faster than it
        # would hit a low descriptor limit (CI has 1024) without any leak.
        with trio.move_on_after(5):
            while open_fds() > limit:
                await trio.sleep(0.01)

    async def main() -> tuple[int, int]:
        session = _Session(ctx, config, ident)
        await trio.sleep(0.05)
        before = open_fds()
        for round_number in range(1500):
            if round_number % 10 == 0:
                await settle(before + 64)
            session.close()
            session = _Session(ctx, config, ident)
            assert set(session.monitors) == {"heartbeat", "command"}
            for monitor in session.monitors.values():
                _drain(monitor)
            _drain(router)
        session.close()
        await settle(before)
        return before, open_fds()

    try:
        before, after = trio.run(main)
    finally:
        router.close(linger=0)
        pub.close(linger=0)
        # A monitor left behind makes zmq_ctx_term wait forever (the agent's shutdown).
        term = threading.Thread(target=ctx.term, daemon=True)
        term.start()
        term.join(10)
    assert not term.is_alive(), "zmq context did not terminate: a socket was left open"
    assert after <= before + 64, (before, after)  # a leak would be thousands

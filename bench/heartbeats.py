"""Inbound heartbeat throughput of the broker: messages/second validated and processed.

Runs the real `Broker` and `NodeRegistry` in this process (trio) on 127.0.0.1 with an in-memory
organization look-up, and a separate sender process with one DEALER per simulated node that
sends properly sealed heartbeats (HMAC, timestamp, increasing 3.0 sequences) as fast as it can.
Prints figures; asserts nothing.

    python bench/heartbeats.py --nodes 200 --seconds 5 [--version 2.0] [--plain]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import uuid
from typing import TYPE_CHECKING

import trio
import zmq
from zmq.utils import z85

from pushjobs.protocol.envelope import seal_hmac
from pushjobs.protocol.keys import generate_rsa_key
from pushjobs.protocol.messages import AgentMessage
from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.server.config import Settings
from pushjobs.server.nodes.registry import NodeRegistry
from pushjobs.server.nodes.sessions import SessionKeys
from pushjobs.server.runtime import curve_key_pair
from pushjobs.server.store.records import Org
from pushjobs.server.zeromq.broker import BoundPorts, Broker

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event as EventType

ORG = "bench"


class InMemoryOrgs:
    """Stands in for the principal backend: one organization exists."""

    async def org(self, name: str) -> Org | None:
        return Org(id="bench-org", name=ORG, full_name=ORG, created_at=0.0) if name == ORG else None


class NoJobs:
    """Stands in for the job manager: no job is live, so a message naming one means rehab."""

    def is_live_member(self, org: str, node: str, job_id: str) -> bool:
        return False

    def on_job_message(self, org: str, node: str, msg: AgentMessage, version: str) -> bool:
        return False

    def on_aborted(self, org: str, node: str, msg: AgentMessage) -> None:
        return None

    def on_output(self, org: str, node: str, msg: AgentMessage) -> None:
        return None


def sender(
    port: int,
    server_curve: str | None,
    nodes: list[tuple[str, bytes, str, str]],
    version: str,
    seconds: float,
    sent: Synchronized[int],
    go: EventType,
) -> None:
    """Say hello from every node, wait for `go`, then blast heartbeats for `seconds`."""
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, len(nodes) + 64)
    socks = []
    for _name, _key, public, secret in nodes:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        if server_curve is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_curve.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode())
        sock.connect(f"tcp://127.0.0.1:{port}")
        socks.append(sock)
    incarnation = str(uuid.uuid4())
    sequences = [0] * len(nodes)
    count = 0
    stamp_second, stamp = -1, ""
    deadline = 0.0
    while deadline == 0.0 or time.monotonic() < deadline:
        if deadline == 0.0 and count >= len(nodes):
            go.wait()
            deadline = time.monotonic() + seconds
        now = int(time.time())
        if now != stamp_second:
            stamp_second, stamp = now, format_rfc1123(now)
        for i, (name, key, _p, _s) in enumerate(nodes):
            sequences[i] += 1
            fields = {
                "node": name,
                "client": name,
                "protocol_version": version,
                "org": ORG,
                "type": "heartbeat",
                "sequence": sequences[i],
                "timestamp": stamp,
                "incarnation_id": incarnation,
                "job_state": "idle",
                "job_id": None,
            }
            header, body = seal_hmac(version, fields, key)
            try:
                socks[i].send_multipart([header, body], zmq.NOBLOCK)
                count += 1
            except zmq.Again:
                sequences[i] -= 1
    sent.value = count
    time.sleep(0.5)
    ctx.destroy(linger=0)


async def run(args: argparse.Namespace) -> None:
    settings = Settings()
    settings.zeromq.listen = "tcp://127.0.0.1"
    settings.zeromq.heartbeat_port = 0
    settings.zeromq.command_port = 0
    settings.zeromq.disable_curve_encryption = args.plain
    settings.timing.heartbeat_interval = 1.0
    sessions = SessionKeys(lifetime=3600)
    registry = NodeRegistry(timing=settings.timing, sessions=sessions)
    curve = curve_key_pair(settings)
    broker = Broker(
        settings=settings,
        curve_secret=curve.secret if curve is not None else None,
        server_key=generate_rsa_key(),
        incarnation_id=str(uuid.uuid4()),
        sessions=sessions,
        nodes=registry,
        jobs=NoJobs(),
        orgs=InMemoryOrgs(),
    )
    nodes = []
    for i in range(args.nodes):
        name = f"node{i:05d}"
        public, secret = zmq.curve_keypair()
        sessions.register_curve_key(ORG, name, z85.decode(public))
        nodes.append((name, sessions.session_key(ORG, name), public.decode(), secret.decode()))
    server_curve = curve.public if curve is not None else None
    async with trio.open_nursery() as nursery:
        ports: BoundPorts = await nursery.start(broker.run)
        sent = mp.Value("q", 0)
        go = mp.Event()
        proc = mp.Process(
            target=sender,
            args=(ports.command_port, server_curve, nodes, args.version, args.seconds, sent, go),
        )
        proc.start()
        # Measure from the moment every node is connected until the backlog is processed.
        while registry.online_count() < args.nodes and proc.is_alive():
            await trio.sleep(0.05)
        start_t, start_n = time.monotonic(), broker.stats.accepted
        go.set()
        end_t, end_n = start_t, start_n
        while proc.is_alive() or time.monotonic() - end_t < 0.3:
            await trio.sleep(0.05)
            if broker.stats.accepted != end_n:
                end_t, end_n = time.monotonic(), broker.stats.accepted
        nursery.cancel_scope.cancel()
    proc.join()
    elapsed = end_t - start_t
    rate = (end_n - start_n) / elapsed if elapsed > 0 else 0.0
    print(
        f"nodes={args.nodes} version={args.version} curve={not args.plain}: "
        f"{rate:,.0f} heartbeats/s accepted over {elapsed:.1f}s; "
        f"sent {sent.value:,}, accepted {broker.stats.accepted:,}, "
        f"dropped {broker.stats.dropped:,}, online {registry.online_count()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--version", choices=("2.0", "3.0"), default="3.0")
    parser.add_argument("--plain", action="store_true", help="CURVE disabled")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()

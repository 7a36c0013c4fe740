"""Transport limit: what raw pyzmq does for one job's messages, with no pushjobs server.

One ROUTER (CURVE server, in this process) and N CURVE DEALERs (in a second process, like the
swarm's simulated agents) exchange per node the five messages of a job: `commit` →
`ack_commit`, `run` → `ack_run` + `succeeded`. Every body is msgpack and carries an
HMAC-SHA256 signature in a header frame, signed by the sender and checked by the receiver,
both ways — the least work any server speaking this protocol must do. The DEALERs connect
first; only the job exchange is timed.

    python bench/transport_limit.py --nodes 5000        # prints wall and ROUTER CPU seconds

Other benchmarks call `measure_limit(nodes)` in their own run and print their figures as
ratios to it (the issue "Performance" asks for ratios to a limit measured in the same run).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import multiprocessing as mp
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from swarm_server import raise_fd_limit

KEY = b"k" * 32  # one session key for every node: HMAC costs the same whichever key it uses
HEADER = b"Version:3.0;SigningMethod:hmac_sha256;Signature:"


@dataclass(frozen=True)
class Limit:
    nodes: int
    wall_s: float  # first `commit` sent → last `succeeded` checked
    router_cpu_s: float  # this process (all threads, libzmq's I/O thread included) meanwhile


def seal(fields: dict[str, Any]) -> list[bytes]:
    body = msgpack.packb(fields, use_bin_type=True)
    return [HEADER + base64.b64encode(hmac.digest(KEY, body, "sha256")), body]


def unseal(header: bytes, body: bytes) -> dict[str, Any]:
    signature = base64.b64decode(header[len(HEADER) :])
    if not hmac.compare_digest(signature, hmac.digest(KEY, body, "sha256")):
        raise ValueError("bad signature")
    fields: dict[str, Any] = msgpack.unpackb(body, raw=False)
    return fields


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _agents(address: str, server_key: bytes, nodes: int, ready: Any, done: Any) -> None:
    """The DEALER side: connect every node, say hello, answer commit and run until told."""
    raise_fd_limit(2 * nodes + 256)
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, nodes + 64)
    poller = zmq.Poller()
    dealers = []
    for i in range(nodes):
        public, secret = zmq.curve_keypair()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
            server_key,
            public,
            secret,
        )
        sock.connect(address)
        sock.send_multipart(seal({"type": "hello", "node": f"node-{i:05d}", "sequence": 1}))
        poller.register(sock, zmq.POLLIN)
        dealers.append(sock)
    ready.set()
    sequence = 1
    while not done.is_set():
        for sock, _ in poller.poll(100):
            while True:
                try:
                    header, body = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                fields = unseal(header, body)
                sequence += 1
                reply = {"sequence": sequence, "job_id": fields["job_id"]}
                if fields["type"] == "commit":
                    sock.send_multipart(seal({**reply, "type": "ack_commit"}))
                elif fields["type"] == "run":
                    sock.send_multipart(seal({**reply, "type": "ack_run"}))
                    sock.send_multipart(seal({**reply, "type": "succeeded", "exit_status": 0}))
    for sock in dealers:
        sock.close(0)
    ctx.term()


def _receive(router: zmq.Socket[Any], count: int, timeout: float) -> list[bytes]:
    """`count` checked messages from the agents; the routing ids they came from."""
    senders: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(senders) < count:
        if not router.poll(max(1, int(1000 * (deadline - time.monotonic())))):
            raise TimeoutError(f"{len(senders)} of {count} messages after {timeout} s")
        while len(senders) < count:
            try:
                routing_id, header, body = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            unseal(header, body)
            senders.append(routing_id)
    return senders


def measure_limit(nodes: int, timeout: float = 300.0) -> Limit:
    """Connect `nodes` DEALERs, then time one job's five messages per node."""
    raise_fd_limit(2 * nodes + 256)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    public, secret = zmq.curve_keypair()
    router.curve_server, router.curve_secretkey = True, secret
    for option in (zmq.SNDHWM, zmq.RCVHWM):
        router.setsockopt(option, 0)
    router.setsockopt(zmq.BACKLOG, 4096)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    spawn = mp.get_context("spawn")
    ready, done = spawn.Event(), spawn.Event()
    agents = spawn.Process(
        target=_agents, args=(f"tcp://127.0.0.1:{port}", public, nodes, ready, done)
    )
    agents.start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.5):
            if not agents.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the DEALER process did not connect (exit {agents.exitcode})")
        routing_ids = _receive(router, nodes, timeout)  # hellos: every node connected
        cpu0, t0 = _cpu(), time.monotonic()
        sequence = 0
        for step, replies in (("commit", 1), ("run", 2)):
            for routing_id in routing_ids:
                sequence += 1
                body = {"sequence": sequence, "type": step, "job_id": "j" * 32, "command": "true"}
                router.send_multipart([routing_id, *seal(body)])
            _receive(router, replies * nodes, timeout)
        wall, cpu = time.monotonic() - t0, _cpu() - cpu0
    finally:
        done.set()
        agents.join(30)
        if agents.is_alive():
            agents.kill()  # by its own handle (pid)
            agents.join()
        router.close(0)
        ctx.term()
    return Limit(nodes, wall, cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="DEALERs (default 1000)")
    parser.add_argument("--repeat", type=int, default=1, help="measurements (default 1)")
    args = parser.parse_args()
    print(f"transport limit: ROUTER ↔ {args.nodes} CURVE DEALERs, 5 messages a node")
    for _ in range(args.repeat):
        limit = measure_limit(args.nodes)
        per_node = 1e6 * limit.router_cpu_s / limit.nodes
        print(
            f"  wall {limit.wall_s:.3f} s, ROUTER CPU {limit.router_cpu_s:.3f} s "
            f"({per_node:.0f} µs a node)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

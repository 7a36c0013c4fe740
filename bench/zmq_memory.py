"""libzmq's own memory per connected agent, fresh and after traffic: the floor under the server's
memory per node.

One process holds what the server holds per agent, and nothing else: a ROUTER (CURVE server)
and a PUB socket. A second process connects N agents the way `pushjobs-agent` does: a CURVE
DEALER to the ROUTER and a SUB to the PUB. Then, round after round, every agent sends one
message (64–128 bytes, like a heartbeat), the ROUTER answers each agent once (like a command)
and the PUB publishes one message (like the server's heartbeat). The first process's RSS per
agent is printed after connecting and at a few round counts.

libzmq keeps each pipe's messages in chunks of 256 message slots (64 bytes each); a chunk's
pages become resident as messages pass through them, and a drained chunk is kept as the spare.
So a connection's memory grows with the messages it has carried until each pipe has cycled
through its two chunks (~512 messages a direction), and is flat from then on.

    python bench/zmq_memory.py [--nodes 1000] [--rounds 600] [--json FILE]

Prints figures; asserts nothing. The agents' process is joined before exit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import zmq

MARKS = (1, 64, 128, 256, 384, 512, 600, 768, 1024)
MESSAGE = b"m" * 96


def rss_kb() -> int:
    """VmRSS of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def agents(command: int, heartbeat: int, server_key: bytes, n: int, go: Any, ready: Any) -> None:
    """N agents: a CURVE DEALER and a SUB each; per `go`, one message from every DEALER, then
    read whatever arrived."""
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 2 * n + 64)
    dealers, subs = [], []
    for _ in range(n):
        public, secret = zmq.curve_keypair()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVHWM, 0)
        dealer.curve_serverkey = server_key
        dealer.curve_publickey = public
        dealer.curve_secretkey = secret
        dealer.connect(f"tcp://127.0.0.1:{command}")
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{heartbeat}")
        dealers.append(dealer)
        subs.append(sub)
    ready.put(True)
    while go.get():
        for dealer in dealers:
            dealer.send(MESSAGE)
        ready.put(True)
        for sock in (*dealers, *subs):
            while sock.poll(0):
                sock.recv()
    for sock in (*dealers, *subs):
        sock.close()
    ctx.term()


def measure(n: int, rounds: int) -> dict[str, Any]:
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 2 * n + 64)
    server_public, server_secret = zmq.curve_keypair()
    router = ctx.socket(zmq.ROUTER)
    for option, value in ((zmq.LINGER, 0), (zmq.RCVHWM, 0), (zmq.SNDHWM, 0)):
        router.setsockopt(option, value)
    router.curve_server = True
    router.curve_secretkey = server_secret
    command = router.bind_to_random_port("tcp://127.0.0.1")
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)
    heartbeat = pub.bind_to_random_port("tcp://127.0.0.1")
    base = rss_kb()
    go: Any = mp.Queue()
    ready: Any = mp.Queue()
    proc = mp.Process(target=agents, args=(command, heartbeat, server_public, n, go, ready))
    proc.start()
    by_round: dict[int, float] = {}
    try:
        ready.get(timeout=300)
        for done in range(1, rounds + 1):
            go.put(True)
            ready.get(timeout=60)
            for _ in range(n):
                routing_id, _body = router.recv_multipart()
                router.send_multipart([routing_id, MESSAGE])
            pub.send(MESSAGE)
            if done in MARKS or done == rounds:
                time.sleep(0.2)  # let the I/O thread settle
                by_round[done] = round((rss_kb() - base) / n, 1)
                print(f"  after {done:4d} messages each way: {by_round[done]:6.1f} KB an agent")
        go.put(False)
        proc.join(60)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        router.close()
        pub.close()
        ctx.term()
    first, last = by_round[min(by_round)], by_round[max(by_round)]
    return {
        "nodes": n,
        "rounds": rounds,
        "fresh_kb": first,
        "warmed_kb": last,
        "by_round": by_round,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="agents (default 1000)")
    parser.add_argument("--rounds", type=int, default=600, help="messages each way (default 600)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = parser.parse_args()
    print(
        f"libzmq {zmq.zmq_version()} memory per agent (CURVE ROUTER + PUB connection), "
        f"{args.nodes} agents"
    )
    figures = measure(args.nodes, args.rounds)
    print(
        f"  fresh {figures['fresh_kb']:.1f} KB, after {args.rounds} messages each way "
        f"{figures['warmed_kb']:.1f} KB an agent"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

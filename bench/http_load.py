"""HTTP API load: requests/second and latency of a few endpoints at several concurrencies.

Starts a private server (as bench/swarm.py does) with a few registered nodes and hits:

- `status`      `GET /pushy/_status` — no authentication: the HTTP stack alone;
- `node_state`  `GET org/node_states/NODE` signed as the admin — authentication (organization
                and principal look-ups, RSA verify) plus a trivial handler;
- `config`      `GET org/config/NODE?ccpk=...` signed as the node — what every agent does at
                start and after a server restart (adds RSA encryption of the session key).

Signatures are computed once per endpoint and reused (valid for 15 minutes), so the client's
CPU goes into HTTP, not RSA. Prints one row per (endpoint, concurrency); asserts nothing.

    python bench/http_load.py [--requests 600] [--concurrency 1,4,16,64]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import trio
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarm_server import LocalServer, node_names, sample, self_cpu

from pushjobs.protocol.chef_auth import sign_request
from pushjobs.protocol.keys import load_private_key


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(args: argparse.Namespace, server: LocalServer, target) -> None:
    admin_key = load_private_key(target.admin_key_pem)
    node_key = load_private_key(target.node_key_pem)
    node = "load-00000"
    org_path = f"/organizations/{target.org}/pushy"

    def signed(path: str, user: str, key) -> dict[str, str]:
        headers = sign_request(method="GET", path=path, body=b"", user_id=user, private_key=key)
        return {"Accept": "application/json", **headers}

    ccpk = zmq.curve_keypair()[0].decode()
    endpoints = {
        "status": ("/pushy/_status", {"Accept": "application/json"}, None),
        "node_state": (
            f"{org_path}/node_states/{node}",
            signed(f"{org_path}/node_states/{node}", target.admin_user, admin_key),
            None,
        ),
        "config": (
            f"{org_path}/config/{node}",
            signed(f"{org_path}/config/{node}", node, node_key),
            {"ccpk": ccpk, "version": "3.0"},
        ),
    }
    levels = [int(c) for c in args.concurrency.split(",")]
    host, port = target.http_url.split("://", 1)[1].rsplit(":", 1)
    print(f"{'endpoint':<11} {'conc':>4} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} "
          f"{'p99 ms':>7} {'server CPU':>10} {'client CPU':>10}")  # fmt: skip
    for name in args.endpoints.split(","):
        path, headers, params = endpoints[name]
        if params:
            path += "?" + urlencode(params)
        request = _request_bytes(path, host, int(port), headers)
        for conc in levels:
            latencies: list[float] = []
            failures = [0]
            remaining = iter(range(args.requests))
            before, client_before = sample(target.pid), self_cpu()
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(conc):
                    nursery.start_soon(
                        _worker, host, int(port), request, remaining, latencies, failures
                    )
            elapsed = time.perf_counter() - t0
            after, client_cpu = sample(target.pid), self_cpu() - client_before
            latencies.sort()
            cpu = ""
            if before and after:
                cpu = f"{100 * (after.cpu - before.cpu) / (after.wall - before.wall):.0f}%"
            note = f"  ({failures[0]} failed)" if failures[0] else ""
            print(
                f"{name:<11} {conc:>4} {len(latencies) / elapsed:>7.0f} "
                f"{1000 * percentile(latencies, 0.5):>7.1f} "
                f"{1000 * percentile(latencies, 0.9):>7.1f} "
                f"{1000 * percentile(latencies, 0.99):>7.1f} {cpu:>10} "
                f"{100 * client_cpu / elapsed:>9.0f}%{note}",
                flush=True,
            )


def _request_bytes(path: str, host: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _worker(
    host: str,
    port: int,
    request: bytes,
    remaining: Iterator[int],
    latencies: list[float],
    failures: list[int],
) -> None:
    """One keep-alive connection sending `request` until `remaining` runs out.

    A minimal HTTP/1.1 client (Content-Length bodies only) so that the client's own CPU stays
    small next to the server's: httpx costs several times more per request.
    """
    stream = await trio.open_tcp_stream(host, port)
    buffer = b""
    async with stream:
        for _ in remaining:
            t0 = time.perf_counter()
            await stream.send_all(request)
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += await stream.receive_some(65536)
            buffer = buffer[length:]
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                failures[0] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="per row (default 600)")
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated levels")
    parser.add_argument(
        "--endpoints", default="status,node_state,config", help="comma-separated subset"
    )
    parser.add_argument("--keep", action="store_true", help="keep the server's temp dir")
    args = parser.parse_args()
    server = LocalServer(heartbeat_interval=10.0, keep_dir=args.keep)
    try:
        target = server.prepare(node_names("load-", 4))
        server.start(target)
        trio.run(run, args, server, target)
    except KeyboardInterrupt:
        return 130
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP API load: requests/second and latency of a few endpoints at several concurrencies.

Starts a private server (as bench/swarm.py does) with a few registered nodes and hits:

- `status`      `GET /pushy/_status` — no authentication: the HTTP stack alone;
- `node_state`  `GET org/node_states/NODE` signed as the admin — authentication (organization
                and principal look-ups, RSA verify) plus a trivial handler;
- `config`      `GET org/config/NODE?ccpk=...` signed as the node — what every agent does at
                start and after a server restart (adds RSA encryption of the session key).

and, first, `floor`: hypercorn's own cost — an empty ASGI app (200, a 16-byte JSON body) served
by hypercorn's trio worker in a process of its own with the server's hypercorn settings
(`runtime.hypercorn_config`) and logging, loaded by the same client. The `x floor` column is a
row's req/s over the floor's at the same concurrency: what is left is the cost of our code.

Signatures are computed once per endpoint and reused (valid for 15 minutes), so the client's
CPU goes into HTTP, not RSA. The client reconnects when the server closes a connection
(hypercorn closes keep-alive connections after `keep_alive_max_requests`, 1000 requests).
Prints one row per (endpoint, concurrency); asserts nothing.

    python bench/http_load.py [--requests 600] [--concurrency 1,4,16,64]
        [--endpoints floor,status,node_state,config]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import trio
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarm_server import LocalServer, node_names, sample, self_cpu

from pushjobs.protocol.chef_auth import sign_request
from pushjobs.protocol.keys import load_private_key

FLOOR_BODY = b'{"status":"ok"}\n'


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass
class Endpoint:
    host: str
    port: int
    request: bytes
    pid: int | None  # the serving process, for its CPU


async def run(args: argparse.Namespace, target, floor_url: str | None, floor_pid: int) -> None:
    admin_key = load_private_key(target.admin_key_pem)
    node_key = load_private_key(target.node_key_pem)
    node = "load-00000"
    org_path = f"/organizations/{target.org}/pushy"

    def signed(path: str, user: str, key) -> dict[str, str]:
        headers = sign_request(method="GET", path=path, body=b"", user_id=user, private_key=key)
        return {"Accept": "application/json", **headers}

    ccpk = zmq.curve_keypair()[0].decode()
    plain = {"Accept": "application/json"}
    paths = {
        "floor": ("/pushy/_status", plain, None),
        "status": ("/pushy/_status", plain, None),
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
    floor: dict[int, float] = {}
    print(f"{'endpoint':<11} {'conc':>4} {'req/s':>7} {'x floor':>7} {'p50 ms':>7} "
          f"{'p90 ms':>7} {'p99 ms':>7} {'server CPU':>10} {'client CPU':>10}")  # fmt: skip
    for name in args.endpoints.split(","):
        url, pid = (floor_url, floor_pid) if name == "floor" else (target.http_url, target.pid)
        if url is None:
            continue
        path, headers, params = paths[name]
        if params:
            path += "?" + urlencode(params)
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        endpoint = Endpoint(host, int(port), _request_bytes(path, host, int(port), headers), pid)
        for conc in levels:
            rate = await _row(name, endpoint, conc, args.requests, floor.get(conc))
            if name == "floor":
                floor[conc] = rate


ROWS: list[dict[str, Any]] = []  # every printed row, for --json


async def _row(
    name: str, endpoint: Endpoint, conc: int, requests: int, floor: float | None
) -> float:
    """Load `endpoint` with `conc` connections for `requests` requests; print a row."""
    latencies: list[float] = []
    failures = [0]
    remaining = iter(range(requests))
    before, client_before = sample(endpoint.pid), self_cpu()
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(conc):
            nursery.start_soon(_worker, endpoint, remaining, latencies, failures)
    elapsed = time.perf_counter() - t0
    after, client_cpu = sample(endpoint.pid), self_cpu() - client_before
    latencies.sort()
    cpu = ""
    if before and after:
        cpu = f"{100 * (after.cpu - before.cpu) / (after.wall - before.wall):.0f}%"
    note = f"  ({failures[0]} failed)" if failures[0] else ""
    rate = len(latencies) / elapsed
    ratio = f"{rate / floor:.2f}" if floor else ""
    print(
        f"{name:<11} {conc:>4} {rate:>7.0f} {ratio:>7} "
        f"{1000 * percentile(latencies, 0.5):>7.1f} "
        f"{1000 * percentile(latencies, 0.9):>7.1f} "
        f"{1000 * percentile(latencies, 0.99):>7.1f} {cpu:>10} "
        f"{100 * client_cpu / elapsed:>9.0f}%{note}",
        flush=True,
    )
    ROWS.append(
        {
            "endpoint": name,
            "concurrency": conc,
            "rate": round(rate, 1),
            "x_floor": round(rate / floor, 3) if floor else None,
            "p50_ms": round(1000 * percentile(latencies, 0.5), 2),
            "failures": failures[0],
        }
    )
    return rate


def _request_bytes(path: str, host: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _worker(
    endpoint: Endpoint,
    remaining: Iterator[int],
    latencies: list[float],
    failures: list[int],
) -> None:
    """One keep-alive connection sending the request until `remaining` runs out; a new
    connection when the server answers `Connection: close`.

    A minimal HTTP/1.1 client (Content-Length bodies only) so that the client's own CPU stays
    small next to the server's: httpx costs several times more per request.
    """
    stream: trio.SocketStream | None = None
    buffer = b""
    try:
        for _ in remaining:
            if stream is None:
                stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
                buffer = b""
            t0 = time.perf_counter()
            await stream.send_all(endpoint.request)
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"connection" and value.strip().lower() == b"close":
                    close = True
            while len(buffer) < length:
                buffer += await stream.receive_some(65536)
            buffer = buffer[length:]
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                failures[0] += 1
            if close:
                await stream.aclose()
                stream = None
    finally:
        if stream is not None:
            await stream.aclose()


# ---- hypercorn's floor: an empty ASGI app in a process of its own ------------------------


async def _floor_app(scope, receive, send) -> None:
    """200 with a small JSON body for every request; lifespan acknowledged."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"16")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": FLOOR_BODY})


def serve_floor(config_path: str) -> int:
    """`--serve-floor CONFIG`: serve `_floor_app` with the server's hypercorn settings and
    logging (its log file gets a `.floor` suffix); print the bound URL, run until SIGTERM."""
    from hypercorn.trio import serve

    from pushjobs.server.config import load_settings
    from pushjobs.server.runtime import configure_logging, hypercorn_config

    settings = load_settings(Path(config_path))
    log_file = f"{settings.log_file}.floor" if settings.log_file else None
    configure_logging(settings.log_level, log_file)

    async def main() -> None:
        shutdown = trio.Event()
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop() -> None:
                    async for _ in signals:
                        shutdown.set()
                        return

                nursery.start_soon(stop)
                binds = await nursery.start(
                    lambda task_status: serve(
                        _floor_app,
                        hypercorn_config(settings),
                        shutdown_trigger=shutdown.wait,
                        task_status=task_status,
                    )
                )
                print(binds[0], flush=True)

    trio.run(main)
    return 0


def start_floor(config_path: Path) -> tuple[subprocess.Popen[str], str]:
    """The floor server process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-floor", str(config_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url:
        proc.wait(5)
        raise RuntimeError(f"the floor server exited with {proc.returncode}")
    return proc, url


def stop_floor(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-floor":
        return serve_floor(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="per row (default 600)")
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated levels")
    parser.add_argument(
        "--endpoints", default="floor,status,node_state,config", help="comma-separated subset"
    )
    parser.add_argument("--keep", action="store_true", help="keep the server's temp dir")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args()
    server = LocalServer(heartbeat_interval=10.0, keep_dir=args.keep)
    floor: subprocess.Popen[str] | None = None
    try:
        target = server.prepare(node_names("load-", 4))
        server.start(target)
        floor_url = None
        if "floor" in args.endpoints.split(","):
            floor, floor_url = start_floor(server.config_path)
        trio.run(run, args, target, floor_url, floor.pid if floor else 0)
    except KeyboardInterrupt:
        return 130
    finally:
        if floor is not None:
            stop_floor(floor)
        server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(ROWS, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

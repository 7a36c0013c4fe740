"""Simulated agents for the swarm benchmark: many protocol peers in one trio process.

Each node is a small slotted object with its own CURVE key pair, session key, DEALER socket and
sequence counter. One task per node drains its DEALER into a shared inbox that one handler task
works through; one task sends every node's heartbeats (spread evenly over the interval); one
shared SUB verifies and counts the server's heartbeats. A node answers `abort` with `aborted`,
`commit` with `ack_commit`, `run` with `ack_run` and then — after the simulated run time, and
after a few `output` chunks for capture jobs (3.0) — `succeeded`. Nothing here asserts:
problems are counted in `SwarmStats` and printed by the caller.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
import zmq

from pushjobs.protocol.chef_auth import sign_request
from pushjobs.protocol.envelope import (
    open_envelope,
    seal_hmac,
    verify_envelope_hmac,
    verify_envelope_rsa,
)
from pushjobs.protocol.errors import ProtocolError
from pushjobs.protocol.keys import decrypt_session_key, load_private_key, load_public_key
from pushjobs.protocol.limits import AGENT_BODY_LIMIT
from pushjobs.protocol.signing import HMAC_SHA256, RSA2048_SHA1
from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.server.zeromq.trio_socket import TrioSocket

MAX_BODY = AGENT_BODY_LIMIT
DISPATCH_SLICE = 64  # inbound messages handled between two yields to the scheduler


class SignedHttp:
    """Chef-signed (1.3) requests over one shared `httpx.AsyncClient`."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, org: str, user: str, key: Any):
        self.client = client
        self.base_url = base_url
        self.org = org
        self.user = user
        self.key = key

    def path(self, rel: str) -> str:
        return f"/organizations/{self.org}/pushy/{rel}"

    def headers(self, method: str, path: str, body: bytes, user: str, key: Any) -> dict[str, str]:
        signed = sign_request(method=method, path=path, body=body, user_id=user, private_key=key)
        return {"Accept": "application/json", **signed}

    async def request(
        self,
        method: str,
        rel: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        user: str | None = None,
        key: Any = None,
    ) -> httpx.Response:
        path = self.path(rel)
        raw = json.dumps(body).encode() if body is not None else b""
        headers = self.headers(method, path, raw, user or self.user, key or self.key)
        if body is not None:
            headers["Content-Type"] = "application/json"
        return await self.client.request(
            method, self.base_url + path, params=params, content=raw, headers=headers
        )

    async def feed(self, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The job's SSE feed as (event name, data) pairs, until the server ends it."""
        path = self.path(f"job_status_feed/{job_id}")
        headers = self.headers("GET", path, b"", self.user, self.key)
        headers["Accept"] = "text/event-stream"
        async with self.client.stream(
            "GET", self.base_url + path, headers=headers, timeout=None
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"job feed: {response.status_code} {response.text}")
            name, data = "", ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif not line and name:
                    yield name, json.loads(data) if data else {}
                    name, data = "", ""


@dataclass
class SwarmStats:
    sent: Counter = field(default_factory=Counter)
    received: Counter = field(default_factory=Counter)
    send_failures: int = 0
    errors: Counter = field(default_factory=Counter)
    server_heartbeats: int = 0
    config_failures: int = 0
    config_requests: int = 0  # every `GET config/NODE` sent, retries included
    reconfigures: int = 0  # nodes that reconfigured after a server restart
    restart_seen_at: float | None = None  # trio time the new incarnation's first heartbeat came
    last_reconfigured_at: float | None = None
    # Stall detectors, reset per phase by the caller: how late this process's heartbeat
    # sends ran (our own event loop busy), and the longest gap between server heartbeats
    # (the server's event loop busy, or the PUB path slow).
    send_lag_max: float = 0.0
    server_gap_max: float = 0.0
    # Round trips of the probe node (heartbeat naming an unknown job → `abort`): how long the
    # server takes to get to an inbound message, backlog included.
    probe_rtts: list[float] = field(default_factory=list)

    def reset_stalls(self) -> None:
        self.send_lag_max = 0.0
        self.server_gap_max = 0.0
        self.probe_rtts = []


class SimNode:
    """One simulated agent: keys, socket, counters and what it is doing."""

    __slots__ = (
        "capture",
        "curve_public",
        "curve_secret",
        "incarnation",
        "job_id",
        "job_state",
        "name",
        "probe_sent",
        "sequence",
        "session_key",
        "sock",
        "version",
    )

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        public, secret = zmq.curve_keypair()
        self.curve_public = public
        self.curve_secret = secret
        self.incarnation = str(uuid.uuid4())
        self.session_key: bytes = b""
        self.sock: TrioSocket | None = None
        self.sequence = 0
        self.job_state = "idle"
        self.job_id: str | None = None
        self.capture = False
        self.probe_sent: float | None = None


class Swarm:
    """Many `SimNode`s driven from one trio process (see the module docstring)."""

    def __init__(
        self,
        http: SignedHttp,
        names: list[str],
        node_key_pem: bytes,
        *,
        v2_fraction: float = 0.0,
        run_time: float = 0.0,
        output_chunks: int = 2,
        chunk_bytes: int = 512,
        concurrency: int = 16,
        follow_restarts: bool = False,
    ) -> None:
        """`follow_restarts`: when the server's heartbeats name a new incarnation (a restart),
        every node behaves like a real agent (agent.md §6.2): it drops its command connection
        at once and, after a delay uniform in [0, heartbeat interval], fetches its config again
        and reconnects with a new DEALER."""
        self.http = http
        self.org = http.org
        self.node_key = load_private_key(node_key_pem)
        self.run_time = run_time
        self.output_chunks = output_chunks
        self.chunk = (b"swarm output line\n" * (chunk_bytes // 18 + 1))[:chunk_bytes]
        self.concurrency = concurrency
        self.stats = SwarmStats()
        self.ctx = zmq.Context(io_threads=1)
        # Each DEALER is a libzmq socket; the default cap is 1023 per context.
        self.ctx.set(zmq.MAX_SOCKETS, len(names) + 64)
        self.nodes = [
            SimNode(name, "2.0" if int((i + 1) * v2_fraction) > int(i * v2_fraction) else "3.0")
            for i, name in enumerate(names)
        ]
        self.connected: list[SimNode] = []
        self.probe: SimNode | None = None
        self.server_public_key: Any = None
        self.out_addr: str | None = None
        self._sub: TrioSocket | None = None
        self._nursery: trio.Nursery | None = None
        self._stamp_second = -1
        self._stamp = ""
        # Inbound messages wait here for the one handler task (see `_dispatcher`).
        self._inbox: deque[tuple[SimNode, list[bytes]]] = deque()
        self._inbox_event: trio.Event | None = None
        self.follow_restarts = follow_restarts
        self.server_incarnation: str | None = None
        self.heartbeat_interval = 1.0
        self.rng = random.Random()

    # -- connecting ---------------------------------------------------------------------------

    async def connect_all(self, nursery: trio.Nursery, heartbeat_interval: float) -> None:
        """Fetch every node's config (bounded concurrency), connect its DEALER, say hello.

        The first node connects alone (its first requests import and initialise code), then
        the heartbeat loop starts, so that one-off start-up work is not reported as a stall.
        """
        self._nursery = nursery
        self.heartbeat_interval = heartbeat_interval
        nursery.start_soon(self._dispatcher)
        pending = iter(self.nodes)

        async def worker() -> None:
            for node in pending:
                try:
                    await self._connect(node)
                except (httpx.HTTPError, ProtocolError, RuntimeError, zmq.ZMQError) as exc:
                    self.stats.config_failures += 1
                    self.stats.errors[f"connect: {type(exc).__name__}: {exc}"[:120]] += 1
                if not started:
                    return

        started = False
        await worker()
        started = True
        nursery.start_soon(self.heartbeat_loop, heartbeat_interval)
        async with trio.open_nursery() as workers:
            for _ in range(min(self.concurrency, len(self.nodes))):
                workers.start_soon(worker)

    async def connect_probe(self, name: str, period: float) -> bool:
        """Connect the probe node and start its loop; False when it cannot (not registered)."""
        assert self._nursery is not None, "connect_all first"
        probe = SimNode(name, "3.0")
        try:
            await self._connect(probe, heartbeats=False)
        except (httpx.HTTPError, ProtocolError, RuntimeError, zmq.ZMQError) as exc:
            self.stats.errors[f"probe: {exc}"[:120]] += 1
            return False
        self.probe = probe
        self._nursery.start_soon(self._probe_loop, probe, period)
        return True

    async def _probe_loop(self, probe: SimNode, period: float) -> None:
        """Every `period`, unless an answer is outstanding: a heartbeat naming an unknown job.

        The server answers it with `abort` (rehab request, lifecycle.md §2.3) as soon as it
        processes it, so the round trip is the inbound backlog plus the handling time. The
        probe's heartbeats also keep it alive.
        """
        count = 0
        while True:
            await trio.sleep(period)
            if probe.probe_sent is None:
                count += 1
                probe.probe_sent = trio.current_time()
                self.send(probe, "heartbeat", job_state="idle", job_id=f"probe-{count}")

    async def _connect(self, node: SimNode, heartbeats: bool = True) -> None:
        self.stats.config_requests += 1
        response = await self.http.request(
            "GET",
            f"config/{node.name}",
            params={"ccpk": node.curve_public.decode(), "version": node.version},
            user=node.name,
            key=self.node_key,
        )
        if response.status_code != 200:
            raise RuntimeError(f"config {response.status_code}: {response.text[:80]}")
        config = response.json()
        node.session_key = decrypt_session_key(self.node_key, config["encoded_session_key"]["key"])
        heartbeat = config["push_jobs"]["heartbeat"]
        if self._sub is None:
            self.server_public_key = load_public_key(config["public_key"])
            self.out_addr = heartbeat["out_addr"]
            sub = self.ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(self.out_addr)
            self._sub = TrioSocket(sub)
            assert self._nursery is not None
            self._nursery.start_soon(self._server_heartbeats, self._sub)
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVHWM, 0)
        server_curve = config.get("curve_public_key")
        if server_curve:
            dealer.setsockopt(zmq.CURVE_SERVERKEY, server_curve.encode("ascii"))
            dealer.setsockopt(zmq.CURVE_PUBLICKEY, node.curve_public)
            dealer.setsockopt(zmq.CURVE_SECRETKEY, node.curve_secret)
        dealer.connect(heartbeat["command_addr"])
        if node.sock is not None:  # a reconfigure: the old connection's reader ends with it
            node.sock.close()
        node.sock = TrioSocket(dealer)
        assert self._nursery is not None
        self._nursery.start_soon(self._reader, node)
        self.send(node, "heartbeat", job_state="idle")
        if heartbeats:
            self.connected.append(node)

    def close(self) -> None:
        """Close every socket and the context (after the tasks using them were cancelled)."""
        for node in [*self.nodes, *([self.probe] if self.probe else [])]:
            if node.sock is not None:
                node.sock.close()
                node.sock = None
        if self._sub is not None:
            self._sub.close()
        self.ctx.destroy(linger=0)

    # -- server restarts ----------------------------------------------------------------------

    def _on_server_incarnation(self, incarnation: str) -> None:
        """A verified server heartbeat named `incarnation`: on a change, schedule every node's
        reconfigure (the first incarnation seen is the one the nodes connected to)."""
        if incarnation == self.server_incarnation:
            return
        first = self.server_incarnation is None
        self.server_incarnation = incarnation
        if first or not self.follow_restarts or self._nursery is None:
            return
        now = trio.current_time()
        self.stats.restart_seen_at = now
        # Like the agent (agent/link.py): the old command connection is useless now (new CURVE
        # key, session keys gone); drop it instead of failing handshakes until the reconfigure.
        for node in self.connected:
            if node.sock is not None:
                node.sock.close()
                node.sock = None
        plan = [(now + self.rng.uniform(0.0, self.heartbeat_interval), n) for n in self.connected]
        plan.sort(key=lambda item: item[0])
        self._nursery.start_soon(self._reconfigure_all, plan)

    async def _reconfigure_all(self, plan: list[tuple[float, SimNode]]) -> None:
        """Start each node's reconfigure at its time; each runs on its own, as agents do."""
        async with trio.open_nursery() as nursery:
            for at, node in plan:
                await trio.sleep_until(at)
                nursery.start_soon(self._reconfigure, node)

    async def _reconfigure(self, node: SimNode) -> None:
        """Config fetch + new DEALER; a failed fetch is retried after a jittered backoff
        (full jitter over 1, 2, 4 … s, as `agent/session.py` does)."""
        for attempt in range(8):
            try:
                await self._connect(node, heartbeats=False)
            except (httpx.HTTPError, ProtocolError, RuntimeError, zmq.ZMQError) as exc:
                self.stats.errors[f"reconfigure: {type(exc).__name__}: {exc}"[:120]] += 1
                await trio.sleep(self.rng.uniform(0.0, float(2**attempt)))
                continue
            self.stats.reconfigures += 1
            self.stats.last_reconfigured_at = trio.current_time()
            return
        self.stats.config_failures += 1

    # -- sending ------------------------------------------------------------------------------

    def _timestamp(self) -> str:
        now = int(time.time())
        if now != self._stamp_second:
            self._stamp_second, self._stamp = now, format_rfc1123(now)
        return self._stamp

    def send(self, node: SimNode, msg_type: str, job_id: str | None = None, **extra: Any) -> None:
        """Seal one message for `node` (common fields of wire-protocol.md §13) and queue it."""
        if node.sock is None:
            return
        node.sequence += 1
        fields: dict[str, Any] = {
            "node": node.name,
            "client": node.name,
            "protocol_version": node.version,
            "org": self.org,
            "type": msg_type,
            "sequence": node.sequence,
            "timestamp": self._timestamp(),
            "incarnation_id": node.incarnation,
        }
        if msg_type == "heartbeat":
            fields["job_state"] = extra.pop("job_state", node.job_state)
            if job_id is None:
                job_id = node.job_id
        fields["job_id"] = job_id
        fields.update(extra)
        header, body = seal_hmac(node.version, fields, node.session_key)
        if node.sock.send_nowait([header, body]):
            self.stats.sent[msg_type] += 1
        else:
            self.stats.send_failures += 1

    async def heartbeat_loop(self, interval: float) -> None:
        """Every node heartbeats once per `interval`, the sends spread evenly over it.

        Node i sends at step i % steps of every cycle: exactly once a cycle, also the nodes
        that connect while a cycle runs (the list grows). The steps follow the clock: when this
        process was busy, the steps it missed are sent at once (each node still once a cycle),
        so a busy swarm does not stretch every node's period until the server declares it down.
        """
        steps = max(1, int(interval / 0.01))
        step_length = interval / steps
        origin = trio.current_time()
        stats = self.stats
        nodes = self.connected
        done = -1  # the last step sent, counted from `origin`
        while True:
            due = int((trio.current_time() - origin) / step_length)
            for step in range(max(done + 1, due - steps + 1), due + 1):
                for node in nodes[step % steps :: steps]:
                    self.send(node, "heartbeat")
            done = due
            wake = origin + (due + 1) * step_length
            await trio.sleep_until(wake)
            stats.send_lag_max = max(stats.send_lag_max, trio.current_time() - wake)

    # -- receiving ----------------------------------------------------------------------------

    async def _server_heartbeats(self, sub: TrioSocket) -> None:
        last: float | None = None
        while True:
            try:
                batch = await sub.recv_batch()
            except (trio.ClosedResourceError, zmq.ZMQError):
                return
            for frames in batch:
                try:
                    env = open_envelope(frames[0], frames[1], MAX_BODY, RSA2048_SHA1)
                    if not verify_envelope_rsa(env, self.server_public_key):
                        raise ProtocolError("bad signature")
                except (ProtocolError, IndexError) as exc:
                    self.stats.errors[f"server heartbeat: {exc}"[:120]] += 1
                    continue
                self.stats.server_heartbeats += 1
                incarnation = env.fields.get("incarnation_id")
                if isinstance(incarnation, str):
                    self._on_server_incarnation(incarnation)
                now = trio.current_time()
                if last is not None:
                    self.stats.server_gap_max = max(self.stats.server_gap_max, now - last)
                last = now

    async def _reader(self, node: SimNode) -> None:
        """Move the node's inbound messages to the shared inbox (handled by `_dispatcher`)."""
        sock = node.sock
        assert sock is not None
        inbox = self._inbox
        raw = sock.sock
        # Drain by `zmq.EVENTS` rather than `TrioSocket.recv_batch`: no `Again` exception and no
        # extra scheduler round per message, which matters with thousands of readers.
        try:
            while True:
                await sock.wait_readable()
                while raw.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    inbox.append((node, raw.recv_multipart(zmq.NOBLOCK)))
                if self._inbox_event is not None:
                    self._inbox_event.set()
        except (trio.ClosedResourceError, zmq.ZMQError):
            return

    async def _dispatcher(self) -> None:
        """Handle inbound messages in slices of `DISPATCH_SLICE`, yielding between slices.

        When a job reaches thousands of nodes at once, handling every reply in its reader task
        would make one trio scheduling batch of thousands of handlers, and the heartbeat task
        would wait behind all of them — a stall real agents (separate processes) never have.
        """
        inbox = self._inbox
        while True:
            if not inbox:
                self._inbox_event = trio.Event()
                await self._inbox_event.wait()
                self._inbox_event = None
            for _ in range(min(len(inbox), DISPATCH_SLICE)):
                node, frames = inbox.popleft()
                self._handle(node, frames)
            await trio.lowlevel.checkpoint()

    def _handle(self, node: SimNode, frames: list[bytes]) -> None:
        try:
            if len(frames) != 2:
                raise ProtocolError(f"{len(frames)} frames")
            env = open_envelope(frames[0], frames[1], MAX_BODY, HMAC_SHA256)
            if not verify_envelope_hmac(env, node.session_key):
                raise ProtocolError("bad HMAC")
        except ProtocolError as exc:
            self.stats.errors[f"command: {exc}"[:120]] += 1
            return
        fields = env.fields
        msg_type = fields.get("type")
        self.stats.received[msg_type] += 1
        if msg_type == "abort":
            if node.probe_sent is not None:
                self.stats.probe_rtts.append(trio.current_time() - node.probe_sent)
                node.probe_sent = None
            job_id = node.job_id
            node.job_state, node.job_id = "idle", None
            self.send(node, "aborted", job_id)
        elif msg_type == "commit":
            if node.job_id is not None:
                self.send(node, "nack_commit", fields.get("job_id"))
                return
            node.job_id = fields.get("job_id")
            node.job_state = "committed"
            node.capture = bool(fields.get("capture"))
            self.send(node, "ack_commit", node.job_id)
        elif msg_type == "run":
            job_id = fields.get("job_id")
            if job_id != node.job_id or node.job_state != "committed":
                self.send(node, "nack_run", job_id)
                return
            node.job_state = "running"
            self.send(node, "ack_run", job_id)
            if self.run_time > 0 and self._nursery is not None:
                self._nursery.start_soon(self._finish_later, node, job_id)
            else:
                self._finish(node, job_id)
        elif msg_type != "ack":
            self.stats.errors[f"unexpected {msg_type!r}"] += 1

    async def _finish_later(self, node: SimNode, job_id: str) -> None:
        await trio.sleep(self.run_time)
        self._finish(node, job_id)

    def _finish(self, node: SimNode, job_id: str) -> None:
        """Output chunks (3.0 capture jobs), then `succeeded`; nothing if the job was aborted."""
        if node.job_id != job_id or node.job_state != "running":
            return
        extra: dict[str, Any] = {}
        if node.version == "3.0":
            total = 0
            if node.capture:
                for _ in range(self.output_chunks):
                    self.send(
                        node, "output", job_id, channel="stdout", offset=total, data=self.chunk
                    )
                    total += len(self.chunk)
            extra = {"exit_status": 0, "signal": None}
            if node.capture:
                extra.update(stdout_bytes=total, stderr_bytes=0)
        elif node.capture:
            extra = {"stdout": self.chunk.decode() * self.output_chunks, "stderr": ""}
        node.job_state, node.job_id = "idle", None
        self.send(node, "succeeded", job_id, **extra)

"""The server's ZeroMQ side: ZAP, command ROUTER, heartbeat publisher and their timers.

The broker is the I/O shell around `inbound.py`: it reads messages, has `Inbound` validate them
(wire-protocol.md §16 steps 1–10; each failure drops the message with one rate-limited log line
naming the reason), binds the accepted ones to their node state (step 11, `nodes.accept`) and
dispatches them by type (step 12) to the node registry and the job engine. The hot path does no
database round trip: organizations are cached, and the look-ups the cache asks for run as
background tasks while their messages wait.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio
import zmq

from pushjobs.protocol.envelope import seal_heartbeat
from pushjobs.protocol.limits import JOB_ID_LIMIT
from pushjobs.protocol.log_throttle import LogThrottle
from pushjobs.protocol.messages import AgentMessage
from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.protocol.vocabulary import MessageType
from pushjobs.server.zeromq.heartbeat_pub import HeartbeatPublisher
from pushjobs.server.zeromq.inbound import (
    INTERNAL_ERROR,
    Accepted,
    Drop,
    Inbound,
    SessionKeyLookup,
)
from pushjobs.server.zeromq.trio_socket import DEFAULT_BATCH, TrioSocket
from pushjobs.server.zeromq.zap import CurveAllowList, ZapHandler

if TYPE_CHECKING:
    from collections.abc import Hashable

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from pushjobs.server.config import Settings

log = logging.getLogger(__name__)

ZAP_DOMAIN = b"pushjobs"
ROUTER_BACKLOG = 4096
SWEEP_INTERVAL = 5.0
BACKLOG_RECHECK = 0.05  # seconds between checks while a liveness scan waits for the reader
# The quiet-read pause (zeromq.idle_read_interval) applies only this long after the last
# command sent: answers to a command are read as they arrive.
EAGER_AFTER_SEND = 1.0
DROP_LOG_INTERVAL = 10.0
# Extra heartbeats this long after start (s), so restarted-server detection takes no interval.
STARTUP_HEARTBEATS = (0.5, 1.5)
_HEARTBEAT = MessageType.HEARTBEAT  # an enum attribute look-up costs ~0.1 µs on the hot path


# -- what the broker needs of its collaborators ---------------------------------------------------


class Sessions(SessionKeyLookup, CurveAllowList, Protocol):
    """The session keys (validation), the CURVE allow-list (ZAP) and its expiry."""

    def sweep(self, now: float) -> int: ...


class Nodes(Protocol):
    """The node registry: node state for accepted messages, its timers, the command sender."""

    @property
    def rehab_interval(self) -> float: ...
    @property
    def scan_interval(self) -> float: ...
    def attach(self, send: Callable[[Sequence[bytes]], object]) -> None: ...
    def detach(self) -> None: ...
    def accept(
        self,
        org: str,
        node: str,
        incarnation_id: str,
        routing_id: bytes,
        version: str,
        now: float,
        latest: bool = True,
    ) -> tuple[object, bool]: ...
    def heartbeat(self, org: str, node: str, now: float, *, judge: bool) -> None: ...
    def set_labels(self, org: str, node: str, labels: dict[str, str]) -> None: ...
    def aborted(self, org: str, node: str) -> None: ...
    def rehab(self, org: str, node: str, now: float) -> None: ...
    def tick_rehab(self, now: float) -> None: ...
    def scan(self, now: float) -> int: ...


class JobEngine(Protocol):
    """The job manager, as step 12 dispatches to it."""

    def is_live_member(self, org: str, node: str, job_id: str) -> bool: ...
    def on_job_message(self, org: str, node: str, msg: AgentMessage, version: str) -> bool: ...
    def on_aborted(self, org: str, node: str, msg: AgentMessage) -> None: ...
    def on_output(self, org: str, node: str, msg: AgentMessage) -> None: ...


class OrgDirectory(Protocol):
    """The principal backend, as far as step 7 asks it: does this organization exist."""

    async def org(self, name: str) -> object | None: ...


# -- the broker -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BoundPorts:
    """The TCP ports the broker bound (reported by `Broker.run` once it listens)."""

    heartbeat_port: int
    command_port: int


@dataclass(slots=True)
class BrokerStats:
    """Counters for `/pushy/_status`-style introspection, the benchmark and the metrics.

    Plain ints and dicts of ints: the hot path only adds to them; the metrics collector
    reads them at scrape time.
    """

    received: int = 0
    accepted: int = 0
    dropped: int = 0
    heartbeats_sent: int = 0
    # Accepted messages other than heartbeats: with usable content by type (only known types
    # get here), and those whose content was dropped. Heartbeats, the bulk, are not counted
    # again: they are `accepted` minus these (`received_counts`).
    received_by_type: dict[str, int] = field(default_factory=dict)
    accepted_unusable: int = 0
    dropped_by_kind: dict[str, int] = field(default_factory=dict)  # by `inbound.DROP_KINDS`

    def received_counts(self) -> dict[str, int]:
        """Accepted messages with usable content by type, heartbeats included."""
        counts = dict(self.received_by_type)
        others = sum(counts.values()) + self.accepted_unusable
        counts[_HEARTBEAT.value] = self.accepted - others
        return counts


def bound_port(sock: zmq.Socket[bytes]) -> int:
    """The TCP port a socket is bound to, from `LAST_ENDPOINT` (e.g. `tcp://0.0.0.0:40123`)."""
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return int(endpoint.rsplit(":", 1)[1])


def _endpoint(listen: str, port: int) -> str:
    return f"{listen}:{port if port else '*'}"


class Broker:
    """ZAP handler, ROUTER (commands, CURVE), heartbeat publisher, reader and timers."""

    def __init__(
        self,
        *,
        settings: Settings,
        curve_secret: str | None,
        server_key: RSAPrivateKey,
        incarnation_id: str,
        sessions: Sessions,
        nodes: Nodes,
        jobs: JobEngine,
        orgs: OrgDirectory,
    ) -> None:
        self.curve = not settings.zeromq.disable_curve_encryption
        if self.curve and curve_secret is None:
            raise ValueError("CURVE is enabled: the broker needs the command socket's secret key")
        self._settings = settings
        self._curve_secret = curve_secret if self.curve else None
        self._server_key = server_key
        self._incarnation_id = incarnation_id
        self._sessions = sessions
        self._nodes = nodes
        self._jobs = jobs
        self._orgs = orgs
        self.max_body = int(settings.limits.max_body_size)
        self.heartbeat_interval = float(settings.timing.heartbeat_interval)
        self.host_name = socket.gethostname()
        self.stats = BrokerStats()
        self._inbound = Inbound(
            sessions=sessions,
            curve=self.curve,
            max_body=self.max_body,
            max_skew=float(settings.timing.max_message_skew),
        )
        self._backlogged = False
        # At most a tenth of the heartbeat interval: a pause never shows in liveness.
        self._idle_read_interval = min(
            float(settings.zeromq.idle_read_interval), self.heartbeat_interval / 10
        )
        self._drop_log: LogThrottle[Hashable] = LogThrottle(DROP_LOG_INTERVAL)
        self._error_log: LogThrottle[None] = LogThrottle(DROP_LOG_INTERVAL)

    # -- lifecycle ----------

    async def run(
        self, *, task_status: trio.TaskStatus[BoundPorts] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind ZAP, ROUTER and the heartbeat port, report the ports, run readers and timers."""
        zsettings = self._settings.zeromq
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        zap: ZapHandler | None = None
        router: TrioSocket | None = None
        pub: HeartbeatPublisher | None = None
        try:
            async with trio.open_nursery() as nursery:
                if self.curve:
                    zap = ZapHandler(ctx, self._sessions)
                    nursery.start_soon(zap.serve)
                    await trio.lowlevel.checkpoint()  # the handler answers before ROUTER binds
                router = TrioSocket(self._router_socket(ctx))
                router.sock.bind(_endpoint(zsettings.listen, zsettings.command_port))
                command_port = bound_port(router.sock)
                pub = HeartbeatPublisher(ctx, _endpoint(zsettings.listen, zsettings.heartbeat_port))
                ports = BoundPorts(heartbeat_port=pub.port, command_port=command_port)
                self._nodes.attach(router.send_nowait)
                nursery.start_soon(self._reader, router, nursery)
                nursery.start_soon(pub.serve)
                nursery.start_soon(self._heartbeater, pub)
                nursery.start_soon(self._rehab_timer)
                nursery.start_soon(self._liveness_scanner)
                nursery.start_soon(self._sweeper)
                log.debug(
                    "broker bound: command port %d, heartbeat port %d",
                    ports.command_port,
                    ports.heartbeat_port,
                )
                task_status.started(ports)
        finally:
            self._nodes.detach()
            for sock in (router, pub):
                if sock is not None:
                    sock.close()
            if zap is not None:
                zap.close()
            ctx.destroy(linger=0)

    def _router_socket(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.BACKLOG, ROUTER_BACKLOG)
        # A frame far beyond the body limit would only be dropped: refuse it at the transport
        # (the peer is disconnected) instead of buffering it.
        sock.setsockopt(zmq.MAXMSGSIZE, max(1 << 20, 4 * self.max_body))
        if self._curve_secret is not None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._curve_secret.encode("ascii"))
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        return sock

    # -- timers ----------

    async def _heartbeater(self, pub: HeartbeatPublisher) -> None:
        """Signed 2.0 heartbeats to every subscriber every `heartbeat_interval`, from 0.

        Right after start, extra heartbeats at `STARTUP_HEARTBEATS`: subscribers that were
        connected to the previous incarnation reconnect within a few hundred milliseconds and
        would otherwise learn of the restart only a whole interval later (wire-protocol.md §7).
        """
        interval = self.heartbeat_interval
        sequence = 0
        start = trio.current_time()
        extra = [start + offset for offset in STARTUP_HEARTBEATS if offset < interval]
        deadline = start
        while True:
            # Chef Push Jobs' field order (as `ServerHeartbeat.to_dict`).
            fields = {
                "sequence": sequence,
                "timestamp": format_rfc1123(time.time()),
                "server": self.host_name,
                "type": MessageType.HEARTBEAT.value,
                "incarnation_id": self._incarnation_id,
            }
            header, body = seal_heartbeat(fields, self._server_key)
            pub.publish([header, body])
            self.stats.heartbeats_sent += 1
            sequence += 1
            if extra:
                await trio.sleep_until(extra.pop(0))
                continue
            deadline += interval
            now = trio.current_time()
            if deadline < now:  # fell behind (suspended process): do not burst
                deadline = now + interval
            await trio.sleep_until(deadline)

    async def _rehab_timer(self) -> None:
        nodes = self._nodes
        period = max(nodes.rehab_interval / 4, 0.01)
        while True:
            await trio.sleep(period)
            nodes.tick_rehab(time.monotonic())

    async def _liveness_scanner(self) -> None:
        nodes = self._nodes
        while True:
            await trio.sleep(nodes.scan_interval)
            # While the reader works through a backlog, heartbeats that already arrived are
            # still queued uncounted; scanning now would declare live nodes down. Wait for it
            # to catch up, but never longer than one more scan interval.
            deferred = 0.0
            while self._backlogged and deferred < nodes.scan_interval:
                await trio.sleep(BACKLOG_RECHECK)
                deferred += BACKLOG_RECHECK
            if deferred:
                log.debug("liveness scan deferred %.2fs: inbound backlog", deferred)
            nodes.scan(time.monotonic())

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            swept = self._sessions.sweep(now)
            if swept:
                log.debug("expired %d CURVE allow-list entries", swept)
            self._inbound.orgs.prune(now)

    # -- inbound ----------

    async def _reader(self, router: TrioSocket, nursery: trio.Nursery) -> None:
        handle = self._handle
        orgs = self._inbound.orgs
        pause = self._idle_read_interval
        while True:
            batch = await router.recv_batch(copy=False)
            # A full batch means more messages were waiting (see `_liveness_scanner`).
            self._backlogged = len(batch) >= DEFAULT_BATCH
            for frames in batch:
                try:
                    handle(frames)
                except Exception:
                    self._internal_error()
            # Started after the batch: they run at the reader's next checkpoint either way.
            for org in orgs.take_lookups():
                nursery.start_soon(self._org_lookup, org)
            if pause and not self._backlogged:
                # Drained, and no command out: only heartbeats are expected. Reading them in
                # batches costs a fraction of waking up for each (see configuration.md).
                await router.pause_while_quiet(pause, EAGER_AFTER_SEND)

    def _handle(self, frames: Sequence[zmq.Frame]) -> None:
        """Validate and process one message (never blocks: see `OrgCache`)."""
        self.stats.received += 1
        now = time.monotonic()
        user_id = _user_id(frames) if self.curve else None
        outcome = self._inbound.check([f.bytes for f in frames], user_id, now, time.time())
        if isinstance(outcome, Accepted):
            self._dispatch(outcome, now)
        elif isinstance(outcome, Drop):
            self._drop(outcome, now)
        # else: waiting for its organization's look-up (`_org_lookup` goes on with it)

    async def _org_lookup(self, org: str) -> None:
        """Ask the principal backend whether `org` exists, then go on with its parked messages."""
        exists: bool | None
        try:
            exists = await self._orgs.org(org) is not None
        except Exception as exc:
            log.warning("cannot look up organization %r: %s", org, exc)
            exists = None  # not cached: a later message asks again
        inbound = self._inbound
        for waiting in inbound.orgs.resolve(org, exists, time.monotonic()):
            try:
                outcome = inbound.resume(waiting, exists, time.time())
                if isinstance(outcome, Accepted):
                    self._dispatch(outcome, waiting.received)
                else:
                    self._drop(outcome, waiting.received)
            except Exception:
                self._internal_error()

    def _dispatch(self, msg: Accepted, now: float) -> None:
        """Steps 11 and 12 for a message that passed validation."""
        self.stats.accepted += 1
        org, node, job_id, parsed = msg.org, msg.node, msg.job_id, msg.message
        nodes = self._nodes
        jobs = self._jobs
        # Step 11: node state.
        _, created = nodes.accept(
            org, node, msg.incarnation_id, msg.routing_id, msg.version, now, msg.latest
        )
        # Step 12: dispatch.
        if msg.type == _HEARTBEAT:
            if not created:
                nodes.heartbeat(org, node, now, judge=not self._backlogged)
            if msg.labels is not None:
                nodes.set_labels(org, node, msg.labels)
            elif msg.problem is not None:
                self._drop(msg.problem, now)
            if job_id is not None and (
                len(job_id) > JOB_ID_LIMIT or not jobs.is_live_member(org, node, job_id)
            ):
                nodes.rehab(org, node, now)
            return
        # Not a heartbeat (rare): counted by type here, heartbeats cost nothing extra.
        stats = self.stats
        if msg.problem is None:
            stats.received_by_type[msg.type] = stats.received_by_type.get(msg.type, 0) + 1
        else:
            stats.accepted_unusable += 1
        if msg.type == MessageType.ABORTED:
            nodes.aborted(org, node)
            if msg.problem is not None:
                self._drop(msg.problem, now)
            elif parsed is not None:
                jobs.on_aborted(org, node, parsed)
        elif msg.problem is not None:
            self._drop(msg.problem, now)
        elif parsed is not None:
            if msg.type == MessageType.OUTPUT:
                jobs.on_output(org, node, parsed)
            elif not jobs.on_job_message(org, node, parsed, msg.version):
                nodes.rehab(org, node, now)

    def _drop(self, drop: Drop, now: float) -> None:
        """One log line per sender per `DROP_LOG_INTERVAL`, with the count of those held back."""
        stats = self.stats
        stats.dropped += 1
        by_kind = stats.dropped_by_kind
        by_kind[drop.kind] = by_kind.get(drop.kind, 0) + 1
        verdict = self._drop_log.hit(drop.key, now)
        if not verdict.log:
            return
        if verdict.suppressed:
            log.warning(
                "dropped message from %s: %s (%d more dropped)",
                drop.sender,
                drop.reason,
                verdict.suppressed,
            )
        else:
            log.warning("dropped message from %s: %s", drop.sender, drop.reason)

    def _internal_error(self) -> None:
        """Log a bug hit by a message with its traceback, at most once per interval."""
        stats = self.stats
        stats.dropped += 1
        stats.dropped_by_kind[INTERNAL_ERROR] = stats.dropped_by_kind.get(INTERNAL_ERROR, 0) + 1
        verdict = self._error_log.hit(None, time.monotonic())
        if verdict.log:
            log.exception(
                "unexpected error handling a command-channel message (%d more not shown)",
                verdict.suppressed,
            )


def _user_id(frames: Sequence[zmq.Frame]) -> str | None:
    """The CURVE binding ZAP gave the message's connection (`<org>/<node>`), if any."""
    if not frames:
        return None
    try:
        user_id = frames[-1].get("User-Id")
    except zmq.ZMQError:
        return None
    return user_id if isinstance(user_id, str) else None

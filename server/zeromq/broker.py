"""The server's ZeroMQ side: ZAP, command ROUTER, heartbeat publisher and their timers.

Inbound messages are validated in the order of wire-protocol.md §16 — each failure drops the
message with one rate-limited log line naming the reason — then bound to their node state
(step 11, `NodeRegistry.accept`) and dispatched by type (step 12) to the registry and the job
manager. The hot path does no database round trip (organizations are cached) and builds no
message objects for heartbeats.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio
import zmq

from pushjobs.protocol.envelope import open_envelope, seal_heartbeat
from pushjobs.protocol.errors import BodyError, HeaderError, MessageError, ProtocolError
from pushjobs.protocol.messages import parse_agent_message
from pushjobs.protocol.signing import HMAC_SHA256, verify_hmac
from pushjobs.protocol.timestamps import format_rfc1123, parse_rfc1123
from pushjobs.server.lru import LruCache
from pushjobs.server.zeromq.heartbeat_pub import HeartbeatPublisher
from pushjobs.server.zeromq.sequence_guard import SequenceGuard
from pushjobs.server.zeromq.trio_socket import DEFAULT_BATCH, TrioSocket
from pushjobs.server.zeromq.zap import ZapHandler

log = logging.getLogger(__name__)

ZAP_DOMAIN = b"pushjobs"
ROUTER_BACKLOG = 4096
JOB_ID_LIMIT = 64
SWEEP_INTERVAL = 5.0
BACKLOG_RECHECK = 0.05  # seconds between checks while a liveness scan waits for the reader
ORG_TTL = 30.0  # an existing organization is re-checked after this long
ORG_NEGATIVE_TTL = 5.0  # an unknown name is re-checked sooner (it may just have been created)
ORG_CACHE_MAX = 10_000
MAX_ORG_LOOKUPS = 256  # organizations being looked up at once (their messages are parked)
MAX_PARKED = 10_000  # messages parked for all of them together
DROP_LOG_INTERVAL = 10.0
DROP_LOG_KEYS_MAX = 10_000

JOB_MESSAGES = frozenset(
    {"ack_commit", "nack_commit", "ack_run", "nack_run", "succeeded", "failed"}
)
_REQUIRED_STRINGS = ("node", "org", "type", "timestamp", "incarnation_id")


@dataclass(slots=True)
class BrokerStats:
    """Counters for `/pushy/_status`-style introspection and the benchmark."""

    received: int = 0
    accepted: int = 0
    dropped: int = 0
    heartbeats_sent: int = 0


class DropLog:
    """One log line per key per `interval` seconds, with a count of the lines suppressed."""

    def __init__(self, interval: float = DROP_LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[Any, tuple[float, int]] = {}

    def drop(self, key: Any, where: str, reason: str, now: float) -> None:
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            self._last[key] = (entry[0], entry[1] + 1)
            return
        if len(self._last) >= DROP_LOG_KEYS_MAX:
            self._last.clear()
        suppressed = entry[1] if entry is not None else 0
        self._last[key] = (now, 0)
        if suppressed:
            log.warning("dropped message from %s: %s (%d more dropped)", where, reason, suppressed)
        else:
            log.warning("dropped message from %s: %s", where, reason)


def bound_port(sock: zmq.Socket) -> int:
    """The TCP port a socket is bound to, from `LAST_ENDPOINT` (e.g. `tcp://0.0.0.0:40123`)."""
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    return int(endpoint.rsplit(":", 1)[1])


def _endpoint(listen: str, port: int) -> str:
    return f"{listen}:{port if port else '*'}"


class Broker:
    """ZAP handler, ROUTER (commands, CURVE), heartbeat publisher, reader and timers."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        settings = rt.settings
        self.curve = not settings.zeromq.disable_curve_encryption
        if self.curve and rt.curve_public is None:
            if not zmq.has("curve"):
                from pushjobs.server.runtime import StartupError

                raise StartupError(
                    "this libzmq has no CURVE support; install one that has, or set "
                    "zeromq.disable_curve_encryption = true"
                )
            public, secret = zmq.curve_keypair()
            rt.curve_public = public.decode("ascii")
            rt.curve_secret = secret.decode("ascii")
        self.max_body = int(settings.limits.max_body_size)
        self.max_skew = float(settings.timing.max_message_skew)
        self.heartbeat_interval = float(settings.timing.heartbeat_interval)
        self.host_name = socket.gethostname()
        self.stats = BrokerStats()
        self._backlogged = False
        self._drops = DropLog()
        self._orgs: LruCache[str, tuple[bool, float]] = LruCache(ORG_CACHE_MAX)  # (exists, expiry)
        self._parked: dict[str, list[tuple]] = {}  # messages waiting for an org look-up
        self._parked_count = 0
        self._looking_up: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._sequences = SequenceGuard()  # 3.0 replay protection
        self._ts_text = ""
        self._ts_value = 0.0
        self._last_error_log = float("-inf")
        self._errors_suppressed = 0
        self.router: TrioSocket | None = None
        self.pub: HeartbeatPublisher | None = None

    # -- lifecycle ----------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind ZAP, ROUTER and the heartbeat port, report started, then run readers and timers."""
        rt = self.rt
        zsettings = rt.settings.zeromq
        ctx = zmq.Context()
        zap: ZapHandler | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.curve:
                    zap = ZapHandler(ctx, rt.sessions)
                    nursery.start_soon(zap.serve)
                    await trio.lowlevel.checkpoint()  # the handler answers before ROUTER binds
                self.router = TrioSocket(self._router_socket(ctx))
                self.router.sock.bind(_endpoint(zsettings.listen, zsettings.command_port))
                rt.command_port = bound_port(self.router.sock)
                self.pub = HeartbeatPublisher(
                    ctx, _endpoint(zsettings.listen, zsettings.heartbeat_port)
                )
                rt.heartbeat_port = self.pub.port
                rt.nodes.attach(self.router.send_nowait)
                nursery.start_soon(self._reader, self.router)
                nursery.start_soon(self.pub.serve)
                nursery.start_soon(self._heartbeater, self.pub)
                nursery.start_soon(self._rehab_timer)
                nursery.start_soon(self._liveness_scanner)
                nursery.start_soon(self._sweeper)
                log.debug(
                    "broker bound: command port %d, heartbeat port %d",
                    rt.command_port,
                    rt.heartbeat_port,
                )
                task_status.started()
        finally:
            self._nursery = None
            rt.nodes.detach()
            for sock in (self.router, self.pub):
                if sock is not None:
                    sock.close()
            if zap is not None:
                zap.close()
            ctx.destroy(linger=0)

    def _router_socket(self, ctx: zmq.Context) -> zmq.Socket:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.BACKLOG, ROUTER_BACKLOG)
        # A frame far beyond the body limit would only be dropped: refuse it at the transport
        # (the peer is disconnected) instead of buffering it.
        sock.setsockopt(zmq.MAXMSGSIZE, max(1 << 20, 4 * self.max_body))
        if self.curve:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.rt.curve_secret.encode("ascii"))
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        return sock

    # -- timers ----------

    async def _heartbeater(self, pub: HeartbeatPublisher) -> None:
        """Signed 2.0 heartbeats to every subscriber every `heartbeat_interval`, from 0."""
        rt = self.rt
        interval = self.heartbeat_interval
        sequence = 0
        deadline = trio.current_time()
        while True:
            # Chef Push Jobs' field order (as `ServerHeartbeat.to_dict`).
            fields = {
                "sequence": sequence,
                "timestamp": format_rfc1123(time.time()),
                "server": self.host_name,
                "type": "heartbeat",
                "incarnation_id": rt.incarnation_id,
            }
            header, body = seal_heartbeat(fields, rt.server_key)
            pub.publish([header, body])
            self.stats.heartbeats_sent += 1
            sequence += 1
            deadline += interval
            now = trio.current_time()
            if deadline < now:  # fell behind (suspended process): do not burst
                deadline = now + interval
            await trio.sleep_until(deadline)

    async def _rehab_timer(self) -> None:
        nodes = self.rt.nodes
        period = max(nodes.rehab_interval / 4, 0.01)
        while True:
            await trio.sleep(period)
            nodes.tick_rehab(time.monotonic())

    async def _liveness_scanner(self) -> None:
        nodes = self.rt.nodes
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
            swept = self.rt.sessions.sweep(now)
            if swept:
                log.debug("expired %d CURVE allow-list entries", swept)
            if len(self._orgs) > ORG_CACHE_MAX // 2:
                self._orgs.prune(lambda entry, now=now: entry[1] <= now)

    # -- inbound ----------

    async def _reader(self, router: TrioSocket) -> None:
        handle = self.handle
        while True:
            batch = await router.recv_batch(copy=False)
            # A full batch means more messages were waiting (see `_liveness_scanner`).
            self._backlogged = len(batch) >= DEFAULT_BATCH
            for frames in batch:
                try:
                    handle(frames)
                except Exception:
                    self._internal_error()

    def handle(self, frames: Sequence[zmq.Frame]) -> None:
        """Validate and process one message (never blocks: see `_check_org`)."""
        self.stats.received += 1
        now = time.monotonic()
        if len(frames) != 3:
            return self._drop(
                _rid(frames), self._peer(frames), f"{len(frames)} frames instead of 3", now
            )
        routing_id = frames[0].bytes
        body = frames[2].bytes
        # Steps 2-4: header, body size, decoding.
        try:
            env = open_envelope(frames[1].bytes, body, self.max_body, HMAC_SHA256)
        except HeaderError as exc:
            return self._drop(routing_id, self._peer(frames), f"bad header: {exc}", now)
        except BodyError as exc:
            return self._drop(routing_id, self._peer(frames), f"bad body: {exc}", now)
        except ProtocolError as exc:
            return self._drop(routing_id, self._peer(frames), f"invalid message: {exc}", now)
        fields = env.fields
        # Step 5: common fields.
        problem = _common_field_problem(fields, env.version)
        if problem is not None:
            return self._drop(routing_id, self._peer(frames), problem, now)
        # Step 7 before step 6: over CURVE, a message must name the node its key is bound to
        # before its organization is looked up, so one connection cannot make the server look
        # up (and cache) names without end.
        if self.curve and not self._bound_to_key(frames, fields, now):
            return None
        # Step 6: the organization exists.
        if self._check_org(fields["org"], (frames, routing_id, env, now)):
            self._after_org(frames, routing_id, env, now)
        return None

    def _check_org(self, org: str, message: tuple) -> bool:
        """True when `org` is known to exist; otherwise the message is dropped or parked.

        The cache answers at once. An expired entry is still used while a background task
        refreshes it. A name never seen parks its messages (in order) until one background
        look-up answers, so the reader never waits for the database or a principal backend,
        and a flood of made-up names cannot stall other nodes' traffic.
        """
        cached = self._orgs.get(org)
        now = message[3]
        if cached is not None:
            if cached[1] <= now:
                self._start_org_lookup(org)
            if cached[0]:
                return True
            self._drop_org(message, f"organization {org!r} does not exist")
            return False
        parked = self._parked.get(org)
        if parked is None:
            if len(self._parked) >= MAX_ORG_LOOKUPS or not self._start_org_lookup(org):
                self._drop_org(message, "too many organization look-ups in progress")
                return False
            parked = self._parked[org] = []
        if self._parked_count >= MAX_PARKED:
            self._drop_org(message, "organization look-up backlog full")
            return False
        parked.append(message)
        self._parked_count += 1
        return False

    def _start_org_lookup(self, org: str) -> bool:
        if org in self._looking_up:
            return True
        nursery = self._nursery
        if nursery is None:
            return False
        self._looking_up.add(org)
        nursery.start_soon(self._org_lookup, org)
        return True

    async def _org_lookup(self, org: str) -> None:
        try:
            exists = await self._lookup_org(org)
        finally:
            self._looking_up.discard(org)
        parked = self._parked.pop(org, [])
        self._parked_count -= len(parked)
        for message in parked:
            frames, routing_id, env, now = message
            try:
                if exists:
                    self._after_org(frames, routing_id, env, now)
                elif exists is None:
                    self._drop_org(message, f"cannot look up organization {org!r}")
                else:
                    self._drop_org(message, f"organization {org!r} does not exist")
            except Exception:
                self._internal_error()

    async def _lookup_org(self, org: str) -> bool | None:
        """Ask the principal backend; caches and returns the answer, None when it failed."""
        try:
            exists = await self.rt.principals.org(org) is not None
        except Exception as exc:
            log.warning("cannot look up organization %r: %s", org, exc)
            return None  # not cached: a later message asks again
        ttl = ORG_TTL if exists else ORG_NEGATIVE_TTL
        self._orgs.put(org, (exists, time.monotonic() + ttl))
        return exists

    def _drop_org(self, message: tuple, reason: str) -> None:
        fields = message[2].fields
        self._drop((fields["org"], fields["node"]), _who(fields), reason, message[3])

    def forget_org(self, org: str) -> None:
        """Drop a cached organization (e.g. after it was deleted or created)."""
        self._orgs.pop(org)

    def _bound_to_key(self, frames: Sequence[zmq.Frame], fields: dict, now: float) -> bool:
        """Step 7: the CURVE key's binding (ZAP User-Id) names the message's org and node.

        A mismatch is logged per binding, not per claimed name, so a flood of made-up names
        from one connection costs one log line per interval.
        """
        try:
            user_id = frames[2].get("User-Id")
        except zmq.ZMQError:
            user_id = None
        if user_id == f"{fields['org']}/{fields['node']}":
            return True
        self._drop(
            ("curve", user_id),
            f"{user_id!r} (CURVE key)",
            f"message for {_who(fields)} does not match its CURVE key",
            now,
        )
        return False

    def _after_org(
        self, frames: Sequence[zmq.Frame], routing_id: bytes, env: Any, now: float
    ) -> None:
        """Steps 8-12 for a message whose organization exists (step 7 passed in `handle`)."""
        fields = env.fields
        org = fields["org"]
        node = fields["node"]
        key = (org, node)
        # Step 8: session key and HMAC.
        session_key = self.rt.sessions.existing_key(org, node)
        if session_key is None:
            self._drop(key, _who(fields), "no session key (config not fetched)", now)
            return
        if not verify_hmac(session_key, env.body, env.header.signature):
            self._drop(key, _who(fields), "bad signature", now)
            return
        # Step 9: timestamp within the skew window.
        text = fields["timestamp"]
        if text == self._ts_text:
            ts = self._ts_value
        else:
            try:
                ts = parse_rfc1123(text)
            except ProtocolError:
                self._drop(key, _who(fields), f"bad timestamp {text[:40]!r}", now)
                return
            self._ts_text, self._ts_value = text, ts
        if abs(time.time() - ts) >= self.max_skew:
            self._drop(key, _who(fields), f"timestamp {text!r} outside the skew window", now)
            return
        incarnation = fields["incarnation_id"]
        version = env.version
        # Step 10: 3.0 sequences strictly increase per connection, and a new connection
        # cannot replay what another one of the same incarnation sent (`SequenceGuard`).
        if version == "3.0":
            problem = self._sequences.check(key, incarnation, routing_id, fields["sequence"], ts)
            if problem is not None:
                self._drop(key, _who(fields), problem, now)
                return
        self.stats.accepted += 1
        # Step 11: node state.
        nodes = self.rt.nodes
        _, created = nodes.accept(org, node, incarnation, routing_id, version, now)
        # Step 12: dispatch.
        msg_type = fields["type"]
        job_id = fields.get("job_id")
        jobs = self.rt.jobs
        if msg_type == "heartbeat":
            if not created:
                nodes.heartbeat(org, node, now, judge=not self._backlogged)
            if job_id is not None and (
                len(job_id) > JOB_ID_LIMIT
                or jobs is None
                or not jobs.is_live_member(org, node, job_id)
            ):
                nodes.rehab(org, node, now)
        elif msg_type in JOB_MESSAGES:
            msg = self._parse(fields, version, key, now)
            if msg is None:
                return
            if jobs is None or not jobs.on_job_message(org, node, msg, version):
                nodes.rehab(org, node, now)
        elif msg_type == "aborted":
            nodes.aborted(org, node)
            if job_id is not None and jobs is not None:
                msg = self._parse(fields, version, key, now)
                if msg is not None:
                    jobs.on_aborted(org, node, msg)
        elif msg_type == "output":
            if version != "3.0":
                self._drop(key, _who(fields), "output messages need protocol 3.0", now)
                return
            msg = self._parse(fields, version, key, now)
            if msg is not None and jobs is not None:
                jobs.on_output(org, node, msg)
        else:
            self._drop(key, _who(fields), f"unknown message type {msg_type[:40]!r}", now)

    def _parse(self, fields: dict, version: str, key: tuple[str, str], now: float) -> Any:
        try:
            return parse_agent_message(fields, version)
        except MessageError as exc:
            self._drop(key, _who(fields), f"invalid {fields['type']}: {exc}", now)
            return None

    def _internal_error(self) -> None:
        """Log a bug hit by a message with its traceback, at most once per interval."""
        self.stats.dropped += 1
        now = time.monotonic()
        if now - self._last_error_log < DROP_LOG_INTERVAL:
            self._errors_suppressed += 1
            return
        self._last_error_log = now
        suppressed, self._errors_suppressed = self._errors_suppressed, 0
        log.exception(
            "unexpected error handling a command-channel message (%d more not shown)", suppressed
        )

    def _peer(self, frames: Sequence[zmq.Frame]) -> str:
        """Who sent a message not yet identified: its CURVE binding, else its routing id."""
        if self.curve and frames:
            try:
                user_id = frames[-1].get("User-Id")
            except zmq.ZMQError:
                user_id = None
            if user_id:
                return f"{user_id!r} (CURVE key)"
        return f"connection {_rid(frames).hex()}"

    def _drop(self, key: Any, where: str, reason: str, now: float) -> None:
        self.stats.dropped += 1
        self._drops.drop(key, where, reason, now)
        return None


def _rid(frames: Sequence[zmq.Frame]) -> bytes:
    return frames[0].bytes if frames else b""


def _who(fields: dict) -> str:
    """The claimed org/node of a message, quoted: they are untrusted until verified."""
    return f"{fields['org']!r}/{fields['node']!r}"


def _common_field_problem(fields: dict, version: str) -> str | None:
    """Why the §13 common fields are unusable, or None when they are fine."""
    for name in _REQUIRED_STRINGS:
        value = fields.get(name)
        if value is None:
            return f"missing field '{name}'"
        if type(value) is not str:
            return f"field '{name}' must be a string"
    sequence = fields.get("sequence")
    if sequence is None:
        if version == "3.0":
            return "missing field 'sequence'"
    elif type(sequence) is not int:
        return "field 'sequence' must be an integer"
    job_id = fields.get("job_id")
    if job_id is not None and type(job_id) is not str:
        return "field 'job_id' must be a string or null"
    return None

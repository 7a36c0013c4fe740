"""The agent's ZeroMQ link: SUB + DEALER driven from trio through their FDs, the ordered
outbox, heartbeats, server liveness and the command-channel watchdog (agent.md §5, §7;
wire-protocol.md §8, §18)."""

from __future__ import annotations

import collections
import itertools
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any

import trio
import zmq

from pushjobs.agent.connection_watch import WATCHED_EVENTS, ConnectionWatch, parse_monitor_event
from pushjobs.agent.inbound import Drop, check_command, check_heartbeat
from pushjobs.agent.liveness import OFFLINE, SEND, ServerLiveness
from pushjobs.agent.runner import Send
from pushjobs.agent.session import ServerConfig
from pushjobs.protocol.compat import dataclass
from pushjobs.protocol.envelope import seal_hmac
from pushjobs.protocol.errors import ProtocolError
from pushjobs.protocol.limits import AGENT_DEALER_MESSAGE_LIMIT, AGENT_SUB_MESSAGE_LIMIT
from pushjobs.protocol.log_throttle import LogThrottle
from pushjobs.protocol.messages import (
    Aborted,
    AckCommit,
    AckRun,
    AgentHeartbeat,
    Failed,
    NackCommit,
    NackRun,
    Output,
    Succeeded,
)
from pushjobs.protocol.timestamps import format_rfc1123

DEALER_SNDHWM = 64
WATCHDOG_DELAY = 4.0
OUTBOX_BLOCKED_LIMIT = 60.0
SAFETY_WAKE = 1.0  # the socket loops also look around this often, whatever the FD says

_MESSAGE_CLASSES: dict[str, type[Any]] = {
    cls.TYPE: cls
    for cls in (AckCommit, NackCommit, AckRun, NackRun, Succeeded, Failed, Aborted, Output)
}


class ThrottledWarnings:
    """Warnings about bad input, at most `burst` per reason per minute (`LogThrottle`)."""

    def __init__(
        self,
        log: logging.Logger | logging.LoggerAdapter[Any],
        burst: int = 5,
        what: str = "dropped message",
    ) -> None:
        self.log = log
        self.what = what
        self._throttle: LogThrottle[str] = LogThrottle(60.0, burst=burst)

    def __call__(self, reason: str, detail: str = "") -> None:
        verdict = self._throttle.hit(reason, time.monotonic())
        if verdict.suppressed:
            self.log.warning("%s %d more times: %s", self.what, verdict.suppressed, reason)
        if verdict.log:
            self.log.warning("%s: %s%s", self.what, reason, f" ({detail})" if detail else "")


@dataclass
class Identity:
    """What stays the same for the life of the agent process."""

    node: str
    org: str
    incarnation_id: str
    curve_public: str
    curve_secret: str
    client: str = field(default_factory=lambda: socket.gethostname().split(".")[0])


_MONITOR_IDS = itertools.count(1)


def _monitor(sock: zmq.Socket[Any], events: int) -> zmq.Socket[Any]:
    """The PAIR socket receiving `sock`'s connection events, on an address used once.

    pyzmq's default address names the socket's FD, which a new socket reuses while libzmq may
    still be tearing down the old monitor on it."""
    return sock.get_monitor_socket(events, f"inproc://pushjobs-agent-monitor-{next(_MONITOR_IDS)}")


class _Session:
    """One pair of sockets for one fetched config."""

    def __init__(self, ctx: zmq.Context[Any], config: ServerConfig, ident: Identity) -> None:
        self.config = config
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        # libzmq drops a peer that sends a larger frame before buffering it, so a rogue server or
        # a man in the middle cannot make a (root) agent allocate without bound (security.md).
        self.sub.setsockopt(zmq.MAXMSGSIZE, AGENT_SUB_MESSAGE_LIMIT)
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.RCVHWM, 0)
        self.dealer.setsockopt(zmq.SNDHWM, DEALER_SNDHWM)
        self.dealer.setsockopt(zmq.MAXMSGSIZE, AGENT_DEALER_MESSAGE_LIMIT)
        if config.curve_public_key is not None:
            self.dealer.setsockopt_string(zmq.CURVE_SERVERKEY, config.curve_public_key)
            self.dealer.setsockopt_string(zmq.CURVE_PUBLICKEY, ident.curve_public)
            self.dealer.setsockopt_string(zmq.CURVE_SECRETKEY, ident.curve_secret)
        # Connection events, so that a peer libzmq dropped (e.g. for MAXMSGSIZE) is logged and
        # a connection libzmq abandoned (no retry follows) leads to a reconfigure.
        self.monitors = {
            "heartbeat": _monitor(self.sub, WATCHED_EVENTS),
            "command": _monitor(self.dealer, WATCHED_EVENTS),
        }
        self.sub.connect(config.out_addr)
        self.dealer.connect(config.command_addr)
        self.sub_fd: int = self.sub.getsockopt(zmq.FD)
        self.dealer_fd: int = self.dealer.getsockopt(zmq.FD)
        self.monitor_fds: dict[str, int] = {name: m.FD for name, m in self.monitors.items()}
        self.heard_dealer = False
        self.closed = False
        # The server restarted: its new incarnation cannot verify this session's messages and
        # has a new CURVE key, so the command connection is dropped until the reconfigure
        # instead of failing a CURVE handshake every 100 ms (a retry storm across a fleet).
        self.stale = False

    def drop_command_connection(self) -> bool:
        """Disconnect the DEALER from the server (once); True when it did."""
        if self.stale or self.closed:
            return False
        self.stale = True
        try:
            self.dealer.disconnect(self.config.command_addr)
        except zmq.ZMQError:
            pass
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self.sub_fd, self.dealer_fd, *self.monitor_fds.values()):
            trio.lowlevel.notify_closing(fd)
        # Stop monitoring before closing either end: libzmq otherwise keeps the monitor's
        # inproc pipe (and its file descriptors) for the life of the process, and an event sent
        # into a closed PAIR can block. The sockets themselves go last.
        self.sub.disable_monitor()
        self.dealer.disable_monitor()
        for monitor in self.monitors.values():
            monitor.close(linger=0)
        self.sub.close(linger=0)
        self.dealer.close(linger=0)


class Link:
    """Sockets, outbox, heartbeats. Callbacks: `on_command(fields)` for validated server
    commands, `on_trigger(reason)` to ask for a reconfigure now, `on_watchdog(n)` when the
    n-th connection in a row stayed silent, `job_state()` for heartbeats,
    `on_new_incarnation(id, interval)` for a server restart, `on_abandoned(reason, interval)`
    when libzmq gave up a connection."""

    def __init__(
        self,
        ident: Identity,
        *,
        on_command: Callable[[Mapping[str, Any]], None],
        on_trigger: Callable[[str], None],
        on_watchdog: Callable[[int], None],
        on_send_failure: Callable[[], None],
        on_new_incarnation: Callable[[str, float], None],
        on_abandoned: Callable[[str, float], None],
        job_state: Callable[[], tuple[str, str | None]],
        log: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.ident = ident
        self.on_command = on_command
        self.on_trigger = on_trigger
        self.on_watchdog = on_watchdog
        self.silent_connections = 0  # consecutive connections the watchdog found silent
        self.on_send_failure = on_send_failure
        self.on_new_incarnation = on_new_incarnation
        self.on_abandoned = on_abandoned
        self.job_state = job_state
        self.log = log
        self.drop = ThrottledWarnings(log)
        self.disconnected = ThrottledWarnings(log, what="connection closed")
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.session: _Session | None = None
        self.outbox: collections.deque[Send] = collections.deque()
        self.liveness = ServerLiveness()
        self.known_incarnation: str | None = None
        self._heartbeat_sequences: dict[str, int] = {}  # server incarnation -> last sequence
        # Server incarnation -> last accepted command sequence. The server counts per node for
        # its whole life, so the high-water survives reconfigures: a command recorded before a
        # reconfigure cannot be replayed onto the new (unencrypted) connection.
        self._command_sequences: dict[str, int] = {}
        # Last sequence handed to a DEALER. It keeps counting across connections for the life of
        # this process (one client incarnation), so the server can hold one high-water per
        # incarnation and a message captured on an old connection cannot be replayed on a new one.
        self.sequence = 0
        self._session_changed = trio.Event()
        self._dealer_wake: trio.CancelScope | None = None
        self._heartbeat_reset = trio.Event()
        self._head_blocked_since: float | None = None
        self._nursery: trio.Nursery | None = None
        # The node's labels (wire-protocol.md §15.1): sent with the first heartbeat a session
        # sends and again after they change; `_labels_sent` is the session that has them.
        self.labels: dict[str, str] = {}
        self._labels_sent: _Session | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the socket loops and the heartbeater until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._dealer_loop)
                nursery.start_soon(self._sub_loop)
                nursery.start_soon(self._heartbeat_loop)
                task_status.started()
        finally:
            self.close()

    def apply(self, config: ServerConfig) -> None:
        """Swap in new sockets for a freshly fetched config (agent.md §6.1 step 2)."""
        old = self.session
        if old is not None:
            old.close()
        self.session = _Session(self.ctx, config, self.ident)
        self.known_incarnation = config.incarnation_id
        self.liveness = ServerLiveness(config.offline_threshold, config.online_threshold)
        self._head_blocked_since = None
        self.log.info(
            "connected: heartbeat %s, command %s (%s), server incarnation %s",
            config.out_addr,
            config.command_addr,
            "CURVE" if config.curve_public_key else "unencrypted",
            config.incarnation_id,
        )
        self._session_changed.set()
        self._session_changed = trio.Event()
        self._heartbeat_reset.set()
        self._wake_dealer()
        if self._nursery is not None:
            self._nursery.start_soon(self._watchdog, self.session)
            for name in self.session.monitors:
                self._nursery.start_soon(self._monitor_loop, self.session, name)

    def close(self) -> None:
        """Close the sockets (nothing more is sent)."""
        if self.session is not None:
            self.session.close()
            self.session = None
        if not self.ctx.closed:
            self.ctx.term()

    # ---- sending -----------------------------------------------------------------------

    def send(self, message: Send) -> None:
        """Queue a job message in the ordered outbox."""
        self.outbox.append(message)
        self._wake_dealer()

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """New labels: the next heartbeat carries them (when they differ from the last ones)."""
        if dict(labels) != self.labels:
            self.labels = dict(labels)
            self._labels_sent = None

    def _wake_dealer(self) -> None:
        if self._dealer_wake is not None:
            self._dealer_wake.cancel()

    def _common(self, session: _Session, sequence: int) -> dict[str, Any]:
        return {
            "node": self.ident.node,
            "org": self.ident.org,
            "timestamp": format_rfc1123(time.time()),
            "incarnation_id": self.ident.incarnation_id,
            "client": self.ident.client,
            "sequence": sequence,
            "protocol_version": "3.0",
        }

    def _seal(self, session: _Session, message: Send, sequence: int) -> list[bytes]:
        cls = _MESSAGE_CLASSES[message.type]
        msg = cls(job_id=message.job_id, **message.fields, **self._common(session, sequence))
        header, body = seal_hmac("3.0", msg.to_dict(), session.config.session_key)
        return [header, body]

    def _flush_outbox(self, session: _Session) -> None:
        """Hand queued job messages to the DEALER in order while it accepts them (not to a
        stale session's: they wait for the next one)."""
        while self.outbox and not session.closed and not session.stale:
            message = self.outbox[0]
            sequence = self.sequence + 1
            try:
                frames = self._seal(session, message, sequence)
            except (ProtocolError, TypeError, KeyError) as exc:
                self.log.error("job %s: cannot encode %s: %r", message.job_id, message.type, exc)
                self.outbox.popleft()
                continue
            try:
                session.dealer.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                now = trio.current_time()
                if self._head_blocked_since is None:
                    self._head_blocked_since = now
                elif now - self._head_blocked_since >= OUTBOX_BLOCKED_LIMIT:
                    self.log.warning(
                        "job %s: %s blocked in the outbox for %.0f s",
                        message.job_id,
                        message.type,
                        now - self._head_blocked_since,
                    )
                    self._head_blocked_since = now
                    self.on_send_failure()
                return
            except zmq.ZMQError as exc:
                self.log.warning("cannot send %s: %s", message.type, exc)
                return
            self.sequence = sequence
            self.outbox.popleft()
            self._head_blocked_since = None
            self.log.debug("job %s: sent %s (sequence %d)", message.job_id, message.type, sequence)

    def _send_heartbeat(self, session: _Session) -> None:
        if session.stale:
            return
        state, job_id = self.job_state()
        sequence = self.sequence + 1
        labels = self.labels if self._labels_sent is not session else None
        msg = AgentHeartbeat(
            job_state=state, job_id=job_id, labels=labels, **self._common(session, sequence)
        )
        header, body = seal_hmac("3.0", msg.to_dict(), session.config.session_key)
        try:
            session.dealer.send_multipart([header, body], zmq.NOBLOCK)
        except zmq.Again:
            self.log.warning("heartbeat dropped: the command socket cannot queue it")
            self.on_send_failure()
            return
        except zmq.ZMQError as exc:
            self.log.warning("heartbeat not sent: %s", exc)
            return
        self.sequence = sequence
        if labels is not None:
            self._labels_sent = session
        self._wake_dealer()  # a send can swallow the FD's readable edge

    # ---- loops -------------------------------------------------------------------------

    async def _wait_session(self) -> _Session:
        while self.session is None:
            await self._session_changed.wait()
        return self.session

    async def _dealer_loop(self) -> None:
        while True:
            session = await self._wait_session()
            try:
                self._drain(session, session.dealer, self._handle_command)
                self._flush_outbox(session)
                if session.closed:
                    continue
                # Messages may have arrived while sending: drain again before sleeping.
                if session.dealer.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    continue
                with trio.move_on_after(SAFETY_WAKE) as scope:
                    self._dealer_wake = scope
                    await trio.lowlevel.wait_readable(session.dealer_fd)
            except (trio.ClosedResourceError, zmq.ZMQError):
                await trio.sleep(0)
            finally:
                self._dealer_wake = None

    async def _sub_loop(self) -> None:
        while True:
            session = await self._wait_session()
            try:
                self._drain(session, session.sub, self._handle_heartbeat)
                if session.closed:
                    continue
                with trio.move_on_after(SAFETY_WAKE):
                    await trio.lowlevel.wait_readable(session.sub_fd)
            except (trio.ClosedResourceError, zmq.ZMQError):
                await trio.sleep(0)

    async def _heartbeat_loop(self) -> None:
        while True:
            session = await self._wait_session()
            self._heartbeat_reset = trio.Event()
            action = self.liveness.tick()
            if action == OFFLINE:
                self.log.warning(
                    "server missed %d heartbeats, considering it offline",
                    self.liveness.offline_counter,
                )
                self.on_trigger("server offline")
            elif action == SEND and not session.closed:
                self._send_heartbeat(session)
            with trio.move_on_after(session.config.interval):
                await self._heartbeat_reset.wait()

    async def _watchdog(self, session: _Session) -> None:
        await trio.sleep(WATCHDOG_DELAY)
        if session is self.session and not session.heard_dealer:
            self.silent_connections += 1
            self.log.warning(
                "nothing received on the command channel within %.0f s of connecting",
                WATCHDOG_DELAY,
            )
            self.on_watchdog(self.silent_connections)

    async def _monitor_loop(self, session: _Session, name: str) -> None:
        """Log disconnects of one socket until its session closes; when libzmq abandons the
        connection instead of retrying it, ask for a reconfigure (within one heartbeat
        interval, jittered, so a fleet dropped at once does not fetch its config at once)."""
        monitor, fd = session.monitors[name], session.monitor_fds[name]
        limit = AGENT_SUB_MESSAGE_LIMIT if name == "heartbeat" else AGENT_DEALER_MESSAGE_LIMIT
        watch = ConnectionWatch()
        while not session.closed:
            try:
                while not session.closed:
                    kind, raw_endpoint = parse_monitor_event(monitor.recv_multipart(zmq.NOBLOCK))
                    watch.event(kind, trio.current_time())
                    if kind != zmq.EVENT_DISCONNECTED:
                        continue
                    endpoint = raw_endpoint.decode("utf-8", "replace")
                    self.disconnected(
                        f"{name} socket",
                        f"{endpoint}: closed by the peer, or it sent a message over {limit} bytes",
                    )
            except zmq.Again:
                pass
            except (zmq.ZMQError, ValueError, trio.ClosedResourceError):
                return
            if (
                watch.abandoned(trio.current_time())
                and not session.closed
                and not (name == "command" and session.stale)
            ):
                self.log.warning("%s socket: libzmq will not reconnect, reconfiguring", name)
                self.on_abandoned(f"{name} connection abandoned", session.config.interval)
            try:
                with trio.move_on_after(SAFETY_WAKE):
                    await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError:
                return

    # ---- receiving ---------------------------------------------------------------------

    @staticmethod
    def _drain(
        session: _Session,
        sock: zmq.Socket[Any],
        handle: Callable[[_Session, list[bytes]], None],
    ) -> None:
        """Hand every message waiting on `sock` to `handle`, without blocking."""
        while not session.closed:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(session, frames)

    def _handle_command(self, session: _Session, frames: list[bytes]) -> None:
        result = check_command(
            frames,
            key=session.config.session_key,
            max_skew=session.config.max_message_skew,
            last_sequence=self._command_sequences.get(session.config.incarnation_id, -1),
            now=time.time(),
        )
        if isinstance(result, Drop):
            self.drop(result.reason, result.detail)
            return
        _remember(self._command_sequences, session.config.incarnation_id, result["sequence"])
        session.heard_dealer = True
        self.silent_connections = 0
        self.log.debug(
            "received %s (sequence %d, job %s)",
            result["type"],
            result["sequence"],
            result.get("job_id"),
        )
        self.on_command(result)

    def _handle_heartbeat(self, session: _Session, frames: list[bytes]) -> None:
        beat = check_heartbeat(
            frames,
            public_key=session.config.public_key,
            max_skew=session.config.max_message_skew,
            last_sequences=self._heartbeat_sequences,
            now=time.time(),
        )
        if isinstance(beat, Drop):
            self.drop(beat.reason, beat.detail)
            return
        _remember(self._heartbeat_sequences, beat.incarnation_id, beat.sequence)
        if self.liveness.heard():
            self.log.info("server heartbeats are back, considering the server online")
            self._heartbeat_reset.set()
        if beat.incarnation_id != self.known_incarnation:
            self.on_new_incarnation(beat.incarnation_id, session.config.interval)
        if beat.incarnation_id != session.config.incarnation_id and (
            session.drop_command_connection()
        ):
            self.log.info(
                "command connection to server incarnation %s closed until the reconfigure",
                session.config.incarnation_id,
            )


def _remember(sequences: dict[str, int], incarnation: str, sequence: int) -> None:
    """Record the high-water of one server incarnation; remember a few incarnations only."""
    if incarnation not in sequences and len(sequences) >= 8:
        sequences.pop(next(iter(sequences)))
    sequences[incarnation] = sequence

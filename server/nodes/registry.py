"""The registry of connected nodes (lifecycle.md §2, §3): every `NodeState` and its I/O.

The pure `NodeState` (`state.py`) answers inputs with `NodeAction`s; the registry performs them:
it seals command messages for the node's protocol version with its session key, hands the frames
to a non-blocking sender (the broker's ROUTER), and tells watchers (live jobs) when a node goes
down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pushjobs.protocol.envelope import seal_hmac
from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.protocol.vocabulary import MessageType
from pushjobs.server.nodes.liveness import LivenessParams
from pushjobs.server.nodes.state import NodeAction, NodePhase, NodeState

if TYPE_CHECKING:
    from pushjobs.protocol.signing import HmacKey
    from pushjobs.server.config import TimingSettings

log = logging.getLogger(__name__)

Sender = Callable[[Sequence[bytes]], object]  # the return value is ignored
Key = tuple[str, str]


class NodeWatcher(Protocol):
    """A live job (or output record) that includes the node; told when the node's state ends."""

    def node_down(self, org: str, node: str) -> None: ...


class PresenceSink(Protocol):
    """Told when a node comes online, changes phase or goes offline (a cluster records it)."""

    def changed(self, org: str, node: str, state: NodeState | None) -> None: ...


class InventorySink(Protocol):
    """Told when a node connects and when it reports labels (the store records them)."""

    def seen(self, org: str, node: str) -> None: ...
    def labels(self, org: str, node: str, labels: dict[str, str]) -> None: ...


class SessionKeyLookup(Protocol):
    """What the registry needs of the session keys: the key that seals a node's commands."""

    def existing_key(self, org: str, node: str) -> HmacKey | None: ...


class NodeRegistry:
    """Every node state of the process, with routing ids, command sequences and watchers.

    Per (org, node) command sequence counters live here, outside the node state, so they survive
    state re-creation (wire-protocol.md §8). Watchers are kept per (org, node) whether or not the
    node is online: a job registers for all its nodes at start.
    """

    def __init__(
        self,
        *,
        timing: TimingSettings,
        sessions: SessionKeyLookup,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self.liveness_params = LivenessParams(
            interval=float(timing.heartbeat_interval),
            window=float(timing.decay_window),
            threshold=float(timing.down_threshold),
        )
        self.rehab_interval = float(timing.rehab_interval)
        self.scan_interval = float(timing.heartbeat_interval) * float(
            timing.detect_offline_nodes_interval
        )
        self._states: dict[Key, NodeState] = {}
        self._by_org: dict[str, dict[str, NodeState]] = {}
        self._rehab: dict[Key, NodeState] = {}
        self._sequences: dict[Key, int] = {}
        self._watchers: dict[Key, dict[int, NodeWatcher]] = {}
        self._send: Sender | None = None
        self.sent_by_type: dict[str, int] = {}  # commands sent, by type (read by the metrics)
        self._ts_second = -1
        self._ts_text = ""
        self.clock = clock  # `now` of a rehab request that names none
        self.presence: PresenceSink | None = None
        self.inventory: InventorySink | None = None

    # -- wiring ----------

    def attach(self, send: Sender) -> None:
        """Give the registry the non-blocking sender of the command ROUTER."""
        self._send = send

    def detach(self) -> None:
        self._send = None

    def observe(self, presence: PresenceSink) -> None:
        """Tell `presence` of every node that comes online, changes phase or goes offline."""
        self.presence = presence

    def record(self, inventory: InventorySink) -> None:
        """Tell `inventory` of every node that connects and every labels change."""
        self.inventory = inventory

    # -- queries (lifecycle.md §2.1) --------------------------------------------------------------

    def state(self, org: str, node: str) -> NodePhase | None:
        """None (offline), or the node's phase (`rehab` or `idle`)."""
        st = self._states.get((org, node))
        return None if st is None else st.phase

    def node_state(self, org: str, node: str) -> NodeState | None:
        return self._states.get((org, node))

    def online_nodes(self, org: str) -> list[tuple[str, str]]:
        """Sorted (name, phase) of the org's online nodes (each phase a `NodePhase`)."""
        nodes = self._by_org.get(org)
        if not nodes:
            return []
        return sorted((name, st.phase) for name, st in nodes.items())

    def online_count(self) -> int:
        return len(self._states)

    def labels(self, org: str) -> dict[str, dict[str, str]]:
        """The labels each of the org's online nodes last reported (nodes without: absent)."""
        nodes = self._by_org.get(org)
        if not nodes:
            return {}
        return {name: st.labels for name, st in nodes.items() if st.labels is not None}

    def states(self) -> list[NodeState]:
        """Every node state of this server."""
        return list(self._states.values())

    def rehab_count(self) -> int:
        return len(self._rehab)

    def next_sequence(self, org: str, node: str) -> int:
        """The sequence the next command to (org, node) will carry."""
        return self._sequences.get((org, node), 0) + 1

    # -- watchers ----------

    def watch(self, org: str, node: str, watcher: NodeWatcher) -> None:
        self._watchers.setdefault((org, node), {})[id(watcher)] = watcher

    def unwatch(self, org: str, node: str, watcher: NodeWatcher) -> None:
        key = (org, node)
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.pop(id(watcher), None)
            if not watchers:
                del self._watchers[key]

    def watcher_count(self, org: str, node: str) -> int:
        return len(self._watchers.get((org, node), ()))

    # -- inbound (wire-protocol.md §16 step 11) ----------------------------------------------------

    def accept(
        self,
        org: str,
        node: str,
        incarnation_id: str,
        routing_id: bytes,
        version: str,
        now: float,
        latest: bool = True,
    ) -> tuple[NodeState, bool]:
        """Bind a validated message to its node state; returns (state, created).

        A state of another client incarnation ends first (watchers told `down`); a missing
        state is created and sent `abort`; a known node on a new routing id is sent `ack` —
        unless the message is not its `latest` (a replaced connection's late data): commands
        keep going to the connection the node uses now.
        """
        key = (org, node)
        st = self._states.get(key)
        if st is not None and st.incarnation_id != incarnation_id:
            self._end(key, "new client incarnation")
            st = None
        if st is None:
            st = NodeState(
                org,
                node,
                incarnation_id=incarnation_id,
                routing_id=routing_id,
                version=version,
                liveness=self.liveness_params,
                rehab_interval=self.rehab_interval,
                now=now,
            )
            self._states[key] = st
            self._by_org.setdefault(org, {})[node] = st
            log.info("node %r/%r online (incarnation %r)", org, node, incarnation_id)
            if self.inventory is not None:
                self.inventory.seen(org, node)
            self._perform(st, st.start(now))
            self._tell_presence(st)
            return st, True
        if version != st.version:
            st.version = version
            self._tell_presence(st)
        if routing_id != st.routing_id:
            if not latest:
                log.debug("node %r/%r: late message on an older connection", org, node)
                return st, False
            st.routing_id = routing_id
            log.info("node %r/%r reconnected", org, node)
            self.send_command(org, node, MessageType.ACK, {})
        return st, False

    def heartbeat(self, org: str, node: str, now: float, *, judge: bool = True) -> None:
        """A validated heartbeat of an existing state that did not just create it.

        `judge=False` (the broker is working through a backlog) counts the heartbeat but does
        not declare the node down: it arrived earlier than it is processed, and it proves the
        node alive.
        """
        st = self._states.get((org, node))
        if st is not None:
            outputs = st.on_heartbeat(now)
            if outputs and not judge:
                log.debug("node %r/%r: low liveness ignored while the broker catches up", org, node)
                return
            self._perform(st, outputs, reason="liveness (heartbeat)")

    def set_labels(self, org: str, node: str, labels: dict[str, str]) -> None:
        """Validated labels from the node's heartbeat: kept, and recorded when they changed."""
        st = self._states.get((org, node))
        if st is None or st.labels == labels:
            return
        st.labels = labels
        log.info(
            "node %r/%r labels: %s", org, node, ",".join(f"{k}={v}" for k, v in labels.items())
        )
        if self.inventory is not None:
            self.inventory.labels(org, node, labels)

    def aborted(self, org: str, node: str) -> None:
        """`aborted` from the node: rehab → idle."""
        st = self._states.get((org, node))
        if st is not None:
            was = st.phase
            if was is NodePhase.REHAB:
                log.info("node %r/%r idle", org, node)
            self._perform(st, st.on_aborted())
            if st.phase is not was:
                self._tell_presence(st)

    def rehab(self, org: str, node: str, now: float | None = None) -> None:
        """Rehab request (lifecycle.md §2.2); ignored for offline nodes and nodes in rehab."""
        st = self._states.get((org, node))
        if st is not None:
            was = st.phase
            self._perform(st, st.on_rehab_request(self.clock() if now is None else now))
            if st.phase is not was:
                self._tell_presence(st)

    # -- timers ----------

    def tick_rehab(self, now: float) -> None:
        """Resend `abort` to every node in rehab whose timer is due."""
        for st in list(self._rehab.values()):
            self._perform(st, st.on_rehab_timer(now))

    def scan(self, now: float) -> int:
        """Liveness scan of every node; returns how many went down."""
        down = [st for st in self._states.values() if NodeAction.DOWN in st.on_scan(now)]
        for st in down:
            self._perform(st, [NodeAction.DOWN], reason="liveness (scan)")
        return len(down)

    def end(self, org: str, node: str, reason: str) -> bool:
        """End the node's state now (revocation): watchers are told `down`; False if offline."""
        if (org, node) not in self._states:
            return False
        self._end((org, node), reason)
        return True

    def shutdown(self) -> None:
        """Server shutdown: every node state ends silently."""
        self._states.clear()
        self._by_org.clear()
        self._rehab.clear()

    # -- outbound ----------

    def send_command(self, org: str, node: str, msg_type: str, fields: dict[str, Any]) -> None:
        """Seal and send `abort`/`ack`/`commit`/`run` to an online node; dropped when offline."""
        st = self._states.get((org, node))
        if st is None:
            log.debug("not sending %s to offline node %r/%r", msg_type, org, node)
            return
        key = self._sessions.existing_key(org, node)
        send = self._send
        if key is None or send is None:
            log.warning("cannot send %s to %r/%r: no session key or socket", msg_type, org, node)
            return
        seq = self._sequences.get((org, node), 0) + 1
        self._sequences[(org, node)] = seq
        # Chef Push Jobs' field order: sequence, timestamp, type, then the message's fields.
        body: dict[str, Any] = {"sequence": seq, "timestamp": self._timestamp(), "type": msg_type}
        body.update(fields)
        header, payload = seal_hmac(st.version, body, key)
        send([st.routing_id, header, payload])
        self.sent_by_type[msg_type] = self.sent_by_type.get(msg_type, 0) + 1

    # -- internals ----------

    def _tell_presence(self, st: NodeState) -> None:
        if self.presence is not None and self._states.get((st.org, st.node)) is st:
            self.presence.changed(st.org, st.node, st)

    def _timestamp(self) -> str:
        second = int(time.time())
        if second != self._ts_second:
            self._ts_second = second
            self._ts_text = format_rfc1123(second)
        return self._ts_text

    def _perform(self, st: NodeState, actions: list[NodeAction], reason: str = "") -> None:
        key = (st.org, st.node)
        if self._states.get(key) is not st:
            return  # ended meanwhile (a watcher reacted to another node going down)
        if st.phase is NodePhase.REHAB:
            self._rehab[key] = st
        else:
            self._rehab.pop(key, None)
        for action in actions:
            if action is NodeAction.SEND_ABORT:
                self.send_command(st.org, st.node, MessageType.ABORT, {})
            elif action is NodeAction.DOWN:
                self._end(key, reason)

    def _end(self, key: Key, reason: str) -> None:
        st = self._states.pop(key, None)
        if st is None:
            return
        org, node = key
        by_org = self._by_org.get(org)
        if by_org is not None:
            by_org.pop(node, None)
            if not by_org:
                del self._by_org[org]
        self._rehab.pop(key, None)
        log.info("node %r/%r down: %s", org, node, reason)
        if self.presence is not None:
            self.presence.changed(org, node, None)
        for watcher in list(self._watchers.get(key, {}).values()):
            try:
                watcher.node_down(org, node)
            except Exception:
                log.exception("watcher failed handling node %r/%r down", org, node)

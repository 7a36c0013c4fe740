"""The state of one connected node: rehab / idle phase and liveness (lifecycle.md §2.2, §3).

Pure: inputs in (with `now`, seconds, monotonic), a list of `NodeAction`s out; no I/O and no
clock reads. The registry (`registry.py`) owns the states and performs the actions.
"""

from __future__ import annotations

import enum

from pushjobs.server.nodes.liveness import LivenessParams, NodeLiveness


class NodePhase(enum.StrEnum):
    """Where a connected node stands; the value is what the node-state API reports."""

    REHAB = "rehab"  # being sent `abort` until it answers `aborted`
    IDLE = "idle"  # available for a job


class NodeAction(enum.Enum):
    """What a `NodeState` input asks the registry to do."""

    SEND_ABORT = "send_abort"
    DOWN = "down"  # the state ends: the node is offline


class NodeState:
    """One connected node: rehab/idle phase, liveness, connection facts (lifecycle.md §2.2)."""

    __slots__ = (
        "incarnation_id",
        "labels",
        "liveness",
        "next_abort",
        "node",
        "org",
        "phase",
        "rehab_interval",
        "routing_id",
        "version",
    )

    def __init__(
        self,
        org: str,
        node: str,
        *,
        incarnation_id: str,
        routing_id: bytes,
        version: str,
        liveness: LivenessParams,
        rehab_interval: float,
        now: float,
    ) -> None:
        self.org = org
        self.node = node
        self.incarnation_id = incarnation_id
        self.routing_id = routing_id
        self.version = version
        self.liveness = NodeLiveness(liveness, now)
        self.rehab_interval = rehab_interval
        self.phase = NodePhase.REHAB
        self.next_abort = now + rehab_interval
        self.labels: dict[str, str] | None = None  # as last reported (wire-protocol.md §15.1)

    def start(self, now: float) -> list[NodeAction]:
        """Creation: enter rehab, send `abort`, start the rehab timer."""
        self.phase = NodePhase.REHAB
        self.next_abort = now + self.rehab_interval
        return [NodeAction.SEND_ABORT]

    def on_rehab_timer(self, now: float) -> list[NodeAction]:
        """Timer tick: in rehab and due → send `abort` again."""
        if self.phase is not NodePhase.REHAB or now < self.next_abort:
            return []
        self.next_abort = now + self.rehab_interval
        return [NodeAction.SEND_ABORT]

    def on_aborted(self) -> list[NodeAction]:
        """`aborted` from the node: rehab → idle (cancels the timer); idle stays idle."""
        self.phase = NodePhase.IDLE
        return []

    def on_rehab_request(self, now: float) -> list[NodeAction]:
        """A job or the broker asks for rehab: idle → rehab with `abort`; rehab ignores it."""
        if self.phase is NodePhase.REHAB:
            return []
        self.phase = NodePhase.REHAB
        self.next_abort = now + self.rehab_interval
        return [NodeAction.SEND_ABORT]

    def on_heartbeat(self, now: float) -> list[NodeAction]:
        """A validated heartbeat (not the one that created the state)."""
        return [] if self.liveness.heartbeat(now) else [NodeAction.DOWN]

    def on_scan(self, now: float) -> list[NodeAction]:
        """The liveness scanner's look at this node."""
        return [] if self.liveness.check(now) else [NodeAction.DOWN]

"""Which node is connected to which other server: the pure view every server keeps of the
cluster's `node_presence` rows (docs/cluster.md). No I/O; `update` is fed what was read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pushjobs.server.cluster.store import PresenceRow
from pushjobs.server.nodes.state import NodePhase

Key = tuple[str, str]
_PHASES = {phase.value: phase for phase in NodePhase}


@dataclass(slots=True, eq=False)
class RemoteNode:
    """A node connected to another live server. One object per (server, client incarnation):
    the job manager compares identities to notice a node whose state was replaced."""

    org: str
    node: str
    server_id: str
    incarnation: str
    phase: NodePhase
    version: str


class PresenceView:
    """The other servers' nodes, as last read; `update` says which ones went away."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._nodes: dict[Key, RemoteNode] = {}
        self._by_org: dict[str, dict[str, RemoteNode]] = {}

    def get(self, org: str, node: str) -> RemoteNode | None:
        return self._nodes.get((org, node))

    def org_nodes(self, org: str) -> list[tuple[str, NodePhase]]:
        """(name, phase) of the org's nodes on other servers."""
        return [(name, rn.phase) for name, rn in self._by_org.get(org, {}).items()]

    def forget(self, org: str, node: str) -> bool:
        """The node connected to this server: it is no longer another server's."""
        remote = self._nodes.pop((org, node), None)
        if remote is None:
            return False
        self._by_org.get(org, {}).pop(node, None)
        return True

    def update(self, rows: Iterable[PresenceRow], alive: set[str]) -> list[Key]:
        """Replace the view with `rows` of live servers other than this one; returns the nodes
        that were remote and are gone or now belong to another server or incarnation."""
        fresh: dict[Key, RemoteNode] = {}
        for row in rows:
            if row.server_id == self.me or row.server_id not in alive:
                continue
            key = (row.org, row.node)
            old = self._nodes.get(key)
            phase = _PHASES.get(row.phase)
            if phase is None:
                continue
            if old is not None and (old.server_id, old.incarnation) == (
                row.server_id,
                row.incarnation,
            ):
                old.phase, old.version = phase, row.version
                fresh[key] = old
            else:
                fresh[key] = RemoteNode(
                    row.org, row.node, row.server_id, row.incarnation, phase, row.version
                )
        gone = [key for key, old in self._nodes.items() if fresh.get(key) is not old]
        self._nodes = fresh
        by_org: dict[str, dict[str, RemoteNode]] = {}
        for (org, node), remote in fresh.items():
            by_org.setdefault(org, {})[node] = remote
        self._by_org = by_org
        return gone

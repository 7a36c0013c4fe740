"""Every node of the cluster as one registry (docs/cluster.md): this server's own nodes from
its `NodeRegistry`, the others' from the `PresenceView`. Commands and rehab requests for a
node on another server go into the `Outbox`, batched per server; the job manager and the HTTP
handlers cannot tell the difference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from pushjobs.server.cluster.presence import Key, PresenceView, RemoteNode

if TYPE_CHECKING:
    from pushjobs.server.nodes.registry import NodeRegistry, NodeWatcher, PresenceSink
    from pushjobs.server.nodes.state import NodeState


class Outbox:
    """Messages for other servers, gathered until the cluster service sends them.

    Commands of one kind with the same fields object (one job's `commit`, built once per job)
    become one entry with a node list: a fan-out to 800 nodes on a server is one message.
    """

    def __init__(self) -> None:
        self._entries: dict[str, list[dict[str, Any]]] = {}
        self._grouped: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        self.wakeup = trio.Event()

    def command(
        self, target: str, org: str, node: str, msg_type: str, fields: dict[str, Any]
    ) -> None:
        key = (target, org, msg_type, id(fields))
        entry = self._grouped.get(key)
        if entry is None:
            entry = {"k": "cmd", "org": org, "type": msg_type, "fields": fields, "nodes": []}
            self._grouped[key] = entry
            self._add(target, entry)
        entry["nodes"].append(node)

    def rehab(self, target: str, org: str, node: str) -> None:
        key = (target, org, "rehab", 0)
        entry = self._grouped.get(key)
        if entry is None:
            entry = {"k": "rehab", "org": org, "nodes": []}
            self._grouped[key] = entry
            self._add(target, entry)
        entry["nodes"].append(node)

    def relay(self, target: str, org: str, node: str, version: str, fields: dict[str, Any]) -> None:
        """An agent's message for a job that `target` coordinates."""
        self._add(
            target, {"k": "msg", "org": org, "node": node, "version": version, "fields": fields}
        )

    def _add(self, target: str, entry: dict[str, Any]) -> None:
        self._entries.setdefault(target, []).append(entry)
        self.wakeup.set()

    def take(self) -> dict[str, list[dict[str, Any]]]:
        """Everything gathered, per target server; the outbox starts empty again."""
        entries, self._entries, self._grouped = self._entries, {}, {}
        self.wakeup = trio.Event()
        return entries


class ClusterNodes:
    """The job manager's and the HTTP layer's node registry in a cluster."""

    def __init__(
        self, local: NodeRegistry, view: PresenceView, outbox: Outbox, presence: PresenceSink
    ) -> None:
        self.local = local
        self.view = view
        self.outbox = outbox
        self.presence = presence
        self._watchers: dict[Key, dict[int, NodeWatcher]] = {}

    # -- the registry's presence sink ----------------------------------------------------------
    def changed(self, org: str, node: str, state: NodeState | None) -> None:
        """A local node state began, changed phase or ended. A node that comes here from
        another server lost its state there: its jobs hear `down` now, before the rehab this
        server starts can make its agent answer `aborted` (lifecycle.md §2.4)."""
        if state is not None and self.view.forget(org, node):
            self.remote_gone([(org, node)])
        self.presence.changed(org, node, state)

    # -- what the job manager needs (JobNodes) -------------------------------------------------
    def node_state(self, org: str, node: str) -> NodeState | RemoteNode | None:
        return self.local.node_state(org, node) or self.view.get(org, node)

    def watch(self, org: str, node: str, watcher: NodeWatcher) -> None:
        self.local.watch(org, node, watcher)
        self._watchers.setdefault((org, node), {})[id(watcher)] = watcher

    def unwatch(self, org: str, node: str, watcher: NodeWatcher) -> None:
        self.local.unwatch(org, node, watcher)
        watchers = self._watchers.get((org, node))
        if watchers is not None:
            watchers.pop(id(watcher), None)
            if not watchers:
                del self._watchers[(org, node)]

    def rehab(self, org: str, node: str) -> None:
        if self.local.node_state(org, node) is not None:
            self.local.rehab(org, node)
            return
        remote = self.view.get(org, node)
        if remote is not None:
            self.outbox.rehab(remote.server_id, org, node)

    def send_command(self, org: str, node: str, msg_type: str, fields: dict[str, Any]) -> None:
        if self.local.node_state(org, node) is not None:
            self.local.send_command(org, node, msg_type, fields)
            return
        remote = self.view.get(org, node)
        if remote is not None:
            self.outbox.command(remote.server_id, org, node, msg_type, fields)

    def remote_gone(self, keys: list[Key]) -> None:
        """Nodes of other servers that went away: their watchers hear `down` as for a local
        node (a job marks them as the lifecycle says)."""
        for org, node in keys:
            for watcher in list(self._watchers.get((org, node), {}).values()):
                watcher.node_down(org, node)

    # -- what the HTTP handlers need (NodeStates) ----------------------------------------------
    def online_count(self) -> int:
        return self.local.online_count()

    def online_nodes(self, org: str) -> list[tuple[str, str]]:
        """Every online node of the org on any live server, sorted by name."""
        merged: dict[str, str] = dict(self.view.org_nodes(org))
        merged.update(self.local.online_nodes(org))
        return sorted(merged.items())

    def state(self, org: str, node: str) -> str | None:
        phase = self.local.state(org, node)
        if phase is not None:
            return phase
        remote = self.view.get(org, node)
        return None if remote is None else remote.phase

    def end(self, org: str, node: str, reason: str) -> bool:
        return self.local.end(org, node, reason)

    def labels(self, org: str) -> dict[str, dict[str, str]]:
        """This server's nodes' labels (the others' come from the store's inventory)."""
        return self.local.labels(org)

"""The cluster's pure parts: the presence view, the outbox's batching, routing through
ClusterNodes, and the relay of agents' messages (docs/cluster.md)."""

from __future__ import annotations

from typing import Any

from pushjobs.protocol.messages import AckCommit
from pushjobs.server.cluster.nodes import ClusterNodes, Outbox
from pushjobs.server.cluster.presence import PresenceView
from pushjobs.server.cluster.relay import ClusterJobs, Inbox
from pushjobs.server.cluster.store import PresenceRow
from pushjobs.server.nodes.state import NodePhase


def row(node: str, server: str, incarnation: str = "i1", phase: str = "idle") -> PresenceRow:
    return PresenceRow("acme", node, server, incarnation, phase, "3.0")


def test_view_keeps_other_live_servers_nodes_and_names_those_that_left() -> None:
    view = PresenceView("a")
    assert (
        view.update(
            [row("n1", "b"), row("n2", "c"), row("n3", "a"), row("n4", "dead")], {"a", "b", "c"}
        )
        == []
    )
    assert sorted(view.org_nodes("acme")) == [("n1", NodePhase.IDLE), ("n2", NodePhase.IDLE)]
    first = view.get("acme", "n1")
    # a phase change keeps the object (the same node state); a new incarnation replaces it
    gone = view.update([row("n1", "b", phase="rehab"), row("n2", "c", "i2")], {"a", "b", "c"})
    assert gone == [("acme", "n2")]
    assert view.get("acme", "n1") is first and first is not None and first.phase == "rehab"
    # a server no longer alive: its nodes are gone
    assert view.update([row("n1", "b"), row("n2", "c", "i2")], {"a", "c"}) == [("acme", "n1")]
    assert view.forget("acme", "n2") and view.get("acme", "n2") is None
    assert not view.forget("acme", "n2")


def test_outbox_batches_one_entry_per_kind_of_command() -> None:
    outbox = Outbox()
    commit = {"job_id": "j1", "command": "x"}
    for node in ("n1", "n2", "n3"):
        outbox.command("b", "acme", node, "commit", commit)
    outbox.command("c", "acme", "n4", "commit", commit)
    outbox.rehab("b", "acme", "n5")
    outbox.rehab("b", "acme", "n6")
    assert outbox.wakeup.is_set()
    taken = outbox.take()
    assert taken == {
        "b": [
            {
                "k": "cmd",
                "org": "acme",
                "type": "commit",
                "fields": commit,
                "nodes": ["n1", "n2", "n3"],
            },
            {"k": "rehab", "org": "acme", "nodes": ["n5", "n6"]},
        ],
        "c": [{"k": "cmd", "org": "acme", "type": "commit", "fields": commit, "nodes": ["n4"]}],
    }
    assert outbox.take() == {} and not outbox.wakeup.is_set()


class FakeRegistry:
    """Stands in for this server's NodeRegistry: which nodes are local, what was done."""

    def __init__(self, local: set[str]) -> None:
        self.local = local
        self.sent: list[tuple[str, str]] = []
        self.rehabbed: list[str] = []

    def node_state(self, org: str, node: str) -> Any:
        return object() if node in self.local else None

    def state(self, org: str, node: str) -> str | None:
        return NodePhase.IDLE if node in self.local else None

    def online_nodes(self, org: str) -> list[tuple[str, str]]:
        return [(n, NodePhase.IDLE) for n in sorted(self.local)]

    def send_command(self, org: str, node: str, msg_type: str, fields: dict[str, Any]) -> None:
        self.sent.append((node, msg_type))

    def rehab(self, org: str, node: str) -> None:
        self.rehabbed.append(node)

    def watch(self, org: str, node: str, watcher: Any) -> None: ...
    def unwatch(self, org: str, node: str, watcher: Any) -> None: ...


class Sink:
    def __init__(self) -> None:
        self.changes: list[tuple[str, Any]] = []

    def changed(self, org: str, node: str, state: Any) -> None:
        self.changes.append((node, state))


class Watcher:
    def __init__(self) -> None:
        self.down: list[str] = []

    def node_down(self, org: str, node: str) -> None:
        self.down.append(node)


def cluster_nodes() -> tuple[ClusterNodes, FakeRegistry, PresenceView, Outbox]:
    registry = FakeRegistry({"local1"})
    view = PresenceView("a")
    view.update([row("far1", "b"), row("far2", "c", phase="rehab")], {"a", "b", "c"})
    outbox = Outbox()
    return ClusterNodes(registry, view, outbox, Sink()), registry, view, outbox  # type: ignore[arg-type]


def test_cluster_nodes_route_by_where_the_node_is() -> None:
    nodes, registry, _, outbox = cluster_nodes()
    fields = {"job_id": "j"}
    for node in ("local1", "far1", "nowhere"):
        nodes.send_command("acme", node, "run", fields)
        nodes.rehab("acme", node)
    assert registry.sent == [("local1", "run")] and registry.rehabbed == ["local1"]
    assert [(e["k"], e["nodes"]) for e in outbox.take()["b"]] == [
        ("cmd", ["far1"]),
        ("rehab", ["far1"]),
    ]
    assert nodes.online_nodes("acme") == [("far1", "idle"), ("far2", "rehab"), ("local1", "idle")]
    assert (nodes.state("acme", "far2"), nodes.state("acme", "nowhere")) == ("rehab", None)


def test_a_node_arriving_from_another_server_ends_its_old_state_first() -> None:
    nodes, _, view, _ = cluster_nodes()
    watcher = Watcher()
    nodes.watch("acme", "far1", watcher)
    nodes.changed("acme", "far1", object())  # it connected here
    assert watcher.down == ["far1"] and view.get("acme", "far1") is None
    nodes.changed("acme", "local1", object())  # a local node's change: nothing ends
    assert watcher.down == ["far1"]
    nodes.remote_gone([("acme", "far1")])
    assert watcher.down == ["far1", "far1"]
    nodes.unwatch("acme", "far1", watcher)
    nodes.remote_gone([("acme", "far1")])
    assert watcher.down == ["far1", "far1"]


class FakeManager:
    def __init__(self, live: set[str]) -> None:
        self.live = live
        self.messages: list[tuple[str, str]] = []

    def live_job(self, org: str, job_id: str) -> Any:
        return object() if job_id in self.live else None

    def is_live_member(self, org: str, node: str, job_id: str) -> bool:
        return job_id in self.live

    def on_job_message(self, org: str, node: str, msg: Any, version: str) -> bool:
        self.messages.append((node, msg.TYPE))
        return msg.job_id in self.live


def ack(node: str, job_id: str) -> AckCommit:
    return AckCommit(
        node=node, org="acme", timestamp="t", incarnation_id="i", sequence=1, job_id=job_id
    )


def test_replies_go_to_the_server_that_sent_the_commands() -> None:
    manager = FakeManager({"mine"})
    outbox = Outbox()
    jobs = ClusterJobs(manager, outbox)  # type: ignore[arg-type]
    registry = FakeRegistry({"n1"})
    inbox = Inbox(registry, jobs, outbox)  # type: ignore[arg-type]
    inbox.handle(
        "b",
        {
            "k": "cmd",
            "org": "acme",
            "type": "commit",
            "fields": {"job_id": "theirs"},
            "nodes": ["n1"],
        },
    )
    assert registry.sent == [("n1", "commit")]
    assert jobs.is_live_member("acme", "n1", "theirs") and jobs.is_live_member("acme", "n1", "mine")
    assert jobs.on_job_message("acme", "n1", ack("n1", "theirs"), "3.0")
    assert jobs.on_job_message("acme", "n1", ack("n1", "mine"), "3.0")
    assert manager.messages == [("n1", "ack_commit")]
    (relayed,) = outbox.take()["b"]
    assert (relayed["k"], relayed["node"], relayed["fields"]["job_id"]) == ("msg", "n1", "theirs")
    # on the coordinator: the relayed message reaches the manager; a job not live there any
    # more sends a rehab back to the node's server
    inbox.handle("c", relayed | {"fields": ack("n7", "gone").to_dict(), "node": "n7"})
    assert manager.messages[-1] == ("n7", "ack_commit")
    assert outbox.take() == {"c": [{"k": "rehab", "org": "acme", "nodes": ["n7"]}]}
    inbox.handle("c", {"k": "nonsense"})
    inbox.handle("c", {"k": "cmd"})  # malformed: logged and ignored
    inbox.handle("c", [1, 2])

"""Node states and the registry: every transition of lifecycle.md §2.2, through the pure objects.

The registry's socket is replaced by a list collecting the frames it would send; frames are
opened and verified with the real protocol library.
"""

from types import SimpleNamespace

import pytest

from pushjobs.protocol.envelope import open_envelope, verify_envelope_hmac
from pushjobs.protocol.signing import HMAC_SHA256
from pushjobs.server.config import TimingSettings
from pushjobs.server.nodes.liveness import LivenessParams
from pushjobs.server.nodes.registry import NodeRegistry
from pushjobs.server.nodes.sessions import SessionKeys
from pushjobs.server.nodes.state import NodeAction, NodePhase, NodeState

PARAMS = LivenessParams(interval=1.0, window=4.0, threshold=0.6)


def make_state(now=0.0, **kw):
    args = {
        "incarnation_id": "inc-1",
        "routing_id": b"r1",
        "version": "3.0",
        "liveness": PARAMS,
        "rehab_interval": 1.0,
        "now": now,
    }
    args.update(kw)
    return NodeState("acme", "web1", **args)


# -- NodeState ---------------------------------------------------------------------------------


def test_creation_enters_rehab_and_sends_abort():
    st = make_state()
    assert st.start(0.0) == [NodeAction.SEND_ABORT]
    assert st.phase == NodePhase.REHAB


def test_rehab_timer_resends_abort_every_interval():
    st = make_state()
    st.start(0.0)
    assert st.on_rehab_timer(0.5) == []
    assert st.on_rehab_timer(1.0) == [NodeAction.SEND_ABORT]
    assert st.on_rehab_timer(1.5) == []
    assert st.on_rehab_timer(2.0) == [NodeAction.SEND_ABORT]
    assert st.phase == NodePhase.REHAB


def test_aborted_in_rehab_goes_idle_and_cancels_timer():
    st = make_state()
    st.start(0.0)
    assert st.on_aborted() == []
    assert st.phase == NodePhase.IDLE
    assert st.on_rehab_timer(5.0) == []


def test_rehab_request_in_rehab_is_ignored():
    st = make_state()
    st.start(0.0)
    assert st.on_rehab_request(0.3) == []
    assert st.phase == NodePhase.REHAB
    assert st.on_rehab_timer(1.0) == [NodeAction.SEND_ABORT]  # timer not restarted by the request


def test_rehab_request_when_idle_sends_abort_and_starts_timer():
    st = make_state()
    st.start(0.0)
    st.on_aborted()
    assert st.on_rehab_request(10.0) == [NodeAction.SEND_ABORT]
    assert st.phase == NodePhase.REHAB
    assert st.on_rehab_timer(10.5) == []
    assert st.on_rehab_timer(11.0) == [NodeAction.SEND_ABORT]


def test_aborted_when_idle_stays_idle():
    st = make_state()
    st.start(0.0)
    st.on_aborted()
    assert st.on_aborted() == []
    assert st.phase == NodePhase.IDLE


def test_liveness_below_threshold_means_down():
    st = make_state()
    st.start(0.0)
    assert st.on_scan(1.5) == []
    assert st.on_scan(4.5) == [NodeAction.DOWN]


def test_late_heartbeat_reports_down():
    st = make_state()
    st.start(0.0)
    assert st.on_heartbeat(0.9) == []
    assert st.on_heartbeat(10.0) == [NodeAction.DOWN]


# -- NodeRegistry ------------------------------------------------------------------------------


class Watcher:
    def __init__(self, registry=None):
        self.downs: list[tuple[str, str]] = []
        self.registry = registry

    def node_down(self, org, node):
        self.downs.append((org, node))
        if self.registry is not None:  # jobs answer down with a rehab request
            self.registry.rehab(org, node)


class Sent(list):
    def __call__(self, frames):
        self.append(list(frames))
        return True


@pytest.fixture
def world():
    sessions = SessionKeys(lifetime=60)
    timing = TimingSettings(heartbeat_interval=1.0, rehab_interval=1.0)
    registry = NodeRegistry(timing=timing, sessions=sessions)
    sent = Sent()
    registry.attach(sent)
    for node in ("web1", "web2"):
        sessions.session_key("acme", node)
    return SimpleNamespace(registry=registry, sessions=sessions, sent=sent)


def opened(world, frames, node="web1"):
    routing_id, header, body = frames
    env = open_envelope(header, body, 1 << 20, HMAC_SHA256)
    assert verify_envelope_hmac(env, world.sessions.existing_key("acme", node))
    return routing_id, env


def sent_types(world):
    return [opened(world, f)[1].fields["type"] for f in world.sent]


def test_first_message_creates_rehab_state_and_sends_abort(world):
    st, created = world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    assert created and st.phase == NodePhase.REHAB
    assert world.registry.state("acme", "web1") == "rehab"
    assert world.registry.online_count() == 1
    routing_id, env = opened(world, world.sent[0])
    assert routing_id == b"r1"
    assert env.version == "3.0"
    assert env.fields["type"] == "abort"
    assert env.fields["sequence"] == 1
    assert isinstance(env.fields["timestamp"], str)


def test_commands_use_the_version_of_the_nodes_last_message(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "2.0", 0.0)
    _, env = opened(world, world.sent[0])
    assert env.version == "2.0"
    assert env.body.startswith(b"{")


def test_same_connection_again_sends_nothing(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    _, created = world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.1)
    assert not created
    assert len(world.sent) == 1


def test_new_routing_id_records_it_and_sends_ack_there(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    world.registry.aborted("acme", "web1")
    _, created = world.registry.accept("acme", "web1", "inc-1", b"r2", "3.0", 0.5)
    assert not created
    routing_id, env = opened(world, world.sent[-1])
    assert (routing_id, env.fields["type"], env.fields["sequence"]) == (b"r2", "ack", 2)
    assert world.registry.state("acme", "web1") == "idle"  # the running state continues
    world.registry.send_command("acme", "web1", "run", {"job_id": "j"})
    assert world.sent[-1][0] == b"r2"


def test_late_message_on_an_older_connection_keeps_the_route(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    world.registry.aborted("acme", "web1")
    world.registry.accept("acme", "web1", "inc-1", b"r2", "3.0", 0.5)
    sent = len(world.sent)
    _, created = world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.6, latest=False)
    assert not created and len(world.sent) == sent  # no `ack` to the old connection
    world.registry.send_command("acme", "web1", "run", {"job_id": "j"})
    assert world.sent[-1][0] == b"r2"


def test_commands_sent_are_counted_by_type(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    world.registry.aborted("acme", "web1")
    world.registry.send_command("acme", "web1", "commit", {"job_id": "j"})
    world.registry.send_command("acme", "web1", "run", {"job_id": "j"})
    world.registry.send_command("acme", "web1", "run", {"job_id": "k"})
    world.registry.send_command("acme", "offline", "run", {"job_id": "k"})  # not sent
    assert world.registry.sent_by_type == {"abort": 1, "commit": 1, "run": 2}


def test_rehab_timer_ticks_resend_abort(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    world.registry.tick_rehab(0.5)
    assert sent_types(world) == ["abort"]
    world.registry.tick_rehab(1.0)
    world.registry.tick_rehab(2.1)
    assert sent_types(world) == ["abort", "abort", "abort"]
    assert [opened(world, f)[1].fields["sequence"] for f in world.sent] == [1, 2, 3]


def test_aborted_moves_rehab_to_idle_and_stops_the_timer(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    world.registry.aborted("acme", "web1")
    assert world.registry.state("acme", "web1") == "idle"
    assert world.registry.rehab_count() == 0
    world.registry.tick_rehab(5.0)
    assert sent_types(world) == ["abort"]


def test_rehab_request_from_idle_and_ignored_in_rehab(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    world.registry.rehab("acme", "web1", 0.2)  # already in rehab: ignored
    assert sent_types(world) == ["abort"]
    world.registry.aborted("acme", "web1")
    world.registry.rehab("acme", "web1", 3.0)
    assert world.registry.state("acme", "web1") == "rehab"
    assert sent_types(world) == ["abort", "abort"]
    world.registry.tick_rehab(4.0)
    assert sent_types(world) == ["abort", "abort", "abort"]


def test_aborted_when_idle_stays_idle_without_sending(world):
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    world.registry.aborted("acme", "web1")
    world.registry.aborted("acme", "web1")
    assert world.registry.state("acme", "web1") == "idle"
    assert len(world.sent) == 1


def test_rehab_request_for_offline_node_is_ignored(world):
    world.registry.rehab("acme", "web1", 0.0)
    world.registry.send_command("acme", "web1", "commit", {"job_id": "j"})
    assert world.sent == []
    assert world.registry.state("acme", "web1") is None


def test_liveness_scan_ends_the_state_and_tells_watchers(world):
    reg = world.registry
    watcher = Watcher(reg)
    reg.watch("acme", "web1", watcher)
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.accept("acme", "web2", "inc-9", b"r9", "3.0", 0.0)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        reg.heartbeat("acme", "web2", t)
    assert reg.scan(1.5) == 0
    assert reg.scan(5.5) == 1  # web1 silent since 0.0
    assert reg.state("acme", "web1") is None
    assert reg.state("acme", "web2") == "rehab"
    assert watcher.downs == [("acme", "web1")]
    assert reg.online_nodes("acme") == [("web2", "rehab")]


def test_heartbeat_too_late_ends_the_state(world):
    reg = world.registry
    watcher = Watcher()
    reg.watch("acme", "web1", watcher)
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.heartbeat("acme", "web1", 30.0)
    assert reg.state("acme", "web1") is None
    assert watcher.downs == [("acme", "web1")]


def test_late_heartbeat_while_the_broker_catches_up_keeps_the_node(world):
    reg = world.registry
    watcher = Watcher()
    reg.watch("acme", "web1", watcher)
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.heartbeat("acme", "web1", 30.0, judge=False)
    assert reg.state("acme", "web1") is not None
    assert watcher.downs == []


def test_new_incarnation_ends_old_state_then_creates_a_new_one(world):
    reg = world.registry
    watcher = Watcher(reg)
    reg.watch("acme", "web1", watcher)
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.aborted("acme", "web1")
    st, created = reg.accept("acme", "web1", "inc-2", b"r2", "3.0", 1.0)
    assert created
    assert st.incarnation_id == "inc-2"
    assert watcher.downs == [("acme", "web1")]
    assert reg.state("acme", "web1") == "rehab"
    routing_id, env = opened(world, world.sent[-1])
    # The per-node command sequence survives state re-creation.
    assert (routing_id, env.fields["type"], env.fields["sequence"]) == (b"r2", "abort", 2)


def test_node_state_object_is_kept_across_reconnects_and_replaced_by_a_new_incarnation(world):
    # The job manager relies on this identity: a job created against one state object counts
    # the node down when, at its start, another object (or none) is there.
    reg = world.registry
    first, _ = reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    same, created = reg.accept("acme", "web1", "inc-1", b"r2", "3.0", 0.1)
    assert same is first and not created and reg.node_state("acme", "web1") is first
    other, created = reg.accept("acme", "web1", "inc-2", b"r2", "3.0", 0.2)
    assert created and other is not first and reg.node_state("acme", "web1") is other


def test_watchers_survive_offline_periods_and_can_unwatch(world):
    reg = world.registry
    a, b = Watcher(), Watcher()
    reg.watch("acme", "web1", a)
    reg.watch("acme", "web1", b)
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.accept("acme", "web1", "inc-2", b"r1", "3.0", 0.1)
    reg.unwatch("acme", "web1", b)
    reg.accept("acme", "web1", "inc-3", b"r1", "3.0", 0.2)
    assert a.downs == [("acme", "web1")] * 2
    assert b.downs == [("acme", "web1")]
    reg.unwatch("acme", "web1", a)
    assert reg.watcher_count("acme", "web1") == 0


def test_unhashable_watchers_are_fine(world):
    class Job(dict):  # dict subclasses are unhashable
        def node_down(self, org, node):
            self["down"] = node

    job = Job()
    reg = world.registry
    reg.watch("acme", "web1", job)
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.accept("acme", "web1", "inc-2", b"r1", "3.0", 0.0)
    assert job["down"] == "web1"


def test_a_failing_watcher_does_not_stop_the_others(world):
    class Broken:
        def node_down(self, org, node):
            raise RuntimeError("boom")

    reg = world.registry
    good = Watcher()
    reg.watch("acme", "web1", Broken())
    reg.watch("acme", "web1", good)
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.scan(100.0)
    assert good.downs == [("acme", "web1")]


def test_shutdown_ends_every_state_silently(world):
    reg = world.registry
    watcher = Watcher()
    reg.watch("acme", "web1", watcher)
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.shutdown()
    assert reg.online_count() == 0
    assert reg.state("acme", "web1") is None
    assert watcher.downs == []


def test_online_nodes_sorted_per_org(world):
    reg = world.registry
    world.sessions.session_key("other", "a")
    reg.accept("acme", "web2", "i", b"x", "3.0", 0.0)
    reg.accept("acme", "web1", "i", b"y", "3.0", 0.0)
    reg.accept("other", "a", "i", b"z", "3.0", 0.0)
    reg.aborted("acme", "web2")
    assert reg.online_nodes("acme") == [("web1", "rehab"), ("web2", "idle")]
    assert reg.online_nodes("other") == [("a", "rehab")]
    assert reg.online_nodes("none") == []
    assert reg.online_count() == 3


def test_send_command_fields_and_sequence(world):
    reg = world.registry
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    reg.send_command("acme", "web1", "commit", {"job_id": "j1", "command": "x", "capture": True})
    _, env = opened(world, world.sent[-1])
    assert env.fields["type"] == "commit"
    assert env.fields["sequence"] == 2
    assert env.fields["job_id"] == "j1"
    assert env.fields["capture"] is True
    assert reg.next_sequence("acme", "web1") == 3


def test_without_a_socket_nothing_is_sent(world):
    reg = world.registry
    reg.detach()
    reg.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    assert world.sent == []
    assert reg.state("acme", "web1") == "rehab"


# -- labels and the inventory -----------------------------------------------------------------


class Inventory:
    def __init__(self):
        self.events = []

    def seen(self, org, node):
        self.events.append(("seen", org, node))

    def labels(self, org, node, labels):
        self.events.append(("labels", org, node, labels))


def test_registry_keeps_labels_and_records_changes(world):
    inventory = Inventory()
    world.registry.record(inventory)
    world.registry.accept("acme", "web1", "inc-1", b"r1", "3.0", 0.0)
    world.registry.set_labels("acme", "web1", {"role": "web"})
    world.registry.set_labels("acme", "web1", {"role": "web"})  # unchanged: not recorded again
    world.registry.set_labels("acme", "web2", {"role": "db"})  # offline: ignored
    assert world.registry.labels("acme") == {"web1": {"role": "web"}}
    assert world.registry.node_state("acme", "web1").labels == {"role": "web"}
    world.registry.set_labels("acme", "web1", {"role": "db"})
    assert inventory.events == [
        ("seen", "acme", "web1"),
        ("labels", "acme", "web1", {"role": "web"}),
        ("labels", "acme", "web1", {"role": "db"}),
    ]
    world.registry.end("acme", "web1", "test")
    assert world.registry.labels("acme") == {}

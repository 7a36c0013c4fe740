"""Metrics read at scrape time from what the server counts anyway (no hot-path cost).

`LiveCollector` reads the node registry (nodes by org, status and availability), the job
manager (live jobs) and the broker's and registry's plain-int counters (ZeroMQ messages in
and out by type, dropped messages by reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pushjobs.server.nodes.state import NodePhase
from pushjobs.server.zeromq.inbound import DROP_KINDS


class ConnectedNode(Protocol):
    @property
    def org(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def phase(self) -> str: ...


class NodeSource(Protocol):
    """The node registry: every node connected to this server, and the commands it sent."""

    @property
    def sent_by_type(self) -> Mapping[str, int]: ...
    def states(self) -> Iterable[ConnectedNode]: ...


class JobSource(Protocol):
    def unfinished_count(self) -> int: ...


class BrokerCounts(Protocol):
    """The broker's `BrokerStats`."""

    @property
    def heartbeats_sent(self) -> int: ...
    def received_counts(self) -> Mapping[str, int]: ...
    @property
    def dropped_by_kind(self) -> Mapping[str, int]: ...


class LiveCollector(Collector):
    """Nodes, live jobs and ZeroMQ message counts, read when Prometheus scrapes."""

    def __init__(self, nodes: NodeSource, jobs: JobSource, broker: BrokerCounts) -> None:
        self._nodes = nodes
        self._jobs = jobs
        self._broker = broker
        # Nodes seen connected at an earlier scrape: those not connected now count as offline.
        self._seen: set[tuple[str, str]] = set()

    def collect(self) -> Iterator[Metric]:
        yield self._node_family()
        live = GaugeMetricFamily(
            "pushjobs_jobs_live", "Jobs of this server not yet in a final status."
        )
        live.add_metric([], self._jobs.unfinished_count())
        yield live
        received = CounterMetricFamily(
            "pushjobs_zeromq_messages_received",
            "Accepted command-socket messages from agents, by type.",
            labels=["type"],
        )
        for msg_type, count in sorted(self._broker.received_counts().items()):
            received.add_metric([msg_type], count)
        yield received
        sent = CounterMetricFamily(
            "pushjobs_zeromq_messages_sent",
            "Messages sent to agents, by type (heartbeat: published to all subscribers).",
            labels=["type"],
        )
        sent.add_metric(["heartbeat"], self._broker.heartbeats_sent)
        for msg_type, count in sorted(dict(self._nodes.sent_by_type).items()):
            sent.add_metric([msg_type], count)
        yield sent
        dropped = CounterMetricFamily(
            "pushjobs_zeromq_dropped_messages",
            "Command-socket messages dropped, by reason.",
            labels=["reason"],
        )
        counts = dict(self._broker.dropped_by_kind)
        for kind in DROP_KINDS:
            dropped.add_metric([kind], counts.get(kind, 0))
        yield dropped

    def _node_family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "pushjobs_nodes",
            "Nodes by organization, status (online: connected now; offline: seen connected "
            "earlier in this server's run) and availability (available: idle).",
            labels=["org", "status", "availability"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        online: set[tuple[str, str]] = set()
        for st in self._nodes.states():
            online.add((st.org, st.node))
            available = "available" if st.phase == NodePhase.IDLE else "unavailable"
            key = (st.org, "online", available)
            counts[key] = counts.get(key, 0) + 1
        self._seen |= online
        orgs = {org for org, _ in self._seen}
        for org, _ in self._seen - online:
            key = (org, "offline", "unavailable")
            counts[key] = counts.get(key, 0) + 1
        for org in orgs:  # every known org shows each series, 0 included (alerts need them)
            for key in ((org, "online", "available"), (org, "online", "unavailable")):
                counts.setdefault(key, 0)
            counts.setdefault((org, "offline", "unavailable"), 0)
        for key, count in sorted(counts.items()):
            family.add_metric(list(key), count)
        return family

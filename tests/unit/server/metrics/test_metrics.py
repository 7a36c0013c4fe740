"""The metrics' pieces: recorders, the scrape-time collector and the `/metrics` app."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pushjobs.server.metrics.collectors import LiveCollector
from pushjobs.server.metrics.endpoint import metrics_app
from pushjobs.server.metrics.instruments import ServerMetrics
from pushjobs.server.nodes.state import NodePhase
from pushjobs.server.zeromq.broker import BrokerStats
from pushjobs.server.zeromq.inbound import DROP_KINDS

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: ServerMetrics) -> Samples:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@dataclass
class Node:
    org: str
    node: str
    phase: str


@dataclass
class Nodes:
    connected: list[Node] = field(default_factory=list)
    sent_by_type: dict[str, int] = field(default_factory=dict)

    def states(self) -> list[Node]:
        return list(self.connected)


@dataclass
class Jobs:
    unfinished: int = 0

    def unfinished_count(self) -> int:
        return self.unfinished


@dataclass
class Stats:
    heartbeats_sent: int = 0
    received: dict[str, int] = field(default_factory=dict)
    dropped_by_kind: dict[str, int] = field(default_factory=dict)

    def received_counts(self) -> dict[str, int]:
        return self.received


def test_each_server_has_its_own_registry() -> None:
    one, two = ServerMetrics(), ServerMetrics()
    one.jobs.finished("complete", 3.0)
    assert samples(one)[("pushjobs_jobs_finished_total", (("status", "complete"),))] == 1
    assert samples(two)[("pushjobs_jobs_finished_total", (("status", "complete"),))] == 0
    assert ("process_cpu_seconds_total", ()) in samples(one)


def test_jobs_finished_by_status_and_duration() -> None:
    metrics = ServerMetrics()
    metrics.jobs.finished("complete", 4.0)
    metrics.jobs.finished("crashed", 700.0)
    metrics.jobs.finished("surprising", 1.0)
    got = samples(metrics)
    assert got[("pushjobs_jobs_finished_total", (("status", "crashed"),))] == 1
    assert got[("pushjobs_jobs_finished_total", (("status", "other"),))] == 1
    assert got[("pushjobs_job_duration_seconds_count", ())] == 3
    assert got[("pushjobs_job_duration_seconds_bucket", (("le", "5.0"),))] == 2


def test_http_labels_are_bounded() -> None:
    metrics = ServerMetrics()
    metrics.http.request("/organizations/{org}/pushy/jobs", "POST", 201, 0.01)
    metrics.http.request(None, "BREW", 404, 0.001)
    got = samples(metrics)
    route = "/organizations/{org}/pushy/jobs"
    key = (("method", "POST"), ("route", route), ("status", "201"))
    assert got[("pushjobs_http_requests_total", key)] == 1
    key = (("method", "other"), ("route", "unmatched"), ("status", "404"))
    assert got[("pushjobs_http_requests_total", key)] == 1
    metrics.http.stream_opened()
    metrics.http.stream_opened()
    metrics.http.stream_closed()
    assert samples(metrics)[("pushjobs_http_sse_streams_open", ())] == 1


def test_store_latency_by_operation() -> None:
    metrics = ServerMetrics()
    metrics.store.observe("get_job", 0.002)
    metrics.store.observe("get_job", 0.004)
    got = samples(metrics)
    assert got[("pushjobs_store_operation_duration_seconds_count", (("op", "get_job"),))] == 2


def test_live_collector_reads_nodes_jobs_and_message_counts() -> None:
    metrics = ServerMetrics()
    nodes = Nodes(
        [Node("acme", "a", NodePhase.IDLE), Node("acme", "b", NodePhase.REHAB)],
        {"commit": 2},
    )
    stats = Stats(7, {"heartbeat": 40, "ack_commit": 2}, {"bad_signature": 3})
    metrics.add(LiveCollector(nodes=nodes, jobs=Jobs(1), broker=stats))
    got = samples(metrics)

    def node_count(status: str, availability: str) -> float:
        key = (("availability", availability), ("org", "acme"), ("status", status))
        return got[("pushjobs_nodes", key)]

    assert node_count("online", "available") == 1
    assert node_count("online", "unavailable") == 1
    assert node_count("offline", "unavailable") == 0
    assert got[("pushjobs_jobs_live", ())] == 1
    assert got[("pushjobs_zeromq_messages_received_total", (("type", "heartbeat"),))] == 40
    assert got[("pushjobs_zeromq_messages_sent_total", (("type", "heartbeat"),))] == 7
    assert got[("pushjobs_zeromq_messages_sent_total", (("type", "commit"),))] == 2
    dropped = {
        labels[0][1]: v for (n, labels), v in got.items() if n.startswith("pushjobs_zeromq_dropped")
    }
    assert dropped == {kind: (3 if kind == "bad_signature" else 0) for kind in DROP_KINDS}

    nodes.connected.pop()  # b went offline
    got = samples(metrics)
    assert node_count("online", "unavailable") == 0
    assert node_count("offline", "unavailable") == 1
    nodes.connected.append(Node("acme", "b", NodePhase.IDLE))  # and came back
    got = samples(metrics)
    assert node_count("online", "available") == 2
    assert node_count("offline", "unavailable") == 0


async def test_the_app_serves_metrics_only_at_its_path() -> None:
    metrics = ServerMetrics()
    metrics.jobs.finished("complete", 1.0)
    transport = httpx.ASGITransport(app=metrics_app(metrics.registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert 'pushjobs_jobs_finished_total{status="complete"} 1.0' in response.text
        assert (await client.get("/")).status_code == 404
        assert (await client.post("/metrics")).status_code == 405


def test_broker_counts_heartbeats_as_the_rest_of_the_accepted() -> None:
    stats = BrokerStats(accepted=10, received_by_type={"ack_commit": 2, "succeeded": 1})
    stats.accepted_unusable = 3  # e.g. unknown types: counted as dropped, not by type
    assert stats.received_counts() == {"ack_commit": 2, "succeeded": 1, "heartbeat": 4}

"""The server's Prometheus instruments on one registry of its own (docs/operations.md §1).

`ServerMetrics` owns a `CollectorRegistry` (never prometheus_client's global one, so a test
process can run several servers) with the process and platform collectors, and hands each
part a narrow recorder: `JobMetrics` (the job manager), `HttpMetrics` (the HTTP app),
`StoreMetrics` (the async store). Recorders keep their label children bound, so recording is
a dict look-up and an add. What is already counted elsewhere (nodes, live jobs, ZeroMQ
messages) is read at scrape time by `collectors.LiveCollector`.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.registry import Collector

from pushjobs.protocol.vocabulary import FINAL_JOB_STATUSES

# Jobs run from seconds to hours (default run timeout 1 h).
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf"))
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))
STORE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    5,
    float("inf"),
)
# Methods outside this set (only ever 405s) share one label value.
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
UNMATCHED_ROUTE = "unmatched"  # requests no route matched (404s): not their raw path


class JobMetrics:
    """What the job manager records: each job that reaches its final status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        finished = Counter(
            "pushjobs_jobs_finished",
            "Jobs that reached a final status on this server, by status.",
            ["status"],
            registry=registry,
        )
        self._finished = {str(s): finished.labels(str(s)) for s in sorted(FINAL_JOB_STATUSES)}
        self._other = finished.labels("other")
        self._duration = Histogram(
            "pushjobs_job_duration_seconds",
            "Time from a job's creation to its final status.",
            buckets=JOB_DURATION_BUCKETS,
            registry=registry,
        )

    def finished(self, status: str, seconds: float) -> None:
        self._finished.get(status, self._other).inc()
        self._duration.observe(max(seconds, 0.0))


class HttpMetrics:
    """What the HTTP app records: each request (route template, method, status, latency) and
    the server-sent event streams open."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            "pushjobs_http_requests",
            "HTTP API requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "pushjobs_http_request_duration_seconds",
            "Time to produce an HTTP API response (for streams: until the stream starts).",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self._streams = Gauge(
            "pushjobs_http_sse_streams_open",
            "Server-sent event streams (job and organization feeds) open now.",
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        key = (route or UNMATCHED_ROUTE, method if method in HTTP_METHODS else "other", status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(key[0], key[1], str(status)),
                self._latency.labels(key[0], key[1]),
            )
        children[0].inc()
        children[1].observe(seconds)

    def stream_opened(self) -> None:
        self._streams.inc()

    def stream_closed(self) -> None:
        self._streams.dec()


class StoreMetrics:
    """What the async store records: each operation's latency, by operation name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._latency = Histogram(
            "pushjobs_store_operation_duration_seconds",
            "Time of one store operation in its worker thread, queueing included.",
            ["op"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self._children: dict[str, Histogram] = {}

    def observe(self, op: str, seconds: float) -> None:
        # `op` is a store method's name: a fixed set in the code, never request data.
        child = self._children.get(op)
        if child is None:
            child = self._children[op] = self._latency.labels(op)
        child.observe(seconds)


class ServerMetrics:
    """The registry and the recorders of one server process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.jobs = JobMetrics(self.registry)
        self.http = HttpMetrics(self.registry)
        self.store = StoreMetrics(self.registry)

    def add(self, collector: Collector) -> None:
        """Register a scrape-time collector (see `collectors.py`)."""
        self.registry.register(collector)

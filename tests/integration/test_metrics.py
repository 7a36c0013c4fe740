"""Metrics and retention end to end: a real server, real agents, real HTTP (operations.md §1, §2).

The module's server serves `/metrics` on a free port of 127.0.0.1 and prunes captured output
older than 1 s (keeping the jobs); a private server prunes whole jobs older than 2 s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import api
from tests.support.agents import AgentFactory, agent_factory_fixture  # noqa: F401
from tests.support.jobs import output, post_job
from tests.support.ports import free_ports
from tests.support.postgres import PostgresCluster
from tests.support.procs import started
from tests.support.server import ServerProcess
from tests.support.waits import wait_for

WHITELIST = """
"echo hi" = "echo hi"
"slow" = "sleep 5"
"hang" = "sleep 300"
"""
JOBS_ROUTE = "/organizations/{org}/pushy/jobs"
JOB_ROUTE = "/organizations/{org}/pushy/jobs/{id}"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    overrides: dict[str, dict[str, Any]] = {
        "metrics": {"bind": "127.0.0.1", "port": free_ports(1)[0]},
        "retention": {"output": "1s", "interval": "1s"},
    }
    with started(ServerProcess(tmp_path_factory.mktemp("metrics"), overrides)) as proc:
        yield proc


def scrape(server: ServerProcess) -> Samples:
    """Every sample of `GET /metrics`, parsed by prometheus_client's own parser."""
    response = httpx.get(server.state["metrics_url"], timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_counters_move_as_a_job_runs(agent_factory: AgentFactory, server: ServerProcess) -> None:
    agents = [agent_factory(whitelist=WHITELIST, wait=False) for _ in range(2)]
    for agent in agents:
        agent.wait_available()
    names = sorted(a.name for a in agents)
    before = scrape(server)
    assert (
        value(before, "pushjobs_nodes", org="testorg", status="online", availability="available")
        >= 2
    )

    job_id = post_job(server, "slow", names)
    wait_for(lambda: server.get(f"jobs/{job_id}").json()["status"] == "running", 20)
    during = scrape(server)
    assert value(during, "pushjobs_jobs_live") >= 1
    assert total(during, "pushjobs_zeromq_messages_sent_total", type="commit") >= (
        total(before, "pushjobs_zeromq_messages_sent_total", type="commit") + 2
    )
    assert total(during, "pushjobs_zeromq_messages_received_total", type="ack_commit") >= (
        total(before, "pushjobs_zeromq_messages_received_total", type="ack_commit") + 2
    )

    assert server.wait_job(job_id)["status"] == "complete"
    after = scrape(server)
    finished = "pushjobs_jobs_finished_total"
    assert (
        value(after, finished, status="complete") == value(before, finished, status="complete") + 1
    )
    assert value(after, "pushjobs_job_duration_seconds_count") >= 1
    assert total(after, "pushjobs_zeromq_messages_received_total", type="succeeded") >= (
        total(during, "pushjobs_zeromq_messages_received_total", type="succeeded") + 2
    )
    assert total(after, "pushjobs_zeromq_messages_received_total", type="heartbeat") > total(
        before, "pushjobs_zeromq_messages_received_total", type="heartbeat"
    )
    assert total(after, "pushjobs_zeromq_messages_sent_total", type="heartbeat") > 0
    # HTTP: counted by route template (never the raw path with the job id), with latency.
    post = value(
        after, "pushjobs_http_requests_total", route=JOBS_ROUTE, method="POST", status="201"
    )
    assert post >= 1
    gets = value(after, "pushjobs_http_requests_total", route=JOB_ROUTE, method="GET", status="200")
    assert gets >= 1
    assert not any(job_id in str(labels) for (_, labels) in after)
    assert (
        value(
            after, "pushjobs_http_request_duration_seconds_count", route=JOBS_ROUTE, method="POST"
        )
        >= 1
    )
    assert total(after, "pushjobs_store_operation_duration_seconds_count", op="create_job") >= 1
    assert value(after, "pushjobs_http_sse_streams_open") == 0
    assert ("pushjobs_zeromq_dropped_messages_total", (("reason", "bad_signature"),)) in after
    assert value(after, "process_resident_memory_bytes") > 0


def test_nodes_going_offline_are_counted(
    agent_factory: AgentFactory, server: ServerProcess
) -> None:
    agent = agent_factory(whitelist=WHITELIST)
    online = scrape(server)
    offline_before = value(
        online, "pushjobs_nodes", org="testorg", status="offline", availability="unavailable"
    )
    agent.stop()
    wait_for(lambda: server.node_state(agent.name)["status"] == "offline", 30)

    def counted() -> bool:
        now = scrape(server)
        key = {"org": "testorg", "status": "offline", "availability": "unavailable"}
        return value(now, "pushjobs_nodes", **key) >= offline_before + 1

    wait_for(counted, 10, interval=0.3, what="the node counted offline")


def test_event_streams_are_counted_while_open(server: ServerProcess) -> None:
    prepared = api.prepare(
        server.http_url,
        "GET",
        api.org_path(server.org, "job_status_feed"),
        user=server.admin_user,
        key=server.admin_key,
        headers={"Accept": "text/event-stream"},
    )
    with httpx.stream("GET", prepared.url, headers=prepared.headers, timeout=30) as feed:
        assert feed.status_code == 200
        assert value(scrape(server), "pushjobs_http_sse_streams_open") == 1
    wait_for(
        lambda: value(scrape(server), "pushjobs_http_sse_streams_open") == 0,
        10,
        interval=0.2,
        what="the stream counted closed",
    )


def test_old_output_is_pruned_and_the_job_kept(
    agent_factory: AgentFactory, server: ServerProcess
) -> None:
    agent = agent_factory(whitelist=WHITELIST)
    job_id = post_job(server, "echo hi", [agent.name], capture_output=True)
    assert server.wait_job(job_id)["status"] == "complete"
    wait_for(
        lambda: output(server, job_id, agent.name, "stdout") is None,
        20,
        interval=0.3,
        what="the output pruned",
    )
    job = server.get(f"jobs/{job_id}")
    assert job.status_code == 200 and job.json()["status"] == "complete"
    assert job.json()["nodes"] == {"succeeded": [agent.name]}
    assert "retention: removed the output of" in server.log_path.read_text()


def test_old_finished_jobs_are_pruned_and_running_ones_kept(
    agent_factory: AgentFactory, server_factory: Any
) -> None:
    private: ServerProcess = server_factory(retention={"jobs": "2s", "interval": "1s"})
    hang, quick = (agent_factory(whitelist=WHITELIST, on=private) for _ in range(2))
    running = post_job(private, "hang", [hang.name])
    wait_for(lambda: private.get(f"jobs/{running}").json()["status"] == "running", 20)
    finished = post_job(private, "echo hi", [quick.name], capture_output=True)
    assert private.wait_job(finished)["status"] == "complete"
    wait_for(
        lambda: private.get(f"jobs/{finished}").status_code == 404,
        30,
        interval=0.3,
        what="the finished job pruned",
    )
    # The pass that removed it had a cutoff after the running job's creation too.
    still = private.get(f"jobs/{running}")
    assert still.status_code == 200 and still.json()["status"] == "running"
    assert "retention: removed 1 job older than 2s (and their nodes, events, output)" in (
        private.log_path.read_text()
    )
    assert private.post(f"jobs/{running}/abort", body={}).status_code in (200, 202)


def test_on_postgresql_finished_jobs_are_pruned_and_counted(
    agent_factory: AgentFactory, server_factory: Any, postgres: PostgresCluster
) -> None:
    """A server of a (one-server) cluster: its batches select with SKIP LOCKED."""
    private: ServerProcess = server_factory(
        store={"backend": "postgresql", "url": postgres.new_database()},
        metrics={"port": free_ports(1)[0]},
        retention={"jobs": "2s", "interval": "1s"},
    )
    agent = agent_factory(whitelist=WHITELIST, on=private)
    job_id = post_job(private, "echo hi", [agent.name], capture_output=True)
    assert private.wait_job(job_id)["status"] == "complete"
    wait_for(
        lambda: private.get(f"jobs/{job_id}").status_code == 404,
        30,
        interval=0.3,
        what="the finished job pruned",
    )
    after = scrape(private)
    assert value(after, "pushjobs_jobs_finished_total", status="complete") == 1
    assert value(after, "pushjobs_jobs_live") == 0
    key = {"org": "testorg", "status": "online", "availability": "available"}
    assert value(after, "pushjobs_nodes", **key) == 1
    assert (
        total(after, "pushjobs_store_operation_duration_seconds_count", op="prune_jobs_batch") >= 1
    )


def test_metrics_are_off_by_default(server_factory: Any) -> None:
    plain: ServerProcess = server_factory()
    state = json.loads((plain.data_dir / "server.json").read_text())
    assert "metrics_url" not in state
    assert "metrics: serving" not in plain.log_path.read_text()

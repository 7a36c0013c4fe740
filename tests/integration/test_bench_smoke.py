"""Smoke tests of the swarm and cluster benchmarks (bench/swarm.py, bench/cluster.py), so that
they cannot rot.

Runs the real scripts — they start their own server processes on loopback ports and temp dirs:
the swarm with 20 simulated agents (a quarter on protocol 2.0) and one capture job, the cluster
bench with 3 servers × 5 nodes on the session's PostgreSQL — and checks that every figure was
measured and the jobs completed on every node. Timings are printed, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.postgres import PostgresCluster

SWARM = Path(__file__).resolve().parents[2] / "bench" / "swarm.py"
NODES = 20


def run_bench(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a bench script with this interpreter; it must exit 0."""
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def test_swarm_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = run_bench(
        SWARM,
        "--nodes", str(NODES),
        "--heartbeat-interval", "2",
        "--steady", "1",
        "--v2-fraction", "0.25",
        "--capture",
        "--output-chunks", "2",
        "--json", str(out),
        timeout=120,
    )  # fmt: skip
    text = result.stdout
    for label in (
        f"all {NODES} available in node_states",
        "steady heartbeat load",
        "job: POST → 201",
        "job: POST → quorum_succeeded",
        "job: POST → complete",
        "job: node counts",
        "server CPU, whole run",
        "server peak RSS",
        "transport limit (raw pyzmq, same N)",
        "job 1: wall / limit, server CPU / limit CPU",
    ):
        assert label in text, f"missing {label!r} in:\n{text}"

    figures = json.loads(out.read_text())
    assert figures["nodes"] == NODES
    # the transport limit was measured in the same run, and the job put as ratios to it
    assert figures["limit_wall_s"] > 0 and figures["limit_router_cpu_s"] >= 0
    assert figures["job1_limit_ratios"]["wall"] is not None
    assert figures["v2_nodes"] == NODES // 4
    assert figures["available_s"] is not None
    assert figures["available_after_steady"] == NODES
    assert figures["heartbeat_rate"] > 0
    assert figures["job1_status"] == "complete"
    assert figures["job1_nodes"] == {"succeeded": NODES}
    assert figures["job1_quorum_s"] is not None and figures["job1_complete_s"] is not None
    assert figures["job1_events"]["quorum_vote"] == NODES
    assert figures["job1_events"]["run_complete"] == NODES
    assert figures["server_cpu_s"] > 0
    assert figures["server_peak_rss_mb"] > 0
    # 3.0 agents streamed output chunks; every agent answered its first abort.
    assert figures["sent"]["output"] == 2 * (NODES - NODES // 4)
    assert figures["sent"]["aborted"] >= NODES
    assert figures["errors"] == {} and figures["send_failures"] == 0


CLUSTER = SWARM.parent / "cluster.py"
PER_SERVER = 5


def test_cluster_bench_runs_and_reports_every_figure(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    """bench/cluster.py with 3 servers × 5 nodes on the session's PostgreSQL (`--database-url`:
    it creates and drops a database per scenario), plus the SQLite baseline: every figure of
    the table is printed and both jobs completed on every node."""
    out = tmp_path / "cluster.json"
    result = run_bench(
        CLUSTER,
        "--nodes-per-server", str(PER_SERVER),
        "--heartbeat-interval", "2",
        "--settle", "0.5",
        "--sqlite",
        "--database-url", postgres.url(),
        "--json", str(out),
        timeout=180,
    )  # fmt: skip
    text = result.stdout
    for label in (
        "scenario",
        "wall s",
        "CPU A",
        "CPU B",
        "CPU C",
        "µs/node",
        "coord µs/node",
        "sims CPU",
        "PG CPU",
        "cluster wall / single wall =",
        "coordinator CPU / single CPU =",
        "single (PostgreSQL)",
        "single (SQLite)",
        "→ job_complete",
        "busiest simulator",
        "server C log:",
    ):
        assert label in text, f"missing {label!r} in:\n{text}"

    figures = json.loads(out.read_text())
    assert figures["ratios"]["wall"] is not None
    assert figures["ratios"]["coordinator_cpu"] is not None
    expected = {"cluster": 3 * PER_SERVER, "single (PostgreSQL)": PER_SERVER}
    expected["single (SQLite)"] = PER_SERVER
    for name, nodes in expected.items():
        scenario = figures["scenarios"][name]
        assert scenario["available"] == nodes, (name, scenario)
        (job,) = scenario["jobs"]
        assert job["status"] == "complete" and job["node_counts"] == {"succeeded": nodes}
        assert job["wall_s"] is not None and job["server_clock_s"] is not None
        servers = "ABC" if name == "cluster" else "A"
        assert set(job["server_cpu_s"]) == set(servers)
        assert all(v is not None for v in job["server_cpu_s"].values()), job
        assert all(v is not None for v in job["simulator_cpu_s"].values()), job
        assert job["us_per_node"] is not None
        for stats in job["simulators"].values():
            assert stats["errors"] == {} and stats["send_failures"] == 0
        assert set(scenario["logs"]) == set(servers)
    # the cluster's job reached every server's nodes: each simulator answered its run
    cluster_job = figures["scenarios"]["cluster"]["jobs"][0]
    assert all(s["sent"]["succeeded"] == PER_SERVER for s in cluster_job["simulators"].values())


def test_swarm_restart_storm_reports_both_sides_cpu(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = run_bench(
        SWARM,
        "--nodes", "10",
        "--heartbeat-interval", "1",
        "--steady", "1",
        "--jobs", "0",
        "--probe", "0",
        "--no-limit",
        "--restart",
        "--json", str(out),
        timeout=180,
    )  # fmt: skip
    assert "restart storm: CPU by side in that window" in result.stdout, result.stdout
    figures = json.loads(out.read_text())
    assert figures["storm_available_s"] is not None
    assert figures["storm_config_requests_per_node"] >= 1
    assert figures["storm_server_main_cpu_s"] >= 0 and figures["storm_swarm_cpu_s"] > 0


def test_zmq_memory_reports_fresh_and_warmed_figures(tmp_path: Path) -> None:
    out = tmp_path / "zmq.json"
    run_bench(
        SWARM.parent / "zmq_memory.py", "--nodes", "20", "--rounds", "70", "--json", str(out),
        timeout=180,
    )  # fmt: skip
    figures = json.loads(out.read_text())
    assert figures["nodes"] == 20 and figures["rounds"] == 70
    assert sorted(figures["by_round"]) == ["1", "64", "70"]
    assert figures["fresh_kb"] == figures["by_round"]["1"]
    assert figures["warmed_kb"] == figures["by_round"]["70"]

"""Smoke test of the swarm benchmark (bench/swarm.py), so that it cannot rot.

Runs the real script — it starts its own server process on loopback ports and a temp dir — with
20 simulated agents (a quarter on protocol 2.0) and one capture job, and checks that every
figure was measured and the job completed on every node. Timings are printed, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SWARM = Path(__file__).resolve().parents[2] / "bench" / "swarm.py"
NODES = 20


def test_swarm_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = subprocess.run(
        [
            sys.executable,
            str(SWARM),
            "--nodes", str(NODES),
            "--heartbeat-interval", "2",
            "--steady", "1",
            "--v2-fraction", "0.25",
            "--capture",
            "--output-chunks", "2",
            "--json", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
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
    ):
        assert label in text, f"missing {label!r} in:\n{text}"

    figures = json.loads(out.read_text())
    assert figures["nodes"] == NODES
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

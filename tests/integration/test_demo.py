"""The README's first command, `scripts/demo.sh`, end to end with the installed interpreter.

The demo starts a real server and three real agents on 127.0.0.1 and runs jobs through the
real CLI. These tests check what it shows the user (the outcome and exit code of each job) and
that every process it reports as started is gone afterwards — also when it is interrupted.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.procs import kill_if_running, pid_alive

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.sh"
STARTED = re.compile(r"started (.+?) \(pid (\d+)\)")
STOPPED = re.compile(r"stopped (.+?) \(pid (\d+), exit status (-?\d+)\)")


def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PUSHJOBS_DEMO_PYTHON"] = sys.executable
    env.pop("PUSHJOBS_DEMO_DIR", None)
    return env


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains `text` (the demo's directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def started_pids(output: str) -> dict[int, str]:
    return {int(pid): name for name, pid in STARTED.findall(output)}


def assert_all_gone(output: str, base: Path) -> dict[int, str]:
    pids = started_pids(output)
    assert len(pids) == 4, f"expected a server and three agents, saw {pids}\n{output}"
    deadline = time.monotonic() + 30  # exits are quick, but a loaded machine can take a while
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: name for pid, name in pids.items() if pid_alive(pid)}
    assert not left, f"demo left processes running: {left}"
    assert not processes_mentioning(str(base)), processes_mentioning(str(base))
    return pids


def test_demo_runs_every_job_and_stops_everything(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    result = subprocess.run(
        ["bash", str(DEMO), "--dir", str(base), "--no-color"],
        cwd=REPO,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout
    assert result.returncode == 0, f"demo failed ({result.returncode}):\n{output}\n{result.stderr}"

    # Job 1: output of every node, exit code 0.
    for node in ("web1", "web2", "web3"):
        assert f"hello from {node}" in output
        assert f"==> {node} stdout (succeeded, exit 0) <==" in output
    assert "(a line on stderr)" in output
    assert "--> [ok] exit code 0: the job completed and every node succeeded" in output
    # Job 2: web2 fails with exit status 3, the CLI exits 1.
    assert "==> web2 stdout (failed, exit 3) <==" in output
    assert "web2: simulated failure" in output
    assert "3 nodes: 2 succeeded, 1 failed" in output
    assert "--> [ok] exit code 1: the job ran to completion" in output
    assert re.search(r"^\s+web2\s+failed\s+3\s", output, re.M), "per-node table with exit 3"
    # Job 3: quorum failed because web4 is offline, the CLI exits 2.
    assert "Quorum_failed." in output
    assert "4 nodes: 1 unavailable, 3 was_ready" in output
    assert "--> [ok] exit code 2: quorum failed" in output
    # Job 4: 75% quorum met, web4 unavailable, exit 1.
    assert "4 nodes: 3 succeeded, 1 unavailable" in output
    # Job 5: a rollout one at a time; web2 goes first, fails, the others are skipped, exit 1.
    assert "--max-concurrency 1 --max-errors 0 --stream" in output
    assert "web2 [stderr]: web2: simulated failure" in output
    assert "3 nodes: 1 failed, 2 skipped" in output
    assert "2 nodes skipped: web1, web3" in output
    assert "--> [ok] exit code 1: the job stopped" in output
    assert "UNEXPECTED" not in output
    assert "every job ended as expected" in output

    # Every started process was reported stopped, with status 0 (graceful), and is gone.
    pids = assert_all_gone(output, base)
    stopped = {int(pid): int(code) for _, pid, code in STOPPED.findall(output)}
    assert set(stopped) == set(pids)
    assert all(code == 0 for code in stopped.values()), stopped

    # Where the data and logs are, and that they are there.
    assert f"directory      {base}" in output
    assert (base / "data" / "pushjobs.db").exists()
    assert (base / "logs" / "server.log").read_text()
    for node in ("web1", "web2", "web3"):
        assert (base / "logs" / f"agent-{node}.log").exists()


def test_demo_interrupted_leaves_nothing_running(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) while the agents connect: every started process is stopped."""
    base = tmp_path / "demo"
    proc = subprocess.Popen(
        ["bash", str(DEMO), "--dir", str(base), "--no-color"],
        cwd=REPO,
        env=demo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("started pushjobs-agent web3" in line for line in seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, "demo did not start its agents:\n" + "".join(seen)
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, "demo ended early:\n" + "".join(seen)
            seen.append(line)
        os.kill(proc.pid, signal.SIGINT)  # demo.sh exec'd python: this is the demo itself
        returncode = proc.wait(60)
    finally:
        kill_if_running(proc)
    reader.join(10)
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            break
        if line is not None:
            seen.append(line)
    output = "".join(seen)
    assert returncode == 130, output
    assert "demo interrupted (SIGINT); cleaning up" in output
    assert_all_gone(output, base)
    assert f"directory      {base}" in output


UI_COMMAND = re.compile(r"^    ui command: (.+)$", re.M)
STOP_COMMAND = re.compile(r"^    stop command: kill ((?:\d+ ?)+)$", re.M)
UI_URL = re.compile(r"^pushjobs ui: (http://127\.0\.0\.1:\d+/\?token=\S+)$")


def test_demo_keep_running_leaves_server_and_agents_for_the_printed_ui_command(
    tmp_path: Path,
) -> None:
    """--keep-running: the demo exits, its processes stay; the printed `pushjobs ui` command
    works as pasted (clean environment, another HOME) and the printed pids stop everything."""
    import shlex

    import httpx

    base = tmp_path / "demo"
    result = subprocess.run(
        ["bash", str(DEMO), "--dir", str(base), "--no-color", "--keep-running"],
        cwd=REPO,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout
    pids = started_pids(output)
    try:
        assert result.returncode == 0, f"demo failed ({result.returncode}):\n{output}"
        assert "every job ended as expected" in output
        assert not STOPPED.findall(output), "nothing is stopped with --keep-running"
        assert len(pids) == 4 and all(pid_alive(pid) for pid in pids), (pids, output)
        stop = STOP_COMMAND.search(output)
        assert stop, output
        assert {int(pid) for pid in stop.group(1).split()} == set(pids)
        ui_match = UI_COMMAND.search(output)
        assert ui_match, output

        env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHJOBS_", "CHEF_"))}
        env["HOME"] = str(tmp_path / "elsewhere")
        argv = [*shlex.split(ui_match.group(1)), "--no-browser", "--port", "0"]
        ui = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert ui.stdout is not None
            line = ui.stdout.readline().strip()
            url = UI_URL.match(line)
            assert url, (line, ui.poll())
            with httpx.Client(follow_redirects=True, timeout=30) as http:
                assert http.get(url.group(1)).status_code == 200  # the cookie is set
                base_url = url.group(1).split("/?", 1)[0]
                nodes = http.get(f"{base_url}/organizations/demo/pushy/node_states").json()
            assert {n["node_name"]: n["availability"] for n in nodes} == dict.fromkeys(
                ("web1", "web2", "web3"), "available"
            )
        finally:
            kill_if_running(ui)
    finally:
        for pid in pids:  # what a user does with the printed command: kill PID ...
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
    assert_all_gone(output, base)

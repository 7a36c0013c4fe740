"""Jobs end to end: real server, real agents, real processes (agent.md §8–§16).

Jobs are started over HTTP with real Chef signatures (`tests.support.jobs.post_job`).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.agents import AgentFactory
from tests.support.jobs import node_details, output, post_job
from tests.support.procs import kill_all, pids_alive, read_pids
from tests.support.server import ServerProcess
from tests.support.waits import wait_for

WHITELIST = r"""
"emit" = { run = "printf 'out\\001\\377 line\\n'; printf 'err\\000x' >&2", shell = true }
"fail" = { run = "echo failing; exit 3", shell = true }
"hang" = { run = "sleep 300 & echo $! > \"$PIDS\"; echo $$ >> \"$PIDS\"; wait", shell = true }
"whoami" = { run = "id -un; pwd; printf %s \"$MY_VAR\"; cat \"$CHEF_PUSH_JOB_FILE\"", shell = true }
"big" = { run = "head -c 1500000 /dev/urandom | tee \"$OUT\"", shell = true }
"deploy" = { pattern = '^deploy ([a-z]+)$', run = 'echo deploying \1' }
"""


def stored_output(server: ServerProcess, job_id: str, node: str, channel: str) -> bytes | None:
    """The channel's stored bytes once they stop changing (the server may buffer up to 1 s)."""
    seen: list[bytes | None] = []

    def stable() -> bool:
        seen.append(output(server, job_id, node, channel))
        return len(seen) >= 2 and seen[-1] is not None and seen[-1] == seen[-2]

    wait_for(stable, 10, interval=0.3, what=f"{channel} of {node}")
    return seen[-1]


def test_three_agents_succeed_with_identical_output(
    agent_factory: AgentFactory, server: ServerProcess
) -> None:
    agents = [agent_factory(whitelist=WHITELIST, wait=False) for _ in range(3)]
    for agent in agents:
        agent.wait_available()
    names = sorted(a.name for a in agents)
    job_id = post_job(server, "emit", names, capture_output=True)
    job = server.wait_job(job_id)
    assert job["status"] == "complete"
    assert job["nodes"] == {"succeeded": names}
    details = node_details(server, job_id)
    for name in names:
        assert stored_output(server, job_id, name, "stdout") == b"out\x01\xff line\n"
        assert stored_output(server, job_id, name, "stderr") == b"err\x00x"
        assert details[name]["exit_status"] == 0 and details[name]["signal"] is None
        assert details[name]["stdout_bytes"] == 11 and details[name]["stderr_bytes"] == 5
    for agent in agents:
        assert f"job {job_id}: reporting succeeded" in agent.log_text()


def test_exit_status_reported(agent_factory: AgentFactory, server: ServerProcess) -> None:
    agent = agent_factory(whitelist=WHITELIST)
    job_id = post_job(server, "fail", [agent.name], capture_output=True)
    job = server.wait_job(job_id)
    assert job["status"] == "complete" and job["nodes"] == {"failed": [agent.name]}
    detail = node_details(server, job_id)[agent.name]
    assert detail["exit_status"] == 3 and detail["signal"] is None
    assert stored_output(server, job_id, agent.name, "stdout") == b"failing\n"


def test_pattern_entry(agent_factory: AgentFactory, server: ServerProcess) -> None:
    agent = agent_factory(whitelist=WHITELIST)
    job_id = post_job(server, "deploy api", [agent.name], capture_output=True)
    assert server.wait_job(job_id)["nodes"] == {"succeeded": [agent.name]}
    assert stored_output(server, job_id, agent.name, "stdout") == b"deploying api\n"


@pytest.mark.parametrize(
    "command, options, reason",
    [
        ("rm -rf /", {}, "is not in the whitelist"),
        ("deploy api; reboot", {}, "is not in the whitelist"),
        ("emit", {"user": "no-such-user-pj"}, "user 'no-such-user-pj' does not exist"),
        ("emit", {"dir": "/no/such/dir"}, "does not exist or is not a directory"),
    ],
)
def test_refused_commits_are_nacked(
    agent_factory: AgentFactory, server: ServerProcess, command: str, options: dict, reason: str
) -> None:
    agent = agent_factory(whitelist=WHITELIST)
    job_id = post_job(server, command, [agent.name], **options)
    job = server.wait_job(job_id)
    assert job["status"] == "quorum_failed"
    assert job["nodes"] == {"nacked": [agent.name]}
    assert f"job {job_id}: commit refused: " in agent.log_text()
    assert reason in agent.log_text()


def test_busy_agent_nacks_a_second_job_and_abort_kills_the_group(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    agent = agent_factory(whitelist=WHITELIST)
    first = post_job(server, "hang", [agent.name], env={"PIDS": str(pid_file)})
    try:
        wait_for(lambda: len(read_pids(pid_file)) == 2, 15, what="job processes")
        pids = read_pids(pid_file)
        assert pids_alive(pids) == pids
        second = post_job(server, "emit", [agent.name])
        job = server.wait_job(second)
        assert job["nodes"] == {"nacked": [agent.name]}
        assert f"busy with job {first}" in agent.log_text()
        response = server.post(f"jobs/{first}/abort")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "aborted"
        wait_for(lambda: not pids_alive(pids), 15, what="job processes gone")
        wait_for(lambda: f"job {first}: reporting aborted" in agent.log_text(), 15, what="aborted")
        agent.wait_available()
        # the agent is free again
        third = post_job(server, "emit", [agent.name])
        assert server.wait_job(third)["nodes"] == {"succeeded": [agent.name]}
    finally:
        kill_all(read_pids(pid_file))


def test_run_timeout_ends_the_process(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    agent = agent_factory(whitelist=WHITELIST)
    # long enough for the agent to start the job and its children before the timer fires
    job_id = post_job(server, "hang", [agent.name], run_timeout=3, env={"PIDS": str(pid_file)})
    try:
        job = server.wait_job(job_id)
        assert job["status"] == "timed_out"
        assert job["nodes"] == {"timed_out": [agent.name]}
        wait_for(lambda: len(read_pids(pid_file)) == 2, 10, what="pid file")
        # the server's rehab abort makes the agent terminate the whole group
        wait_for(lambda: not pids_alive(read_pids(pid_file)), 20, what="job processes gone")
        agent.wait_available()
    finally:
        kill_all(read_pids(pid_file))


def test_user_dir_env_and_file(agent_factory: AgentFactory, server: ServerProcess) -> None:
    import pwd

    agent = agent_factory(whitelist=WHITELIST)
    me = pwd.getpwuid(os.geteuid()).pw_name
    job_id = post_job(
        server,
        "whoami",
        [agent.name],
        capture_output=True,
        user=me,
        dir="/",
        env={"MY_VAR": "value 1"},
        file="raw:file content\n",
    )
    assert server.wait_job(job_id)["nodes"] == {"succeeded": [agent.name]}
    assert stored_output(server, job_id, agent.name, "stdout") == (
        f"{me}\n/\nvalue 1file content\n".encode()
    )
    assert list(agent.file_dir.iterdir()) == []  # job file removed


def test_large_output_head_marker_tail(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    out_file = tmp_path / "produced"
    agent = agent_factory(whitelist=WHITELIST)
    job_id = post_job(server, "big", [agent.name], capture_output=True, env={"OUT": str(out_file)})
    assert server.wait_job(job_id)["nodes"] == {"succeeded": [agent.name]}
    produced = out_file.read_bytes()
    assert len(produced) == 1_500_000
    cap = 1_048_576  # the server's default max_output_bytes
    head, tail = cap - cap // 4, cap // 4
    omitted = len(produced) - head - tail

    def stored_matches() -> bool:
        stored = output(server, job_id, agent.name, "stdout")
        return stored is not None and stored.endswith(produced[-tail:])

    wait_for(stored_matches, 10, what="closed output")
    stored = output(server, job_id, agent.name, "stdout")
    assert stored is not None
    marker = f"[pushjobs: {omitted} bytes omitted]\n".encode()
    assert stored.startswith(produced[:head])
    middle = stored[head : len(stored) - tail]
    assert middle in (marker, b"\n" + marker)
    detail = node_details(server, job_id)[agent.name]
    assert detail["stdout_bytes"] == 1_500_000 and detail["truncated"] is True


def test_agent_killed_mid_job_node_crashed_job_completes(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    hang = WHITELIST.replace('"emit"', '"other"')
    doomed = agent_factory(
        whitelist=hang + '"work" = { run = "sleep 300 & echo $! > \\"$PIDS\\"; '
        'echo $$ >> \\"$PIDS\\"; wait", shell = true }\n'
    )
    healthy = agent_factory(whitelist='"work" = "true"\n')
    job_id = post_job(server, "work", [doomed.name, healthy.name], env={"PIDS": str(pid_file)})
    try:
        wait_for(lambda: len(read_pids(pid_file)) == 2, 15, what="job processes")
        doomed.kill()
        job = server.wait_job(job_id, timeout=40)
        assert job["status"] == "complete"
        assert job["nodes"] == {"crashed": [doomed.name], "succeeded": [healthy.name]}
    finally:
        kill_all(read_pids(pid_file))
    doomed.start()  # restarted agent: available again
    server.wait_node(doomed.name, "available")


def test_sigterm_mid_job_cleans_up_and_sends_nothing(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    agent = agent_factory(whitelist=WHITELIST)
    job_id = post_job(server, "hang", [agent.name], env={"PIDS": str(pid_file)}, file="raw:secret")
    try:
        wait_for(lambda: len(read_pids(pid_file)) == 2, 15, what="job processes")
        assert [p.name for p in agent.file_dir.iterdir()] == [f"job-{job_id}"]
        assert agent.stop(signal.SIGTERM) == 0
        # the group was killed; the kernel ends the processes a moment later under load
        wait_for(lambda: not pids_alive(read_pids(pid_file)), 15, what="job processes gone")
        assert list(agent.file_dir.iterdir()) == []
        assert f"job {job_id}: reporting" not in agent.log_text()
        job = server.wait_job(job_id, timeout=40)
        assert job["nodes"] == {"crashed": [agent.name]}
    finally:
        kill_all(read_pids(pid_file))


def test_sighup_reloads_the_whitelist(agent_factory: AgentFactory, server: ServerProcess) -> None:
    agent = agent_factory(whitelist='"true" = "true"\n')
    job_id = post_job(server, "emit", [agent.name])
    assert server.wait_job(job_id)["nodes"] == {"nacked": [agent.name]}
    agent.whitelist = WHITELIST
    agent.write_config()
    agent.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in agent.log_text(), 10, what="reload")
    agent.wait_available()
    job_id = post_job(server, "emit", [agent.name])
    assert server.wait_job(job_id)["nodes"] == {"succeeded": [agent.name]}

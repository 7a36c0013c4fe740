"""Real agents against a real server: start-up, exit codes, reconnects (agent.md §3, §6, §16)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.agents import AgentProcess
from tests.support.clients import unique_name
from tests.support.ports import free_ports
from tests.support.server import ServerProcess
from tests.support.waits import wait_for


def wait_exit(agent: AgentProcess, timeout: float = 45.0) -> int:
    assert agent.proc is not None
    try:
        return agent.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"agent did not exit:\n{agent.log_tail()}") from None


def test_connects_logs_start_up_and_stops_with_sigterm(agent_factory: Callable[..., Any]) -> None:
    agent = agent_factory()
    log = agent.log_text()
    for text in (
        f"[{agent.name}] node {agent.name}, org testorg, server {agent.server.org_url}",
        f"client key {agent.key_path}, incarnation ",
        "unencrypted fallback not allowed",
        f"config URL {agent.server.org_url}/pushy/config/{agent.name}?ccpk=",
        "connected: heartbeat tcp://127.0.0.1:",
        "(CURVE)",
    ):
        assert text in log, text
    assert agent.stop(signal.SIGTERM) == 0
    assert "received SIGTERM, shutting down" in agent.log_text()


def test_sigint_exits_0(agent_factory: Callable[..., Any]) -> None:
    agent = agent_factory()
    assert agent.stop(signal.SIGINT) == 0
    assert "received SIGINT, shutting down" in agent.log_text()


def test_sigusr1_reconfigures(agent_factory: Callable[..., Any], server: ServerProcess) -> None:
    agent = agent_factory()
    agent.send_signal(signal.SIGUSR1)
    wait_for(
        lambda: agent.log_text().count("connected: heartbeat") >= 2,
        15,
        what="second connection after SIGUSR1",
    )
    log = agent.log_text()
    assert "received SIGUSR1, reconfiguring" in log
    assert "reconfiguring: SIGUSR1" in log
    agent.wait_available()


def test_reconfigures_do_not_leak_file_descriptors(
    agent_factory: Callable[..., Any], server: ServerProcess
) -> None:
    """Every reconfigure replaces the sockets and their connection monitors; the old ones
    must release their descriptors (an agent reconfigures at every server restart and every
    config lifetime, for months)."""
    agent = agent_factory()

    def open_fds() -> int:
        return len(os.listdir(f"/proc/{agent.pid}/fd"))

    before = open_fds()
    rounds = 25
    for done in range(2, rounds + 2):
        agent.send_signal(signal.SIGUSR1)
        wait_for(
            lambda done=done: agent.log_text().count("connected: heartbeat") >= done,  # type: ignore[misc]
            15,
            what=f"connection {done}",
        )
    agent.wait_available()
    # libzmq closes sockets in its reaper thread: give it a moment, then count again.
    wait_for(lambda: open_fds() <= before + 6, 10, what=f"descriptors back near {before}")
    assert open_fds() <= before + 6, (before, open_fds())


def test_kill_9_then_restart_is_available_again(
    agent_factory: Callable[..., Any], server: ServerProcess
) -> None:
    agent = agent_factory()
    agent.kill()
    server.wait_node(agent.name, "offline", timeout=30)
    agent.start()  # waits until available
    assert server.node_state(agent.name)["availability"] == "available"


def test_wrong_key_is_a_permanent_error(
    agent_factory: Callable[..., Any], server: ServerProcess
) -> None:
    agent = agent_factory(start=False)
    _, other_key = server.make_client(unique_name("other"))
    agent.key_path = other_key
    agent.write_config()
    agent.start(wait=False)
    assert wait_exit(agent) == 2
    assert f"Invalid signature for user or client '{agent.name}'" in agent.log_text()


def test_unknown_org_is_a_permanent_error(agent_factory: Callable[..., Any]) -> None:
    agent = agent_factory(start=False)
    agent.extra["server_url"] = agent.server.http_url + "/organizations/no-such-org"
    agent.write_config()
    # the extra key overrides the first server_url line: TOML forbids duplicates, so rewrite
    text = agent.config_path.read_text().splitlines()
    agent.config_path.write_text("\n".join(text[1:]) + "\n")
    agent.start(wait=False)
    assert wait_exit(agent) == 2
    assert "organization 'no-such-org' does not exist." in agent.log_text()


def test_config_error_exit_2(agent_factory: Callable[..., Any]) -> None:
    agent = agent_factory(start=False)
    agent.config_path.write_text("colour = 1\n" + agent.config_path.read_text())
    agent.start(wait=False)
    assert wait_exit(agent) == 2
    assert "unknown configuration key 'colour'" in agent.log_text()


def test_server_without_curve(server_factory: Callable[..., ServerProcess], tmp_path: Any) -> None:
    plain = server_factory(zeromq={"disable_curve_encryption": True})
    refused = AgentProcess(plain, tmp_path / "a", unique_name())
    refused.start(wait=False)
    try:
        assert wait_exit(refused) == 2
        assert "server offers no CURVE key" in refused.log_text()
        allowed = AgentProcess(
            plain, tmp_path / "b", unique_name(), extra={"allow_unencrypted": True}
        )
        allowed.start()
        try:
            assert "(unencrypted)" in allowed.log_text()
        finally:
            assert allowed.stop() == 0
    finally:
        refused.stop()


@pytest.mark.slow
@pytest.mark.parametrize("fixed_zmq_ports", [True, False], ids=["same-ports", "new-ports"])
def test_server_restart_agents_reconnect(
    server_factory: Callable[..., ServerProcess], tmp_path: Any, fixed_zmq_ports: bool
) -> None:
    http_port, heartbeat_port, command_port = free_ports(3)
    zeromq: dict[str, Any] = {}
    timing: dict[str, Any] = {}
    if fixed_zmq_ports:
        zeromq = {"heartbeat_port": heartbeat_port, "command_port": command_port}
        # slow enough heartbeats that the agents cannot declare the server offline (4 missed
        # intervals, here ~20 s) during the restart, which can take several seconds on a loaded
        # machine: they must notice the new incarnation instead
        timing = {"heartbeat_interval": 5.0}
    srv = server_factory(http={"port": http_port}, zeromq=zeromq, timing=timing)
    agents = [AgentProcess(srv, tmp_path / f"n{i}", unique_name()) for i in range(2)]
    try:
        for agent in agents:
            agent.start()
        old = srv.incarnation_id
        srv.restart()
        new = srv.incarnation_id
        assert new != old
        for agent in agents:
            wait_for(
                lambda agent=agent: f"server incarnation {new}" in agent.log_text(),
                60,
                what=f"{agent.name} connected to the new server",
            )
            agent.wait_available(timeout=60)
            if fixed_zmq_ports:
                # heartbeats of the new incarnation arrive on the old SUB connection
                assert f"server restarted (incarnation {new})" in agent.log_text()
            else:
                assert "considering it offline" in agent.log_text()
    finally:
        for agent in agents:
            agent.stop()


@pytest.mark.slow
def test_start_before_the_server_retries(
    server_factory: Callable[..., ServerProcess], tmp_path: Any
) -> None:
    (port,) = free_ports(1)
    srv = server_factory(start=False, http={"port": port})
    srv.state = {"http_url": f"http://127.0.0.1:{port}"}
    agent = AgentProcess(srv, tmp_path / "n", unique_name())
    agent.start(wait=False)
    try:
        wait_for(lambda: "config fetch failed" in agent.log_text(), 15, what="a failed first fetch")
        assert agent.proc is not None and agent.proc.poll() is None
        srv.start()
        agent.wait_available(timeout=40)
    finally:
        agent.stop()


@pytest.mark.slow
def test_lifetime_reconfigure_waits_for_a_running_job(
    server_factory: Callable[..., ServerProcess], tmp_path: Any
) -> None:
    srv = server_factory(timing={"config_lifetime": 2})
    agent = AgentProcess(srv, tmp_path / "n", unique_name(), whitelist='"nap" = "sleep 5"\n')
    try:
        agent.start()
        wait_for(
            lambda: "reconfiguring: config lifetime expired" in agent.log_text(),
            15,
            what="periodic reconfigure",
        )
        response = srv.post("jobs", body={"command": "nap", "nodes": [agent.name]})
        assert response.status_code == 201, response.text
        job_id = response.json()["uri"].rsplit("/", 1)[1]
        wait_for(
            lambda: f"job {job_id}: job in flight, delaying reconfigure" in agent.log_text(),
            15,
            what="delayed reconfigure",
        )
        job = srv.wait_job(job_id, timeout=30)
        assert job["nodes"] == {"succeeded": [agent.name]}
        log = agent.log_text()
        during = log[
            log.index(f"job {job_id}: process started") : log.index(
                f"job {job_id}: reporting succeeded"
            )
        ]
        assert "reconfiguring:" not in during  # nothing reconnected while the job ran
        count = log.count("reconfiguring: config lifetime expired")
        wait_for(
            lambda: agent.log_text().count("reconfiguring: config lifetime expired") > count,
            15,
            what="reconfigure after the job",
        )
    finally:
        agent.stop()

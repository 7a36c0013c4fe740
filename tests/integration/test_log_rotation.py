"""logrotate without `copytruncate`: the server and the agent write their `log_file` anew after
the file was renamed away, and SIGHUP (logrotate's `postrotate`) reopens it. Real server and
agent processes, signals sent by pid."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.support.agents import AgentFactory
from tests.support.server import ServerProcess
from tests.support.waits import wait_for


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _wait_line(path: Path, needle: str, alive: Callable[[], bool]) -> None:
    def found() -> bool:
        assert alive(), f"the process exited; {path}:\n{_text(path)[-2000:]}"
        return needle in _text(path)

    wait_for(found, 30, interval=0.1, what=f"{needle!r} in {path}")


def test_server_log_file_survives_rotation_and_sighup(
    server_factory: Callable[..., ServerProcess],
    agent_factory: AgentFactory,
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "logs" / "server.log"
    log_file.parent.mkdir()
    srv = server_factory(**{"": {"log_file": str(log_file), "log_level": "info"}})
    assert srv.proc is not None
    proc = srv.proc

    def alive() -> bool:
        return proc.poll() is None

    _wait_line(log_file, "server ready", alive)

    # logrotate renames the file; the next line goes to a new file at the configured path
    log_file.rename(tmp_path / "logs" / "server.log.1")
    agent = agent_factory(on=srv)
    _wait_line(log_file, f"/{agent.name!r} online", alive)
    assert "server ready" not in _text(log_file)

    # postrotate: SIGHUP reopens the file; the server keeps running and answering
    log_file.rename(tmp_path / "logs" / "server.log.2")
    os.kill(proc.pid, signal.SIGHUP)
    _wait_line(log_file, "received SIGHUP", alive)
    assert srv.node_state(agent.name)["availability"] == "available"
    agent.stop()
    _wait_line(log_file, f"/{agent.name!r} down", alive)
    assert "online" not in _text(log_file)  # nothing earlier was copied over


def test_agent_log_file_survives_rotation_and_sighup(
    agent_factory: AgentFactory, tmp_path: Path
) -> None:
    log_file = tmp_path / "agent-logs" / "agent.log"
    log_file.parent.mkdir()
    agent = agent_factory(extra={"log_file": str(log_file)})

    def alive() -> bool:
        return agent.proc is not None and agent.proc.poll() is None

    assert _text(log_file)

    # renamed away: the next line (SIGUSR1 = reconnect) goes to a new file, no signal needed
    log_file.rename(log_file.with_name("agent.log.1"))
    agent.send_signal(signal.SIGUSR1)
    _wait_line(log_file, "received SIGUSR1", alive)
    agent.wait_available()

    # SIGHUP re-reads agent.toml and reopens the log file
    log_file.rename(log_file.with_name("agent.log.2"))
    agent.send_signal(signal.SIGHUP)
    _wait_line(log_file, "config reloaded", alive)
    agent.wait_available()
    assert "received SIGUSR1" not in _text(log_file)

"""Run real `pushjobs-agent` processes against a test server.

`AgentProcess` writes an agent TOML config (temp file_dir and lock file, short kill_grace) and
starts `python -m pushjobs.agent.main` (`$PUSHJOBS_AGENT_PYTHON` picks another interpreter,
see `agent_python`); it is stopped by its own pid. Fixture `agent_factory` (needs the `server`
fixture of `tests.support.server`; import `agent_factory_fixture` into a test module or
conftest to make it available) makes and registers agents:

    agent = agent_factory("node-1", whitelist='"hi" = "echo hi"')   # started, connected

Jobs for them are posted with `tests.support.jobs.post_job`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support.clients import unique_name
from tests.support.procs import spawn_logged, stop_process
from tests.support.server import ServerProcess
from tests.support.toml import toml_lines
from tests.support.waits import wait_for

DEFAULT_WHITELIST = """
"echo hi" = "echo hi"
"true" = "true"
"""


def agent_python() -> str:
    """The interpreter agents run on: `$PUSHJOBS_AGENT_PYTHON` when set, else this one.

    scripts/test.sh points it at a Python 3.9 or 3.13 venv with pushjobs installed, so the
    agent integration tests run real agents on that version against this (3.11+) server.
    """
    return os.environ.get("PUSHJOBS_AGENT_PYTHON") or sys.executable


def agent_command(config_path: Path, *args: str) -> list[str]:
    """`pushjobs-agent -c <config> ARGS...` with `agent_python()`."""
    return [agent_python(), "-m", "pushjobs.agent.main", "-c", str(config_path), *args]


def write_agent_config(
    path: Path,
    *,
    server_url: str,
    node_name: str,
    client_key: Path,
    file_dir: Path,
    lock_file: Path,
    whitelist: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write an agent.toml; `whitelist` is the body of the `[whitelist]` table (TOML text)."""
    extra = dict(extra or {})
    # a cluster's agent lists every server instead (`server_urls` in `extra`)
    server = {} if "server_urls" in extra else {"server_url": server_url}
    lines = toml_lines(
        {
            **server,
            "node_name": node_name,
            "client_key": str(client_key),
            "file_dir": str(file_dir),
            "lock_file": str(lock_file),
            "kill_grace": 1.0,
            "log_level": "debug",
        }
    )
    # a table value (e.g. `labels`) becomes a `[table]` after the top-level keys
    tables = {key: value for key, value in extra.items() if isinstance(value, dict)}
    lines += toml_lines({key: value for key, value in extra.items() if key not in tables})
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines += toml_lines(table)
    lines.append("\n[whitelist]")
    lines.append(whitelist.strip())
    path.write_text("\n".join(lines) + "\n")


RECENT_AGENTS = 4


class AgentProcess:
    """One real agent process for node `name`."""

    started_recently: ClassVar[list[AgentProcess]] = []  # log tails for a failing test

    def __init__(
        self,
        server: ServerProcess,
        base_dir: Path,
        name: str,
        *,
        whitelist: str = DEFAULT_WHITELIST,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.name = name
        self.dir = base_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file_dir = self.dir / "files"
        self.lock_file = self.dir / "chef-client.pid"
        self.log_path = self.dir / "agent.log"
        self.config_path = self.dir / "agent.toml"
        _, self.key_path = server.make_client(name)
        self.whitelist = whitelist
        self.extra = dict(extra or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    def write_config(self) -> None:
        write_agent_config(
            self.config_path,
            server_url=self.server.org_url,
            node_name=self.name,
            client_key=self.key_path,
            file_dir=self.file_dir,
            lock_file=self.lock_file,
            whitelist=self.whitelist,
            extra=self.extra,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True, timeout: float = 45.0) -> None:
        """Start the agent; with `wait`, until the server lists the node as available."""
        assert self.proc is None or self.proc.poll() is not None, "agent already running"
        self.proc = spawn_logged(agent_command(self.config_path), self.log_path, cwd=self.dir)
        AgentProcess.started_recently.append(self)
        del AgentProcess.started_recently[:-RECENT_AGENTS]
        if wait:
            self.wait_available(timeout)

    def wait_available(self, timeout: float = 45.0) -> None:
        def available() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"agent {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            return self.server.node_state(self.name)["availability"] == "available"

        wait_for(available, timeout, interval=0.1, what=f"agent {self.name} available")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the agent by pid and wait for it; return its exit status."""
        if self.proc is None:
            return None
        return stop_process(self.proc, sig, timeout)

    def kill(self) -> None:
        """SIGKILL (a crash): no clean-up, no goodbye."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


AgentFactory = Callable[..., AgentProcess]
"""The type of the `agent_factory` fixture."""


@pytest.fixture(name="agent_factory")
def agent_factory_fixture(server: ServerProcess, tmp_path: Path) -> Iterator[AgentFactory]:
    """`agent_factory(name=None, whitelist=..., extra=..., start=True, wait=True)` → an agent,
    started (and, with `wait`, available on the server); all are stopped by pid afterwards."""
    made: list[AgentProcess] = []

    def make(
        name: str | None = None,
        *,
        whitelist: str = DEFAULT_WHITELIST,
        extra: dict[str, Any] | None = None,
        start: bool = True,
        wait: bool = True,
        on: ServerProcess | None = None,
    ) -> AgentProcess:
        name = name or unique_name()
        agent = AgentProcess(on or server, tmp_path / name, name, whitelist=whitelist, extra=extra)
        made.append(agent)
        if start:
            agent.start(wait=wait)
        return agent

    try:
        yield make
    finally:
        for agent in made:
            agent.stop()


@contextlib.contextmanager
def running_agents(
    server: ServerProcess,
    base: Path,
    prefix: str,
    count: int,
    *,
    whitelist: str = DEFAULT_WHITELIST,
    extra: dict[str, Any] | None = None,
) -> Iterator[list[AgentProcess]]:
    """`count` agents named `<prefix><i>-…`, started together and all available before the
    block (sorted by name, the order jobs list them), stopped after it."""
    agents = [
        AgentProcess(
            server, base / f"a{i}", unique_name(f"{prefix}{i}"), whitelist=whitelist, extra=extra
        )
        for i in range(count)
    ]
    try:
        for agent in agents:
            agent.start(wait=False)
        for agent in agents:
            agent.wait_available()
        yield sorted(agents, key=lambda agent: agent.name)
    finally:
        for agent in agents:
            agent.stop()

"""Run real `pushjobs-agent` processes against a test server.

`AgentProcess` writes an agent TOML config (temp file_dir and lock file, short kill_grace) and
starts `python -m pushjobs.agent.main`; it is stopped by its own pid. Fixture `agent_factory`
(needs the `server` fixture of `tests.support.server`; import `agent_factory_fixture` into a
test module or conftest to make it available) makes and registers agents:

    agent = agent_factory("node-1", whitelist='"hi" = "echo hi"')   # started, connected

`post_job` / `job_nodes` are thin helpers over Chef-signed HTTP (`ServerProcess.request`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess, wait_for

DEFAULT_WHITELIST = """
"echo hi" = "echo hi"
"true" = "true"
"""


def toml_string(value: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML escapes for these characters)."""
    return json.dumps(value)


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
    lines = [
        f"server_url = {toml_string(server_url)}",
        f"node_name = {toml_string(node_name)}",
        f"client_key = {toml_string(str(client_key))}",
        f"file_dir = {toml_string(str(file_dir))}",
        f"lock_file = {toml_string(str(lock_file))}",
        "kill_grace = 1.0",
        'log_level = "debug"',
    ]
    for key, value in (extra or {}).items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value!r}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(toml_string(v) for v in value)}]")
        else:
            lines.append(f"{key} = {toml_string(str(value))}")
    lines.append("\n[whitelist]")
    lines.append(whitelist.strip())
    path.write_text("\n".join(lines) + "\n")


class AgentProcess:
    """One real agent process for node `name`."""

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
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pushjobs.agent.main", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        log.close()
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
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

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


def unique_name(prefix: str = "node") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(name="agent_factory")
def agent_factory_fixture(server: ServerProcess, tmp_path: Path) -> Iterator[Any]:
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


def post_job(server: ServerProcess, command: str, nodes: list[str], **options: Any) -> str:
    """POST a job with a real Chef 1.3 signature (admin user); return its id."""
    response = server.post("jobs", body={"command": command, "nodes": nodes, **options})
    assert response.status_code == 201, response.text
    return response.json()["uri"].rsplit("/", 1)[1]


def job_nodes(server: ServerProcess, job_id: str) -> dict[str, Any]:
    """`GET jobs/{id}/nodes` (extension): per-node detail incl. exit status."""
    response = server.get(f"jobs/{job_id}/nodes")
    assert response.status_code == 200, response.text
    return response.json()


def output(server: ServerProcess, job_id: str, node: str, channel: str) -> bytes | None:
    """The stored bytes of one output channel, or None when there is none (404)."""
    response = server.get(
        f"jobs/{job_id}/output/{node}/{channel}", headers={"Accept": "application/octet-stream"}
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.content


def pids_alive(pids: list[int]) -> list[int]:
    """The pids of `pids` that still exist (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive

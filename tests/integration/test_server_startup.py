"""`pushjobs-server run` start-up failures are one clear line, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, server_command, write_server_config


def _run(proc: ServerProcess) -> subprocess.CompletedProcess[str]:
    cmd = server_command(proc.config_path, "run")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def busy_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("section,key", [("http", "port"), ("zeromq", "command_port")])
def test_port_in_use_is_reported(tmp_path: Path, busy_port: int, section: str, key: str) -> None:
    proc = ServerProcess(tmp_path)
    write_server_config(proc.config_path, proc.data_dir, {section: {key: busy_port}})
    result = _run(proc)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot bind "), result.stderr
    assert f":{busy_port}: " in last
    assert "Traceback" not in result.stderr
    assert not (proc.data_dir / "server.json").exists()


def test_metrics_port_in_use_is_reported(tmp_path: Path, busy_port: int) -> None:
    proc = ServerProcess(tmp_path)
    write_server_config(proc.config_path, proc.data_dir, {"metrics": {"port": busy_port}})
    result = _run(proc)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot bind 127.0.0.1:{busy_port} (metrics): "), result.stderr
    assert "Traceback" not in result.stderr

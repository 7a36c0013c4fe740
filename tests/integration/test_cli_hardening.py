"""The `pushjobs` CLI with untrusted text and loose key files, against a real server.

Security issue 15, F10: rich markup in job data is printed literally (also in the rich table a
terminal gets), and a private key file open to group or others draws a one-line warning.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cli import cli_command, cli_env, make_cli_home, run_cli
from tests.support.clients import unique_name
from tests.support.jobs import post_job
from tests.support.procs import kill_if_running
from tests.support.server import ServerProcess


def terminal_env(home: Path, **extra: str) -> dict[str, str]:
    return cli_env(home, TERM="xterm-256color", COLUMNS="200", **extra)


@pytest.fixture(scope="module")
def home(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cli_home(server, tmp_path_factory.mktemp("cli-home"))


def pushjobs(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout and stderr on pipes (plain output)."""
    return run_cli(*args, env=terminal_env(home))


def pushjobs_on_tty(home: Path, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """The CLI with stdout on a pseudo-terminal (rich tables); returns (code, stdout, stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cli_command(*args),
        env=terminal_env(home),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        kill_if_running(proc)
        os.close(master)
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.stderr.close()
    out = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return code, out, err


MARKUP_COMMANDS = ("cmd [/x]", "[bold]loud[/bold]", "[link=http://evil]x[/link] [red")


def test_markup_in_job_data_is_printed_literally(server: ServerProcess, home: Path) -> None:
    node = unique_name("markup-[/x]")
    ids = [post_job(server, command, [node]) for command in MARKUP_COMMANDS]
    for job_id in ids:
        server.wait_job(job_id)  # the node does not exist: quorum_failed

    code, out, err = pushjobs_on_tty(home, "job", "list")
    assert code == 0, (out, err)
    assert "Traceback" not in err and err == "", err
    assert "\x1b[" in out  # the rich table of a terminal was used
    for command in MARKUP_COMMANDS:
        assert command in out, out

    for job_id, command in zip(ids, MARKUP_COMMANDS, strict=True):
        code, out, err = pushjobs_on_tty(home, "job", "status", job_id, "--nodes")
        assert code == 0 and err == "", (out, err)
        assert f"command:     {command}" in out, out
        assert node in out, out  # in the node list and in the rich node table

    r = pushjobs(home, "job", "list")  # plain columns on a pipe
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for command in MARKUP_COMMANDS:
        assert command in r.stdout


def test_warns_about_a_key_file_open_to_others(
    server: ServerProcess, home: Path, tmp_path: Path
) -> None:
    key = tmp_path / "admin.pem"
    shutil.copyfile(server.admin_key_path, key)
    key.chmod(0o644)
    r = pushjobs(home, "node", "status", "-k", str(key))
    assert r.returncode == 0, r.stderr
    assert r.stderr == (
        f"WARNING: private key file {key} is accessible by group or others (mode 0644); "
        f"restrict it with: chmod 600 {key}\n"
    )
    key.chmod(0o600)
    r = pushjobs(home, "node", "status", "-k", str(key))
    assert r.returncode == 0 and r.stderr == "", r.stderr

"""Run the `pushjobs` CLI in tests: a HOME with a config for the test server, a clean env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.server import ServerProcess
from tests.support.toml import toml_document


def make_cli_home(server: ServerProcess, home: Path, *, server_url: str | None = None) -> Path:
    """Write `~/.config/pushjobs/config.toml` under `home` pointing at `server` as its admin
    (at `server_url` instead of the server's org URL when given, e.g. through a relay)."""
    cfg = home / ".config" / "pushjobs" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "server_url": server_url or server.org_url,
        "user": server.admin_user,
        "key": str(server.admin_key_path),
    }
    cfg.write_text(toml_document({}, {"default": profile}))
    return home


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without pushjobs/Chef settings, with HOME = `home`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PUSHJOBS_", "CHEF_")) and k != "NO_COLOR"
    }
    env.update(HOME=str(home), **extra)
    return env


def cli_command(*args: str) -> list[str]:
    """`pushjobs ARGS...` with this interpreter."""
    return [sys.executable, "-m", "pushjobs.cli", *args]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end with stdout and stderr on pipes (plain display)."""
    return subprocess.run(
        cli_command(*args), env=env, capture_output=True, text=True, timeout=timeout
    )


def popen_cli(*args: str, env: dict[str, str], **options: Any) -> subprocess.Popen[str]:
    """Start the CLI with stdout and stderr on text pipes (`options` go to `Popen`)."""
    return subprocess.Popen(
        cli_command(*args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )

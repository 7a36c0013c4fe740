"""Run the `pushjobs` CLI in tests: a HOME with a config for the test server, a clean env."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.server import ServerProcess


def make_cli_home(server: ServerProcess, home: Path) -> Path:
    """Write `~/.config/pushjobs/config.toml` under `home` pointing at `server` as its admin."""
    cfg = home / ".config" / "pushjobs" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(
        "[default]\n"
        f'server_url = "{server.org_url}"\n'
        f'user = "{server.admin_user}"\n'
        f'key = "{server.admin_key_path}"\n'
    )
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

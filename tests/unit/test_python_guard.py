"""Below Python 3.11, `pushjobs-server` and `pushjobs` stop with a plain message, exit status 1.

Only the agent supports older versions. This runs for real under Python 3.9 and 3.10 (scripts/
test.sh runs it with the agent's tests under 3.9); on 3.11+ it is skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 11), reason="needs a Python below 3.11")

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ([sys.executable, "-m", "pushjobs.server", "--version"], "pushjobs-server"),
        ([sys.executable, "-m", "pushjobs.server.admin.main", "--help"], "pushjobs-server"),
        ([str(BIN / "pushjobs-server"), "run"], "pushjobs-server"),
        ([sys.executable, "-m", "pushjobs.cli", "--version"], "pushjobs"),
        ([str(BIN / "pushjobs"), "node", "status"], "pushjobs"),
    ],
)
def test_server_and_cli_refuse_plainly(command: list[str], name: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    version = sys.version.split()[0]
    assert result.stderr.startswith(f"{name}: needs Python 3.11 or newer; this is Python {version}")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_the_agent_runs() -> None:
    result = subprocess.run(
        [str(BIN / "pushjobs-agent"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("pushjobs-agent ")

"""The agent imports only what it needs, when it needs it (idle memory, bench/agent_memory.py).

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def modules_after(statement: str) -> set[str]:
    """The names in `sys.modules` of a fresh interpreter after running `statement`."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="below 3.11 the standard library's own imports pull in subprocess (memory figure only)",
)
def test_the_command_line_alone_imports_no_runtime_library() -> None:
    # `--version`, `--check-command` and option errors need neither trio, ZeroMQ nor crypto.
    loaded = modules_after("import pushjobs.agent.main")
    for name in ("trio", "zmq", "cryptography", "msgpack", "ssl", "http.client", "subprocess"):
        assert name not in loaded, name


# What the running agent must not import: its whole runtime is imported by `daemon`.
NOT_AT_RUN_TIME = (
    # zmq.utils.monitor imports zmq.asyncio and so all of asyncio (~1.6 MB resident); the link
    # parses monitor events itself
    "asyncio",
    "zmq.asyncio",
    # only needed for a server key sent as a certificate (~1.4 MB resident when idle)
    "cryptography.x509",
    # only for `--version`
    "importlib.metadata",
)


def test_the_running_agent_imports_no_module_it_does_not_use() -> None:
    loaded = modules_after("import pushjobs.agent.daemon")
    assert [name for name in NOT_AT_RUN_TIME if name in loaded] == []

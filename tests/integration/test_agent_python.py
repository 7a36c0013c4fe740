"""Agents run on the interpreter `$PUSHJOBS_AGENT_PYTHON` names (this one when unset).

scripts/test.sh runs the agent integration tests with it set to Python 3.9 and 3.13 venvs;
this checks that the agents those tests start really are that interpreter's processes.
"""

from __future__ import annotations

import os
import subprocess

from tests.support.agents import AgentFactory, agent_python
from tests.support.jobs import post_job
from tests.support.server import ServerProcess


def test_agents_run_on_the_chosen_interpreter(
    agent_factory: AgentFactory, server: ServerProcess
) -> None:
    agent = agent_factory()
    assert os.readlink(f"/proc/{agent.pid}/exe") == os.path.realpath(agent_python())
    job = server.wait_job(post_job(server, "true", [agent.name]))
    assert job["nodes"] == {"succeeded": [agent.name]}


def test_agent_version_on_the_chosen_interpreter() -> None:
    result = subprocess.run(
        [agent_python(), "-m", "pushjobs.agent.main", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("pushjobs-agent ")

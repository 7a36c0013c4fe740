"""On a failing test, attach the log tails of the servers still running and of the agents
started last, so a CI failure can be diagnosed from its output alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.agents import AgentProcess
from tests.support.server import ServerProcess


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for proc in ServerProcess.running():
        report.sections.append((f"server log tail ({proc.log_path})", proc.log_tail(80)))
    for agent in AgentProcess.started_recently:
        state = "running" if agent.proc is not None and agent.proc.poll() is None else "exited"
        report.sections.append(
            (f"agent {agent.name} log tail, {state} ({agent.log_path})", agent.log_tail(40))
        )

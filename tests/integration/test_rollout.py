"""Safe rollouts end to end (lifecycle.md §12): a real server, ten real agents, real processes.

Each job process appends `<node> start|end <time>` to a shared file, so concurrency is judged
from what really ran, not from what the server says.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.support.agents import running_agents
from tests.support.jobs import node_details, post_job
from tests.support.server import ServerProcess
from tests.support.sse import compact, read_sse
from tests.support.waits import wait_for

AGENTS = 10

_START = 'echo "$CHEF_PUSH_NODE_NAME start" >> "$LOG"; '
_WAIT = 'while [ ! -e "$RELEASE" ]; do sleep 0.05; done; '
_END = 'echo "$CHEF_PUSH_NODE_NAME end" >> "$LOG"'
_FAIL = f'for n in $FAIL; do if [ "$n" = "$CHEF_PUSH_NODE_NAME" ]; then {_END}; exit 1; fi; done; '
WHITELIST = f"""
"step" = {{ run = '{_START}{_WAIT}{_END}', shell = true }}
"flaky" = {{ run = '{_START}{_FAIL}{_WAIT}{_END}', shell = true }}
"""


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Ten agents on the module's server, in a fixed job order (names sorted)."""
    base = tmp_path_factory.mktemp("fleet")
    with running_agents(server, base, "r", AGENTS, whitelist=WHITELIST) as agents:
        yield [agent.name for agent in agents]


def lines(log: Path) -> list[tuple[str, str]]:
    """(node, "start"|"end") in the order the job processes wrote them."""
    if not log.exists():
        return []
    return [tuple(line.split()) for line in log.read_text().splitlines() if line]  # type: ignore[misc]


def peak_concurrency(events: list[tuple[str, str]]) -> int:
    running: set[str] = set()
    peak = 0
    for node, what in events:
        if what == "start":
            running.add(node)
        else:
            running.discard(node)
        peak = max(peak, len(running))
    return peak


def test_never_more_than_the_limit_run_at_once(
    server: ServerProcess, fleet: list[str], tmp_path: Path
) -> None:
    log, release = tmp_path / "log", tmp_path / "release"
    job_id = post_job(
        server, "step", fleet, max_concurrency=3, env={"LOG": str(log), "RELEASE": str(release)}
    )
    wait_for(lambda: len(lines(log)) >= 3, 20, what="three job processes")
    # The three hold their slots until released: no fourth may start meanwhile.
    wait_for(lambda: server.get(f"jobs/{job_id}").json()["nodes"].get("running") is not None, 10)
    time.sleep(1.0)
    assert [what for _, what in lines(log)] == ["start"] * 3
    assert {node for node, _ in lines(log)} == set(fleet[:3])  # the first three in job order
    release.touch()
    job = server.wait_job(job_id, timeout=60)
    assert job["status"] == "complete"
    assert job["nodes"] == {"succeeded": sorted(fleet)}
    assert job["max_concurrency"] == 3
    events = lines(log)
    assert len(events) == 2 * AGENTS
    assert peak_concurrency(events) == 3
    assert {node for node, what in events if what == "start"} == set(fleet)


def test_error_budget_stops_the_job_and_skips_the_rest(
    server: ServerProcess, fleet: list[str], tmp_path: Path
) -> None:
    log, release = tmp_path / "log", tmp_path / "release"
    failing = fleet[:2]
    job_id = post_job(
        server,
        "flaky",
        fleet,
        max_concurrency=2,
        max_errors=1,
        env={"LOG": str(log), "RELEASE": str(release), "FAIL": " ".join(failing)},
    )

    # The first failure (1 error: within the budget) starts the third node, which waits for the
    # release; the second failure exhausts the budget, so the other seven never run. Releasing
    # only then keeps the third node from finishing and refilling a fourth in between.
    def skipped() -> bool:
        return len(server.get(f"jobs/{job_id}").json()["nodes"].get("skipped", [])) == 7

    wait_for(skipped, 30, what="the seven nodes after the budget skipped")
    release.touch()
    _, events = trio.run(read_sse, server, f"job_status_feed/{job_id}")  # replays, then ends
    job = server.wait_job(job_id, timeout=60)
    assert job["status"] == "stopped"
    assert job["nodes"] == {
        "failed": sorted(failing),
        "succeeded": [fleet[2]],
        "skipped": sorted(fleet[3:]),
    }
    ran = {node for node, what in lines(log) if what == "start"}
    assert ran == set(fleet[:3])
    details = node_details(server, job_id)
    assert all(details[n]["started_at"] is None for n in fleet[3:])
    # The skipped agents released their commit: every node is available for the next job.
    for name in fleet:
        server.wait_node(name, "available")
    names = compact(events)
    assert names[-1] == ("job_complete", "stopped")
    budget = [e for e in events if e["event"] == "budget_exhausted"]
    assert [e["data"]["errors"] for e in budget] == [2]
    assert budget[0]["data"]["max_errors"] == 1
    skipped = [e["data"]["node"] for e in events if e["event"] == "run_skipped"]
    assert skipped == fleet[3:]
    assert names.index(("budget_exhausted",)) < names.index(("run_skipped", fleet[3]))


def test_percentages_and_the_job_object(server: ServerProcess, fleet: list[str], tmp_path: Path):
    log, release = tmp_path / "log", tmp_path / "release"
    release.touch()
    job_id = post_job(
        server,
        "step",
        fleet,
        max_concurrency="20%",
        max_errors="10%",
        env={"LOG": str(log), "RELEASE": str(release)},
    )
    job = server.wait_job(job_id, timeout=60)
    assert job["status"] == "complete"
    assert job["max_concurrency"] == "20%" and job["max_errors"] == "10%"
    assert job["requested_by"] == server.admin_user
    assert peak_concurrency(lines(log)) <= 2  # 20% of 10


def test_a_job_without_limits_answers_as_before(server: ServerProcess, fleet: list[str]) -> None:
    job_id = post_job(server, "step", fleet[:1], env={"LOG": "/dev/null", "RELEASE": "/"})
    job = server.wait_job(job_id)
    assert job["status"] == "complete"
    assert "max_concurrency" not in job and "max_errors" not in job

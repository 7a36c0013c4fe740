"""The rollout options of the `pushjobs` CLI against a real server and real agents (cli.md §3.7,
§3.8, §5): `--max-concurrency`/`--max-errors` and a `stopped` job, `--stream` over the per-job
output feed, and the `job list` filters.

Four agents, in a fixed job order: the first fails when it is named in `$FAIL`, the others
sleep a little first, so a budget of 0 runs out while the second still runs and the last two
are still waiting.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import running_agents
from tests.support.cli import cli_env, make_cli_home, run_cli
from tests.support.server import ServerProcess

_FAIL = (
    'for n in $FAIL; do [ "$n" = "$CHEF_PUSH_NODE_NAME" ] && { echo "$n fails"; exit 1; }; done; '
)
WHITELIST = f"""
"rollout" = {{ run = '{_FAIL}sleep 2; echo "$CHEF_PUSH_NODE_NAME done"', shell = true }}
"lines" = {{ run = "echo one; sleep 1; echo two; echo oops >&2; sleep 1; echo three", \
shell = true }}
"partial" = {{ run = "printf par; sleep 1; printf 'tial\\\\n'; printf 'no newline'", shell = true }}
"""
AGENTS = 4


@pytest.fixture(scope="module")
def agents(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Four idle agents; each test leaves them idle again."""
    base = tmp_path_factory.mktemp("rollout-agents")
    with running_agents(server, base, "ro", AGENTS, whitelist=WHITELIST) as procs:
        yield [p.name for p in procs]


@pytest.fixture(scope="module")
def home(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cli_home(server, tmp_path_factory.mktemp("rollout-home"))


@pytest.fixture(autouse=True)
def idle_agents(server: ServerProcess, agents: list[str]) -> Iterator[None]:
    """Each test starts with every agent available (skipped agents are released by a rehab)."""
    for name in agents:
        server.wait_node(name)
    yield


def pushjobs(home: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout and stderr on pipes (plain display)."""
    r = run_cli(*args, env=cli_env(home), timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def started_id(text: str) -> str:
    first = next(line for line in text.splitlines() if line.startswith("Started.  Job ID: "))
    return first.removeprefix("Started.  Job ID: ")


def test_error_budget_stops_the_job_and_names_the_skipped_nodes(
    server: ServerProcess, home: Path, agents: list[str]
) -> None:
    failing, slow, *waiting = agents
    r = pushjobs(
        home, "job", "start", "rollout", *agents, "--max-concurrency", "2", "--max-errors", "0",
        "--with-env", json.dumps({"FAIL": failing}),
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    job_id = started_id(r.stdout)
    lines = r.stdout.splitlines()
    assert "Stopped." in lines
    assert any(
        line.startswith("Running (") and line.endswith("(limit 2) · failed 0 of 0 allowed")
        for line in lines
    ), lines
    assert lines[-2:] == [
        "4 nodes: 1 succeeded, 1 failed, 2 skipped",
        "Stopped: 1 node failed, 0 allowed (max_errors 0); 2 nodes skipped: "
        + ", ".join(sorted(waiting)),
    ]
    job = server.get(f"jobs/{job_id}").json()
    assert job["status"] == "stopped"
    assert job["nodes"] == {
        "failed": [failing],
        "succeeded": [slow],
        "skipped": sorted(waiting),
    }
    assert (job["max_concurrency"], job["max_errors"]) == (2, 0)
    # `job status` shows the audit key, the limits and the same closing line
    r = pushjobs(home, "job", "status", job_id)
    assert r.returncode == 0
    assert f"requested_by:    {server.admin_user}" in r.stdout.splitlines()
    assert "max_concurrency: 2" in r.stdout and "max_errors:      0" in r.stdout
    assert r.stdout.splitlines()[-1] == lines[-1]
    # the skipped agents were released: they take the next job
    for name in waiting:
        server.wait_node(name)


def test_invalid_limit_is_a_usage_error(home: Path, agents: list[str]) -> None:
    r = pushjobs(home, "job", "start", "rollout", agents[0], "--max-errors", "10.5%")
    assert r.returncode == 3
    assert r.stderr == (
        "ERROR: --max-errors must be an integer >= 0 or a percentage N% (N from 0 to 100), "
        "not '10.5%'\n"
    )


def node_lines(stdout: str, node: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith((f"{node}: ", f"{node} ["))]


def test_stream_prefixes_every_node_line(
    server: ServerProcess, home: Path, agents: list[str]
) -> None:
    a, b = agents[:2]
    r = pushjobs(home, "job", "start", "lines", a, b, "--stream", "--max-concurrency", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = started_id(r.stderr)  # progress goes to stderr
    assert "Voting." in r.stderr and "Complete." in r.stderr
    for node in (a, b):
        mine = node_lines(r.stdout, node)
        assert [x for x in mine if "[stderr]" not in x] == [
            f"{node}: one",
            f"{node}: two",
            f"{node}: three",
        ]
        assert f"{node} [stderr]: oops" in mine
    # the output lines come first (4 per node), then the job
    body = r.stdout.splitlines()
    assert [i for i, line in enumerate(body) if line.startswith("id:")] == [8]
    assert body[8].endswith(job_id) and body[-1] == "2 nodes: 2 succeeded"
    # one node at a time: every line of the first node before any of the second
    assert max(body.index(x) for x in node_lines(r.stdout, a)) < min(
        body.index(x) for x in node_lines(r.stdout, b)
    )

    # a finished job: `job watch --stream` prints its output again, then the job
    r = pushjobs(home, "job", "watch", job_id, "--stream")
    assert r.returncode == 0, r.stderr
    for node in (a, b):
        assert sorted(node_lines(r.stdout, node)) == sorted(
            [f"{node}: one", f"{node}: two", f"{node}: three", f"{node} [stderr]: oops"]
        )
    assert r.stdout.splitlines()[8].startswith("id:")
    # `job output --all --follow`, only stderr (a ran first, and sorts first)
    assert sorted((a, b)) == [a, b]
    r = pushjobs(home, "job", "output", job_id, "--all", "--follow", "--channel", "stderr")
    assert (r.returncode, r.stdout) == (0, f"{a} [stderr]: oops\n{b} [stderr]: oops\n")


def test_stream_holds_partial_lines_until_newline_or_end(
    server: ServerProcess, home: Path, agents: list[str]
) -> None:
    node = agents[2]
    r = pushjobs(home, "job", "start", "partial", node, "--stream")
    assert r.returncode == 0, r.stdout + r.stderr
    assert node_lines(r.stdout, node) == [f"{node}: partial", f"{node}: no newline"]


def test_stream_json_lines(server: ServerProcess, home: Path, agents: list[str]) -> None:
    node = agents[3]
    r = pushjobs(home, "--json", "job", "start", "partial", node, "--stream")
    assert r.returncode == 0, r.stderr
    records: list[dict[str, Any]] = [json.loads(line) for line in r.stdout.splitlines()]
    assert records[-1]["event"] == "job" and records[-1]["status"] == "complete"
    assert records[-2] == {"event": "job_complete", "timestamp": records[-2]["timestamp"],
                           "status": "complete"}  # fmt: skip
    pieces = [x for x in records if x["event"] == "output"]
    assert b"".join(x["data"].encode() for x in pieces) == b"partial\nno newline"
    offsets = [x["offset"] for x in pieces]
    assert offsets == sorted(offsets) and offsets[0] == 0
    ends = [x for x in records if x["event"] == "end"]
    assert {(x["node"], x["channel"]) for x in ends} == {(node, "stdout"), (node, "stderr")}


def test_list_filters_by_node(server: ServerProcess, home: Path, agents: list[str]) -> None:
    a, b = agents[:2]
    r = pushjobs(home, "job", "start", "lines", a, "--nowait")
    only_a = started_id(r.stdout)
    r = pushjobs(home, "job", "start", "lines", b, "--nowait")
    only_b = started_id(r.stdout)
    server.wait_job(only_a)
    server.wait_job(only_b)

    r = pushjobs(home, "job", "list", "--node", a, "--json")
    assert r.returncode == 0, r.stderr
    ids = [j["id"] for j in json.loads(r.stdout)]
    assert only_a in ids and only_b not in ids
    r = pushjobs(home, "job", "list", "--node", a, "--node", b, "--since", "1h", "--json")
    ids = [j["id"] for j in json.loads(r.stdout)]
    assert set(ids[:2]) == {only_a, only_b}  # the newest two (both may share a second)
    assert all(j["requested_by"] == server.admin_user for j in json.loads(r.stdout))

    r = pushjobs(home, "job", "list", "--node", a, "--limit", "1")
    assert r.returncode == 0
    _, row = r.stdout.splitlines()
    assert row.startswith(only_a)
    assert r.stderr == "more jobs exist: use --offset 1 for the next page, or a larger --limit\n"
    r = pushjobs(home, "job", "list", "--requested-by", "nobody-at-all", "--json")
    assert json.loads(r.stdout) == [] and r.stderr == ""

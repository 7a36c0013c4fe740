"""Inventory and label targeting end to end (issue 13): three real agents with different
`[labels]`, a real server, signed HTTP and the CLI (http-api.md §7.4, §7.7, cli.md §3, §9)."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import AgentProcess
from tests.support.cli import cli_env, make_cli_home, run_cli
from tests.support.clients import unique_name
from tests.support.server import ServerProcess
from tests.support.waits import wait_for

WHITELIST = '"hello" = "echo hello"'
LABELS = {
    "web1": {"role": "web", "dc": "fra1"},
    "web2": {"role": "web", "dc": "fra2"},
    "db1": {"role": "db", "dc": "fra1", "tier": "gold"},
}


@pytest.fixture(scope="module")
def agent_procs(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AgentProcess]]:
    """Key of `LABELS` → one of three running agents, labelled as there."""
    base = tmp_path_factory.mktemp("label-agents")
    procs = {}
    for key, labels in LABELS.items():
        name = unique_name(key)
        procs[key] = AgentProcess(
            server, base / name, name, whitelist=WHITELIST, extra={"labels": labels}
        )
    try:
        for proc in procs.values():
            proc.start()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture(scope="module")
def agents(agent_procs: dict[str, AgentProcess]) -> dict[str, str]:
    """Key of `LABELS` → node name."""
    return {key: proc.name for key, proc in agent_procs.items()}


def node_states(server: ServerProcess, query: str) -> list[dict[str, Any]]:
    response = server.get(f"node_states?{query}")
    assert response.status_code == 200, response.text
    return response.json()


def labelled(server: ServerProcess, names: dict[str, str]) -> dict[str, dict[str, str]]:
    """node name → labels, once every agent's labels have arrived."""

    def ready() -> dict[str, dict[str, str]] | None:
        found = {s["node_name"]: s["labels"] for s in node_states(server, "labels=true")}
        return found if all(found.get(n) for n in names.values()) else None

    return wait_for(ready, 30, interval=0.1, what="labels of every agent")


def test_labels_with_builtins(server: ServerProcess, agents: dict[str, str]) -> None:
    found = labelled(server, agents)
    v = sys.version_info
    for key, user in LABELS.items():
        labels = found[agents[key]]
        assert {k: labels[k] for k in user} == user
        assert labels["os"] == platform.system().lower()
        assert labels["arch"] == platform.machine()
        assert labels["python"] == f"{v.major}.{v.minor}.{v.micro}"
        assert labels["agent_version"] and labels["os_version"]
        assert set(labels) == set(user) | {"os", "os_version", "arch", "agent_version", "python"}
    # the plain listing is unchanged (the Chef 2.x shape)
    plain = server.get("node_states").json()
    assert all(set(item) == {"node_name", "availability"} for item in plain)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("role=web", {"web1", "web2"}),
        ("role==web,dc!=fra2", {"web1"}),
        ("dc in (fra1, fra2),role notin (web)", {"db1"}),
        ("tier", {"db1"}),
        ("!tier,role=web", {"web1", "web2"}),
        ("role=cache", set()),
    ],
)
def test_selector_filters(
    server: ServerProcess, agents: dict[str, str], selector: str, expected: set[str]
) -> None:
    labelled(server, agents)
    listed = {s["node_name"] for s in node_states(server, f"selector={selector}")}
    ours = {name for name in listed if name in agents.values()}
    assert ours == {agents[key] for key in expected}


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("selector=role%3D%3D%3Dweb", "invalid selector 'role===web': "),
        ("selector=Role=web", "invalid selector 'Role=web': label key 'Role'"),
        ("selector=role%20in%20()", "invalid selector 'role in ()': "),
        ("labels=yes", "invalid labels parameter 'yes' (expected true or false)"),
    ],
)
def test_bad_query_is_400(server: ServerProcess, query: str, text: str) -> None:
    response = server.get(f"node_states?{query}")
    assert response.status_code == 400
    assert response.json()["error"][0].startswith(text)


def test_all_lists_never_connected_clients(server: ServerProcess, agents: dict[str, str]) -> None:
    labelled(server, agents)
    ghost, _ = server.make_client(unique_name("ghost"))
    listing = {s["node_name"]: s for s in node_states(server, "all=true&labels=true")}
    assert listing[ghost] == {
        "node_name": ghost,
        "availability": "unavailable",
        "status": "offline",
        "last_seen": None,
        "labels": {},
    }
    web1 = listing[agents["web1"]]
    assert web1["status"] == "online" and web1["availability"] == "available"
    assert web1["last_seen"] is not None and web1["labels"]["role"] == "web"
    # without all=true, the never-connected client is not listed
    assert ghost not in {s["node_name"] for s in node_states(server, "labels=true")}


def test_job_with_selector_runs_on_matching_nodes(
    server: ServerProcess, agents: dict[str, str]
) -> None:
    labelled(server, agents)
    response = server.post("jobs", body={"command": "hello", "selector": "role=web"})
    assert response.status_code == 201, response.text
    job = server.wait_job(response.json()["uri"].rsplit("/", 1)[1])
    assert job["status"] == "complete"
    assert job["nodes"] == {"succeeded": sorted([agents["web1"], agents["web2"]])}


def test_job_nodes_and_selector_are_merged(server: ServerProcess, agents: dict[str, str]) -> None:
    labelled(server, agents)
    body = {"command": "hello", "nodes": [agents["db1"]], "selector": "dc=fra1"}
    response = server.post("jobs", body=body)
    assert response.status_code == 201, response.text
    job = server.wait_job(response.json()["uri"].rsplit("/", 1)[1])
    assert job["nodes"] == {"succeeded": sorted([agents["db1"], agents["web1"]])}


@pytest.mark.parametrize(
    ("selector", "error"),
    [
        ("role=cache", "no node matches selector 'role=cache'"),
        ("role=", "no node matches selector 'role='"),
        ("role in (web", "invalid selector 'role in (web': missing ')'"),
        ("", "invalid selector '': it is empty"),
    ],
)
def test_job_selector_errors(
    server: ServerProcess, agents: dict[str, str], selector: str, error: str
) -> None:
    labelled(server, agents)
    response = server.post("jobs", body={"command": "hello", "selector": selector})
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_cli_where_labels_all(
    server: ServerProcess, agents: dict[str, str], tmp_path: Path
) -> None:
    labelled(server, agents)
    env = cli_env(make_cli_home(server, tmp_path))
    result = run_cli("node", "status", "--where", "role=web", "--where", "dc=fra1", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{agents['web1']}\tavailable"]

    result = run_cli("node", "status", "--labels", "--where", "tier", env=env)
    assert result.returncode == 0, result.stderr
    name, availability, labels = result.stdout.strip().split("\t")
    assert (name, availability) == (agents["db1"], "available")
    assert "dc=fra1" in labels.split(",") and "tier=gold" in labels.split(",")

    ghost, _ = server.make_client(unique_name("ghost"))
    result = run_cli("node", "status", "--all", env=env)
    assert result.returncode == 0, result.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert rows[ghost] == [ghost, "unavailable", "offline", "never connected"]
    assert rows[agents["web2"]][1:3] == ["available", "online"]

    result = run_cli("node", "status", "--where", "Role=x", env=env)
    assert result.returncode != 0 and "invalid selector 'Role=x'" in result.stderr

    result = run_cli("--json", "job", "start", "hello", "--where", "role=db", env=env)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "complete"
    assert job["nodes"] == {"succeeded": [agents["db1"]]}


def test_labels_survive_a_restart(
    server: ServerProcess, agent_procs: dict[str, AgentProcess], agents: dict[str, str]
) -> None:
    """Last in the module: with the agents stopped, the restarted server still knows their
    labels (from the store) and resolves a selector to them."""
    labelled(server, agents)
    for proc in agent_procs.values():
        proc.stop()
    server.restart()
    listing = {s["node_name"]: s for s in node_states(server, "all=true&labels=true")}
    for key, user in LABELS.items():
        item = listing[agents[key]]
        assert item["status"] == "offline" and item["last_seen"] is not None
        assert {k: item["labels"][k] for k in user} == user
    offline = {s["node_name"] for s in node_states(server, "all=true&selector=role=web")}
    assert {agents["web1"], agents["web2"]} <= offline
    response = server.post("jobs", body={"command": "hello", "selector": "role=db"})
    assert response.status_code == 201, response.text
    job = server.wait_job(response.json()["uri"].rsplit("/", 1)[1])
    assert job["nodes"] == {"unavailable": [agents["db1"]]}

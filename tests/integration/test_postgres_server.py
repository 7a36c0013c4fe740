"""One server on a real PostgreSQL database (`[store] backend = "postgresql"`): init, jobs,
output, restarts, the operator commands, and a database outage answered with 503 and recovered
without restarting anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import AgentProcess
from tests.support.clients import unique_name
from tests.support.jobs import output, post_job
from tests.support.ports import free_ports
from tests.support.postgres import PostgresCluster, running_postgres
from tests.support.server import ServerProcess, write_server_config
from tests.support.waits import wait_for

WHITELIST = """
"greet" = { run = 'echo "hello from $CHEF_PUSH_NODE_NAME"; echo warn >&2', shell = true }
"""


def pg_server(base: Path, url: str) -> ServerProcess:
    """A server on `url` whose ports stay the same across restarts (agents find it again).

    Heartbeats slow enough that an agent does not declare the server offline during a restart
    on a loaded machine (and back off for long): it notices the new incarnation instead.
    """
    http, heartbeat, command = free_ports(3)
    return ServerProcess(
        base,
        {
            "store": {"backend": "postgresql", "url": url},
            "http": {"port": http},
            "zeromq": {"heartbeat_port": heartbeat, "command_port": command},
            "timing": {"heartbeat_interval": 5.0},
        },
    )


def available_again(srv: ServerProcess, agent: AgentProcess) -> None:
    """Wait for the agent after a restart; on failure show both logs (the server is stopped
    before the test report is written)."""
    try:
        agent.wait_available()
    except AssertionError as exc:
        agent_log = agent.log_path.read_text()[-4000:] if agent.log_path.exists() else ""
        raise AssertionError(
            f"{exc}\n--- server ---\n{srv.log_tail(60)}\n--- agent ---\n{agent_log}"
        ) from None


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own, so that stopping it disturbs no other test."""
    with running_postgres() as own:
        yield own


def test_jobs_and_output_live_in_postgresql_across_restarts(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.new_database()
    srv = pg_server(tmp_path / "server", url)
    assert not (srv.data_dir / "pushjobs.db").exists()  # nothing went to SQLite
    again = srv.admin("init")
    assert "nothing to create" in again.stdout, again.stdout  # init is idempotent
    assert "pushjobs@127.0.0.1" in again.stdout and "pushjobs.db" not in again.stdout
    srv.start()
    agent = AgentProcess(srv, tmp_path / "agent", unique_name("pg"), whitelist=WHITELIST)
    try:
        agent.start()
        job_id = post_job(srv, "greet", [agent.name], capture_output=True)
        assert srv.wait_job(job_id)["status"] == "complete"
        srv.restart()
        available_again(srv, agent)
        assert srv.wait_job(job_id)["nodes"] == {"succeeded": [agent.name]}
        assert output(srv, job_id, agent.name, "stdout") == f"hello from {agent.name}\n".encode()
        assert output(srv, job_id, agent.name, "stderr") == b"warn\n"
        second = post_job(srv, "greet", [agent.name])
        assert srv.wait_job(second)["status"] == "complete"
        listed = [job["id"] for job in srv.get("jobs").json()]
        assert listed[:2] == [second, job_id]
    finally:
        agent.stop()
        srv.stop()
    # the operator commands read and write the same database, with the server stopped or not
    assert srv.org in srv.admin("org", "list").stdout
    srv.admin("org", "create", "second")
    assert "second" in srv.admin("org", "list").stdout
    assert "deleted 2 jobs" in srv.admin("job", "prune", "--older-than", "0", "--yes").stdout


def test_a_database_outage_answers_503_and_recovers_by_itself(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    srv = pg_server(tmp_path / "server", cluster.new_database())
    srv.start()
    agent = AgentProcess(srv, tmp_path / "agent", unique_name("pg"), whitelist=WHITELIST)
    try:
        agent.start()
        cluster.stop()
        response = srv.get("node_states")
        assert response.status_code == 503, response.text
        (text,) = response.json()["error"]
        assert "is unavailable" in text and text.endswith("; try again later"), text
        assert response.headers["retry-after"] == "5"
        cluster.restart()
        wait_for(lambda: srv.get("node_states").status_code == 200, 30, what="the store back")
        srv.wait_node(agent.name)  # the node stayed connected through the outage
        job_id = post_job(srv, "greet", [agent.name])
        assert srv.wait_job(job_id)["status"] == "complete"
        log = srv.log_path.read_text()
        assert "Traceback" not in log, srv.log_tail()
        assert "-> 503" in log
    finally:
        agent.stop()
        srv.stop()


def test_store_copy_moves_a_sqlite_server_to_postgresql(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    http, heartbeat, command = free_ports(3)
    ports = {
        "http": {"port": http},
        "zeromq": {"heartbeat_port": heartbeat, "command_port": command},
    }
    srv = ServerProcess(tmp_path / "server", ports)  # SQLite, the default
    srv.start()
    agent = AgentProcess(srv, tmp_path / "agent", unique_name("mv"), whitelist=WHITELIST)
    srv.admin("group", "create", srv.org, "deployers")
    srv.admin("group", "add", srv.org, "deployers", "--client", agent.name)
    url = postgres.new_database()
    try:
        agent.start()
        job_id = post_job(srv, "greet", [agent.name], capture_output=True)
        assert srv.wait_job(job_id)["status"] == "complete"
        srv.stop()
        copied = srv.admin("store", "copy", "--to", url)
        assert f"to {url}" in copied.stdout and 'backend = "postgresql"' in copied.stdout
        refused = srv.admin("store", "copy", "--to", url, check=False)
        assert refused.returncode == 1 and "the target database is not empty" in refused.stderr
        write_server_config(
            srv.config_path, srv.data_dir, {**ports, "store": {"backend": "postgresql", "url": url}}
        )
        srv.start()
        available_again(srv, agent)  # its key came along
        assert srv.wait_job(job_id)["nodes"] == {"succeeded": [agent.name]}
        assert output(srv, job_id, agent.name, "stdout") == f"hello from {agent.name}\n".encode()
        assert agent.name in srv.admin("group", "show", srv.org, "deployers").stdout
        srv.make_client(unique_name("new"))  # ids continue after the copied ones
        again = post_job(srv, "greet", [agent.name])
        assert srv.wait_job(again)["status"] == "complete"
    finally:
        agent.stop()
        srv.stop()

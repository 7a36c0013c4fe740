"""The `pushjobs` CLI as a subprocess against a real server and real agents (cli.md §1–§10).

Each CLI run gets a temp HOME with `~/.config/pushjobs/config.toml` (profile `default`) signing
as the org admin. Two shared agents run the quick commands; tests that leave a command running
(abort, Ctrl-C, timeout, live output) get agents of their own so the shared ones stay idle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.agents import AgentProcess
from tests.support.cli import cli_env, make_cli_home, popen_cli, run_cli
from tests.support.clients import unique_name
from tests.support.procs import kill_if_running
from tests.support.server import ServerProcess
from tests.support.toml import toml_document

WHITELIST = """
"hello" = "echo hello"
"both" = { run = "echo out; echo err >&2", shell = true }
"fail" = { run = "echo failing; exit 3", shell = true }
"sleep" = "sleep 60"
"binary" = { run = "printf 'ok\\\\377\\\\n'; echo fine >&2", shell = true }
"lines" = { run = "echo one; sleep 1; echo two; echo oops >&2; sleep 1; echo three", shell = true }
"""
JOB_ID_LEN = 32


@pytest.fixture(scope="module")
def agents(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two idle agents for quick jobs; each test must leave them idle again."""
    base = tmp_path_factory.mktemp("cli-agents")
    procs = [
        AgentProcess(server, base / name, name, whitelist=WHITELIST)
        for name in (unique_name("cli-a"), unique_name("cli-b"))
    ]
    try:
        for p in procs:
            p.start()
        yield [p.name for p in procs]
    finally:
        for p in procs:
            p.stop()


@pytest.fixture(scope="module")
def home(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cli_home(server, tmp_path_factory.mktemp("cli-home"))


def pushjobs(
    home: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pushjobs.cli ARGS` (stdout and stderr are pipes: plain display)."""
    return run_cli(*args, env=env or cli_env(home), timeout=timeout)


def started_id(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert first.startswith("Started.  Job ID: "), stdout
    job_id = first.removeprefix("Started.  Job ID: ")
    assert len(job_id) == JOB_ID_LEN
    return job_id


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------- nodes


def test_node_status(server: ServerProcess, home: Path, agents: list[str]) -> None:
    r = pushjobs(home, "node", "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for name in agents:
        assert f"{name}\tavailable" in lines
    assert lines == sorted(lines)

    r = pushjobs(home, "node", "status", agents[0], "ghost-node", "-l")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{agents[0]}\tavailable\tonline\nghost-node\tunavailable\toffline\n"

    r = pushjobs(home, "node", "status", agents[1], "--json")
    assert json.loads(r.stdout) == [
        {"node_name": agents[1], "status": "online", "availability": "available"}
    ]


# ---------------------------------------------------------------- job start: outcomes


def test_start_success_plain_progress(server: ServerProcess, home: Path, agents: list[str]) -> None:
    r = pushjobs(home, "job", "start", "hello", *agents, agents[0])
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = started_id(r.stdout)
    lines = r.stdout.splitlines()
    assert lines[1] == "Voting."
    assert "Running (2/2 in progress) ..." in lines
    assert "Complete." in lines
    assert f"id:          {job_id}" in lines
    assert "status:      complete" in lines
    assert lines[-1] == "2 nodes: 2 succeeded"
    job = server.get(f"jobs/{job_id}").json()
    assert job["nodes"] == {"succeeded": sorted(agents)}


def test_start_failed_node_exit_1_with_output(
    server: ServerProcess, home: Path, agents: list[str]
) -> None:
    r = pushjobs(home, "job", "start", "fail", agents[0], "--show-output", "failed")
    no_traceback(r)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Complete." in r.stdout
    assert f"  failed: {agents[0]}" in r.stdout
    out_part = r.stdout.split("1 node: 1 failed\n", 1)[1]
    assert out_part.startswith(f"==> {agents[0]} stdout (failed, exit 3) <==\nfailing\n")
    assert f"==> {agents[0]} stderr <==" in out_part
    # knife-compatible: a failed node is still exit 1
    r = pushjobs(home, "job", "start", "fail", agents[0], "--knife-compatible-exit")
    assert r.returncode == 1


def test_quorum_failure_exit_2(server: ServerProcess, home: Path, agents: list[str]) -> None:
    # not whitelisted: the node refuses the commit (nacked) and the quorum fails
    r = pushjobs(home, "job", "start", "not-allowed", agents[0])
    no_traceback(r)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Quorum_failed." in r.stdout
    assert f"  nacked: {agents[0]}" in r.stdout
    r = pushjobs(home, "job", "start", "not-allowed", agents[0], "--knife-compatible-exit")
    assert r.returncode == 1


def test_quorum_percent_with_offline_node(
    server: ServerProcess, home: Path, agents: list[str]
) -> None:
    # 50% of 2 nodes = 1: the offline node is unavailable, the job still runs on the other
    r = pushjobs(home, "job", "start", "hello", agents[0], "offline-node", "-q", "50%")
    assert r.returncode == 1, r.stdout + r.stderr  # not every node succeeded
    assert "2 nodes: 1 succeeded, 1 unavailable" in r.stdout
    r = pushjobs(
        home,
        "job",
        "start",
        "hello",
        agents[0],
        "offline-node",
        "-q",
        "1",
        "--knife-compatible-exit",
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_timeout_exit_1(server: ServerProcess, home: Path, agent_factory: Any) -> None:
    agent = agent_factory(whitelist=WHITELIST)
    r = pushjobs(home, "job", "start", "sleep", agent.name, "--timeout", "1")
    no_traceback(r)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Timed_out." in r.stdout
    assert "status:      timed_out" in r.stdout
    assert "run_timeout: 1" in r.stdout


def test_poll_mode(server: ServerProcess, home: Path, agents: list[str]) -> None:
    r = pushjobs(home, "-v", "job", "start", "hello", agents[1], "--poll", "--poll-interval", "0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "job_status_feed" not in r.stderr  # -v logs every request: the feed was never opened
    assert "/pushy/jobs/" in r.stderr
    assert r.stdout.splitlines()[-1] == "1 node: 1 succeeded"


class ChefSearch(BaseHTTPRequestHandler):
    """A stand-in for the Chef Server's partial node search (an external system): pages of 1."""

    names: ClassVar[list[str]] = []
    public_key: ClassVar[Any] = None
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        from pushjobs.protocol.chef_auth import validate_auth_headers, verify_request

        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        url = urlsplit(self.path)
        auth = validate_auth_headers({k.lower(): v for k, v in self.headers.items()}, time.time())
        ok = verify_request(
            auth, method="POST", path=url.path, body=body, public_key=self.public_key
        )
        q = parse_qs(url.query)
        self.seen.append((q["q"][0], q["start"][0]))
        start = int(q["start"][0])
        rows = [{"url": "x", "data": {"name": n}} for n in self.names[start : start + 1]]
        doc = {"rows": rows, "start": start, "total": len(self.names)}
        if not ok or json.loads(body) != {"name": ["name"]}:
            self.send_response(401)
            doc = {"error": ["bad signature"]}
        else:
            self.send_response(200)
        raw = json.dumps(doc).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


def test_search_selects_nodes(
    server: ServerProcess, home: Path, agents: list[str], tmp_path: Path
) -> None:
    ChefSearch.names = [agents[1], agents[0], agents[1]]
    ChefSearch.public_key = server.admin_key.public_key()
    ChefSearch.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ChefSearch)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = tmp_path / "pushjobs.toml"
        search_url = f"http://127.0.0.1:{httpd.server_port}/organizations/acme"
        cfg.write_text(
            home.joinpath(".config/pushjobs/config.toml").read_text()
            + toml_document({"chef_server_url": search_url}, {})
        )
        r = pushjobs(home, "--config", str(cfg), "job", "start", "hello", "-s", "role:web")
        assert r.returncode == 0, r.stdout + r.stderr
        job_id = started_id(r.stdout)
        assert ChefSearch.seen == [("role:web", "0"), ("role:web", "1"), ("role:web", "2")]
        assert server.get(f"jobs/{job_id}").json()["nodes"] == {"succeeded": sorted(agents)}
        r = pushjobs(home, "--config", str(cfg), "node", "status", "role:web")
        assert r.stdout == f"{agents[1]}\tavailable\n{agents[0]}\tavailable\n"
    finally:
        httpd.shutdown()
        httpd.server_close()
    r = pushjobs(home, "job", "start", "hello", "-s", "role:web")  # no chef_server_url
    assert r.returncode == 3
    assert r.stderr == "ERROR: --search needs chef_server_url (the Chef Server to search)\n"


# ---------------------------------------------------------------- JSON and events


def test_json_shapes(server: ServerProcess, home: Path, agents: list[str]) -> None:
    r = pushjobs(home, "--json", "job", "start", "hello", agents[0], "--capture")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)  # nothing but the job object on stdout
    assert job == server.get(f"jobs/{job['id']}").json()
    assert job["status"] == "complete" and job["capture_output"] is True

    r = pushjobs(home, "job", "start", "hello", agents[0], "--nowait", "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert set(doc) == {"id", "uri"} and doc["uri"].endswith(doc["id"])
    server.wait_job(doc["id"])

    r = pushjobs(home, "job", "list", "--json")
    jobs = json.loads(r.stdout)
    assert {doc["id"], job["id"]} <= {j["id"] for j in jobs}
    assert all("nodes" not in j for j in jobs)
    r = pushjobs(home, "job", "list", "--json", "--limit", "2", "--offset", "1")
    assert [j["id"] for j in json.loads(r.stdout)] == [j["id"] for j in jobs[1:3]]

    r = pushjobs(home, "job", "status", job["id"], "--nodes", "--json")
    status = json.loads(r.stdout)
    assert status["job"] == job
    assert [n["node_name"] for n in status["nodes"]] == [agents[0]]
    assert status["nodes"][0]["exit_status"] == 0

    r = pushjobs(home, "job", "start", "both", agents[1], "--json", "--show-output", "all")
    doc = json.loads(r.stdout)
    assert doc["output"] == {agents[1]: {"stdout": "out\n", "stderr": "err\n"}}
    assert doc["job"]["nodes"] == {"succeeded": [agents[1]]}


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line as JSON (`--events` prints nothing else)."""
    assert stdout.endswith("\n"), stdout
    return [json.loads(line) for line in stdout.splitlines()]


def test_events(server: ServerProcess, home: Path, agents: list[str]) -> None:
    r = pushjobs(home, "job", "start", "hello", agents[0], "--events")
    assert r.returncode == 0, r.stderr
    events = json_lines(r.stdout)
    names = [e["event"] for e in events]
    assert names == [
        "start",
        "quorum_vote",
        "quorum_succeeded",
        "run_start",
        "run_complete",
        "job_complete",
        "job",
    ]
    assert events[0]["id"] == "job-1" and events[0]["data"]["command"] == "hello"
    assert events[-2]["data"]["status"] == "complete"
    job = events[-1]["data"]  # the final job object is the last line
    assert set(events[-1]) == {"event", "data"}
    assert job == server.get(f"jobs/{job['id']}").json()


def test_events_show_output_and_watch(server: ServerProcess, home: Path, agents: list[str]) -> None:
    a = agents[1]
    r = pushjobs(home, "job", "start", "binary", a, "--events", "--show-output", "all")
    assert r.returncode == 0, r.stderr
    events = json_lines(r.stdout)
    assert [e["event"] for e in events[-3:]] == ["output", "output", "job"]
    assert events[-3]["data"] == {"node": a, "channel": "stdout", "base64": "b2v/Cg=="}
    assert events[-2]["data"] == {"node": a, "channel": "stderr", "text": "fine\n"}
    job = events[-1]["data"]
    assert job["status"] == "complete" and job["nodes"] == {"succeeded": [a]}

    # --nowait: one JSON line; `job watch --events` follows it and ends with the same shape
    r = pushjobs(home, "job", "start", "hello", a, "--events", "--nowait")
    assert r.returncode == 0, r.stderr
    (created,) = json_lines(r.stdout)
    assert created["event"] == "created" and created["data"]["uri"].endswith(created["data"]["id"])
    r = pushjobs(home, "job", "watch", created["data"]["id"], "--events")
    assert r.returncode == 0, r.stderr
    events = json_lines(r.stdout)
    assert events[-1]["event"] == "job" and events[-1]["data"]["status"] == "complete"
    # a finished job: just the job line
    r = pushjobs(home, "job", "watch", created["data"]["id"], "--events", "--json")
    assert json_lines(r.stdout) == [{"event": "job", "data": events[-1]["data"]}]


# ---------------------------------------------------------------- watch, status, list, output


def test_nowait_watch_status_output(server: ServerProcess, home: Path, agents: list[str]) -> None:
    r = pushjobs(home, "job", "start", "both", *agents, "--capture", "--nowait")
    assert r.returncode == 0
    job_id = started_id(r.stdout)
    assert r.stdout == f"Started.  Job ID: {job_id}\n"

    r = pushjobs(home, "job", "watch", job_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Complete." in r.stdout or r.stdout.startswith("id:")
    assert "2 nodes: 2 succeeded" in r.stdout

    r = pushjobs(home, "job", "status", job_id, "--nodes")
    assert r.returncode == 0
    assert "capture_output: true" in r.stdout
    table = r.stdout.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == [
        "NODE",
        "STATUS",
        "EXIT",
        "SIGNAL",
        "STARTED",
        "FINISHED",
        "STDOUT",
        "STDERR",
        "TRUNCATED",
    ]
    assert table[1].startswith(sorted(agents)[0]) and " succeeded " in table[1]

    r = pushjobs(home, "job", "output", job_id, agents[0])
    assert (r.returncode, r.stdout) == (0, "out\n")
    r = pushjobs(home, "job", "output", job_id, agents[0], "--channel", "stderr")
    assert r.stdout == "err\n"
    r = pushjobs(home, "job", "output", job_id, agents[0], "not-in-job", "--channel", "both")
    assert r.returncode == 3
    assert r.stdout == f"==> {agents[0]} stdout <==\nout\n==> {agents[0]} stderr <==\nerr\n"
    assert r.stderr == (
        "no output for not-in-job: the job did not capture output, the node did not run the "
        "command, or nothing has arrived yet\n"
    )

    r = pushjobs(home, "job", "list", "--status", "complete")
    assert r.returncode == 0
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "COMMAND", "CREATED", "RUN_TIMEOUT"]
    assert any(row.startswith(job_id) and "complete" in row for row in rows)


def test_watch_unknown_job_exit_3(server: ServerProcess, home: Path) -> None:
    r = pushjobs(home, "job", "watch", "f" * 32)
    assert r.returncode == 3
    assert r.stderr == f"ERROR: 404 Not Found: job '{'f' * 32}' not found\n"
    r = pushjobs(home, "job", "watch", "f" * 32, "--knife-compatible-exit")
    assert r.returncode == 100


def test_output_follow(server: ServerProcess, home: Path, agents: list[str]) -> None:
    a, b = agents
    r = pushjobs(home, "job", "start", "lines", a, b, "--capture", "--nowait")
    job_id = started_id(r.stdout)
    r = pushjobs(home, "job", "output", job_id, a, b, "--channel", "both", "--follow")
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for node in (a, b):
        mine = [line for line in lines if line.startswith(f"{node}: ")]
        assert mine == [f"{node}: one", f"{node}: two", f"{node}: three"]
        assert f"{node} [stderr]: oops" in lines
    server.wait_job(job_id)
    # one node, one channel: the bytes unchanged
    r = pushjobs(home, "job", "output", job_id, a, "--follow")
    assert (r.returncode, r.stdout) == (0, "one\ntwo\nthree\n")


# ---------------------------------------------------------------- abort and Ctrl-C


def test_ctrl_c_watch_and_abort(server: ServerProcess, home: Path, agent_factory: Any) -> None:
    agent = agent_factory(whitelist=WHITELIST)
    proc = popen_cli("job", "start", "sleep", agent.name, env=cli_env(home))
    try:
        assert proc.stdout is not None
        job_id = started_id(proc.stdout.readline())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("Running") or not line:
                break
        assert line.startswith("Running (1/1 in progress)"), line
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 130
    assert err == (
        f"Job {job_id} continues on the server; follow it with: pushjobs job watch {job_id}\n"
    )
    assert server.get(f"jobs/{job_id}").json()["status"] == "running"

    # `job watch` picks the running job up from the feed and ends when it is aborted
    watch = popen_cli("job", "watch", job_id, env=cli_env(home))
    try:
        assert watch.stdout is not None
        seen = [watch.stdout.readline(), watch.stdout.readline()]
        assert seen == ["Voting.\n", "Running (1/1 in progress) ...\n"]
        r = pushjobs(home, "job", "abort", job_id)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"Aborted.  Job ID: {job_id}\nid:")
        assert "status:      aborted" in r.stdout
        assert f"  aborted: {agent.name}" in r.stdout
        out, err = watch.communicate(timeout=20)
    finally:
        kill_if_running(watch)
    assert watch.returncode == 1, err
    assert out.startswith("Aborted.\n")
    assert "1 node: 1 aborted" in out
    r = pushjobs(home, "job", "abort", job_id)
    assert r.returncode == 3
    assert r.stderr == f"ERROR: job {job_id} has already finished with status aborted\n"


# ---------------------------------------------------------------- errors


def test_forbidden_user_exit_3(server: ServerProcess, tmp_path: Path, agents: list[str]) -> None:
    name, key = server.make_client(unique_name("cli-nonadmin"))
    home = tmp_path / "home"
    creds = home / ".chef" / "credentials"  # knife's credentials file alone is enough
    creds.parent.mkdir(parents=True)
    knife = {"client_name": name, "client_key": key, "chef_server_url": server.org_url}
    creds.write_text(toml_document({}, {"default": knife}))
    forbidden = (
        f"ERROR: 403 Forbidden: User or client '{name}' does not have access to that action on "
        "this server.\n"
    )
    r = pushjobs(home, "node", "status", agents[0])  # a node's key may not read either (F4)
    no_traceback(r)
    assert r.returncode == 3 and r.stderr == forbidden
    r = pushjobs(home, "job", "start", "hello", agents[0])
    no_traceback(r)
    assert r.returncode == 3
    assert r.stderr == forbidden
    r = pushjobs(home, "job", "start", "hello", agents[0], "--knife-compatible-exit")
    assert r.returncode == 100


def test_bad_signature_and_unreachable_server(
    server: ServerProcess, home: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    from pushjobs.protocol.keys import generate_rsa_key, private_key_pem

    other.write_bytes(private_key_pem(generate_rsa_key()))
    other.chmod(0o600)  # else the CLI warns about the key's mode on stderr
    r = pushjobs(home, "node", "status", "-k", str(other))
    assert r.returncode == 3
    assert r.stderr == (
        f"ERROR: 401 Unauthorized: Invalid signature for user or client '{server.admin_user}'\n"
    )
    r = pushjobs(home, "node", "status", "--server-url", "http://127.0.0.1:9/organizations/x")
    no_traceback(r)
    assert r.returncode == 3
    assert r.stderr.startswith("ERROR: cannot reach http://127.0.0.1:9/organizations/x: ")


def test_usage_errors_and_version(home: Path, tmp_path: Path) -> None:
    r = pushjobs(home, "job", "start")
    assert r.returncode == 3
    assert r.stderr.startswith("ERROR: No job specified.\nusage: pushjobs job start")
    r = pushjobs(home, "job", "start", "hello", "n1", "--knife-compatible-exit", "-q", "x")
    assert r.returncode == 1
    assert r.stderr == "ERROR: Invalid Format please enter integer or percent\n"
    r = pushjobs(tmp_path, "node", "status")  # an empty HOME: no settings at all
    assert r.returncode == 3
    assert r.stderr.startswith("ERROR: missing setting 'server_url'")
    assert "config.toml" in r.stderr
    r = pushjobs(home, "--version")
    assert r.returncode == 0 and r.stdout.startswith("pushjobs ")

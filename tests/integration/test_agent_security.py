"""Agent hardening against a hostile job writer, server or man in the middle (issue 15).

F1 runs a real agent against the real server. F7 and F8 need a server that misbehaves on
purpose, so the test plays it: a small HTTP config endpoint plus raw ZeroMQ PUB/ROUTER sockets
bound by the test (`RogueServer`); the agent under test is the real `pushjobs-agent` process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import zmq

from pushjobs.agent.cgroup import cgroup2_mount, cgroup2_path
from pushjobs.protocol.codec import decode_body
from pushjobs.protocol.envelope import seal_hmac
from pushjobs.protocol.keys import (
    encrypt_session_key,
    generate_rsa_key,
    private_key_pem,
    public_key_pem,
)
from pushjobs.protocol.timestamps import format_rfc1123
from tests.support.agents import AgentFactory, AgentProcess, agent_command, write_agent_config
from tests.support.jobs import post_job
from tests.support.procs import kill_pid, memory_kib, pids_alive, spawn_logged, stop_process
from tests.support.server import ServerProcess
from tests.support.toml import toml_string
from tests.support.waits import wait_for

# ---- F1: the job's env cannot escape the whitelist --------------------------------------------


def test_job_env_cannot_load_code_or_pick_the_program(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "bash-env-ran"
    evil_marker = tmp_path / "evil-bash-ran"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "bash").write_text(f"#!/bin/sh\ntouch {evil_marker}\necho EVIL\n")
    (evil / "bash").chmod(0o755)
    touch = shutil.which("touch")
    assert touch is not None
    (evil / "touch").symlink_to(touch)  # so that an evaluated BASH_ENV would work
    report = tmp_path / "report.txt"
    script = tmp_path / "report.sh"
    script.write_text(
        "#!/bin/bash\n"
        f'{{ echo "bash=$BASH"; echo "path=$PATH"; echo "bash_env=${{BASH_ENV-unset}}"; '
        f'echo "ld_preload=${{LD_PRELOAD-unset}}"; env | grep ^CHEF_PUSH_ENV_ | sort; '
        f"}} > {report}\n"
    )
    agent = agent_factory(whitelist=f'"report" = {toml_string(f"bash {script}")}')
    job_id = post_job(
        server,
        "report",
        [agent.name],
        capture_output=True,
        env={
            "BASH_ENV": f"$(touch {marker})",
            "LD_PRELOAD": "/nonexistent.so",
            "PATH": str(evil),
        },
    )
    job = server.wait_job(job_id)
    assert job["nodes"] == {"succeeded": [agent.name]}, (job, agent.log_tail())
    assert not evil_marker.exists(), "the job's PATH chose the program"
    assert not marker.exists(), "BASH_ENV from the job was evaluated"
    lines = report.read_text().splitlines()
    assert lines[0] in ("bash=/usr/bin/bash", "bash=/bin/bash")
    assert lines[1] == f"path={os.environ['PATH']}"
    assert lines[2:4] == ["bash_env=unset", "ld_preload=unset"]
    assert lines[4:] == [
        f"CHEF_PUSH_ENV_BASH_ENV=$(touch {marker})",
        "CHEF_PUSH_ENV_LD_PRELOAD=/nonexistent.so",
        f"CHEF_PUSH_ENV_PATH={evil}",
    ]
    stderr = output_of(server, job_id, agent.name, "stderr") or b""
    assert b"LD_PRELOAD" not in stderr, stderr


def test_operator_can_opt_in_to_a_denied_name(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    report = tmp_path / "report.txt"
    agent = agent_factory(
        whitelist=f'"show" = {{ run = {toml_string(f"echo $PYTHONPATH $RELEASE > {report}")}, '
        "shell = true }",
        extra={"allowed_overwritable_env_vars": ["PYTHONPATH"]},
    )
    job_id = post_job(server, "show", [agent.name], env={"PYTHONPATH": "/opt/lib", "RELEASE": "42"})
    assert server.wait_job(job_id)["nodes"] == {"succeeded": [agent.name]}
    assert report.read_text() == "/opt/lib\n"  # RELEASE is not listed: CHEF_PUSH_ENV_RELEASE


def test_opted_in_path_still_does_not_pick_the_program(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    evil_marker = tmp_path / "evil-printf-ran"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "printf").write_text(f"#!/bin/sh\n: > {evil_marker}\n")
    (evil / "printf").chmod(0o755)
    agent = agent_factory(
        whitelist='"hello" = "printf hello"', extra={"allowed_overwritable_env_vars": ["PATH"]}
    )
    job_id = post_job(server, "hello", [agent.name], capture_output=True, env={"PATH": str(evil)})
    assert server.wait_job(job_id)["nodes"] == {"succeeded": [agent.name]}
    assert not evil_marker.exists(), "the job's PATH chose the program"
    assert output_of(server, job_id, agent.name, "stdout") == b"hello"


def output_of(server: ServerProcess, job_id: str, node: str, channel: str) -> bytes | None:
    response = server.get(
        f"jobs/{job_id}/output/{node}/{channel}", headers={"Accept": "application/octet-stream"}
    )
    return response.content if response.status_code == 200 else None


# ---- a server that misbehaves on purpose (F7, F8) ---------------------------------------------


class RogueServer:
    """Serves an unencrypted config document over HTTP and binds raw XPUB and ROUTER sockets:
    whatever the test sends there reaches the agent as if the server sent it."""

    def __init__(self, tmp: Path) -> None:
        self.session_key = os.urandom(32)
        self.incarnation = str(uuid.uuid4())
        self.client_key = generate_rsa_key()
        self.key_path = tmp / "client.pem"
        self.key_path.write_bytes(private_key_pem(self.client_key))
        self.key_path.chmod(0o600)
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 0)
        self.pub.bind("tcp://127.0.0.1:*")
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.bind("tcp://127.0.0.1:*")
        self.fetches = 0
        self.document = json.dumps(
            {
                "type": "config",
                "host": "127.0.0.1",
                "node": "rogue-node",
                "protocol_versions": ["3.0"],
                "public_key": public_key_pem(generate_rsa_key()),
                "encoded_session_key": {
                    "method": "hmac_sha256",
                    "key": encrypt_session_key(self.client_key.public_key(), self.session_key),
                },
                "push_jobs": {
                    "heartbeat": {
                        "out_addr": self.pub.getsockopt_string(zmq.LAST_ENDPOINT),
                        "command_addr": self.router.getsockopt_string(zmq.LAST_ENDPOINT),
                        "interval": 1.0,
                        "offline_threshold": 10_000,  # no heartbeats: never "offline"
                        "online_threshold": 1,
                    }
                },
                "lifetime": 3600,
                "max_message_skew": 300,
                "incarnation_id": self.incarnation,
                "max_output_bytes": 1_048_576,
                "max_body_size": 65_536,
            }
        ).encode()
        rogue = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rogue.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(rogue.document)))
                self.end_headers()
                self.wfile.write(rogue.document)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/organizations/testorg"

    def command(self, sequence: int, msg_type: str = "ack") -> list[bytes]:
        """The frames of a command signed with the session key (without the routing id)."""
        fields = {
            "type": msg_type,
            "sequence": sequence,
            "timestamp": format_rfc1123(time.time()),
            "server": "rogue",
        }
        header, body = seal_hmac("3.0", fields, self.session_key)
        return [header, body]

    def next_heartbeat_from(self, timeout: float = 20.0) -> bytes:
        """Wait for the agent's next message on the ROUTER; return its routing id."""
        if not self.router.poll(int(timeout * 1000)):
            raise AssertionError("the agent sent nothing on the command channel")
        return self.router.recv_multipart()[0]

    def next_sequence_from(self, timeout: float = 20.0) -> tuple[bytes, int]:
        """Wait for the agent's next message on the ROUTER; return its routing id and sequence."""
        if not self.router.poll(int(timeout * 1000)):
            raise AssertionError("the agent sent nothing on the command channel")
        routing_id, _header, body = self.router.recv_multipart()
        return routing_id, int(decode_body("3.0", body, 1 << 20)["sequence"])

    def wait_subscribed(self, timeout: float = 20.0) -> None:
        if not self.pub.poll(int(timeout * 1000)):
            raise AssertionError("the agent did not subscribe")
        self.pub.recv()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.ctx.destroy(linger=0)


class RogueAgent:
    """A real `pushjobs-agent` process configured for a `RogueServer`."""

    def __init__(self, rogue: RogueServer, tmp: Path) -> None:
        self.log_path = tmp / "agent.log"
        config = tmp / "agent.toml"
        write_agent_config(
            config,
            server_url=rogue.url,
            node_name="rogue-node",
            client_key=rogue.key_path,
            file_dir=tmp / "files",
            lock_file=tmp / "chef-client.pid",
            whitelist='"true" = "true"',
            extra={"allow_unencrypted": True},
        )
        self.proc = spawn_logged(agent_command(config), self.log_path, cwd=tmp)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log()}")
            return self.log().count(text) >= count

        wait_for(seen, timeout, what=f"{text!r} x{count} in the agent log")

    def peak_rss_kib(self) -> int:
        return memory_kib(self.proc.pid, "VmHWM")

    def stop(self) -> int:
        return stop_process(self.proc)


@pytest.fixture
def rogue(tmp_path: Path) -> Iterator[tuple[RogueServer, RogueAgent]]:
    server = RogueServer(tmp_path)
    agent = RogueAgent(server, tmp_path)
    try:
        yield server, agent
    finally:
        agent.stop()
        server.close()


# ---- F7: no replay of a server command after a reconfigure ------------------------------------


def test_replayed_command_after_reconfigure_is_dropped(
    rogue: tuple[RogueServer, RogueAgent],
) -> None:
    server, agent = rogue
    first = server.next_heartbeat_from()
    recorded = server.command(5)
    server.router.send_multipart([first, *recorded])
    agent.wait_log("received ack (sequence 5")
    agent.proc.send_signal(signal.SIGUSR1)  # reconfigure: same server incarnation, new sockets
    agent.wait_log("connected: heartbeat", count=2)
    while (routing_id := server.next_heartbeat_from()) == first:
        pass
    server.router.send_multipart([routing_id, *recorded])  # the replay
    server.router.send_multipart([routing_id, *server.command(6)])
    agent.wait_log("received ack (sequence 6")
    log = agent.log()
    assert log.count("received ack (sequence 5") == 1, log
    assert "dropped message: command channel: sequence not increasing (5)" in log
    assert server.fetches == 2


def test_agent_sequence_keeps_counting_across_connections(
    rogue: tuple[RogueServer, RogueAgent],
) -> None:
    """The server keeps one sequence high-water per client incarnation (F7): the agent must not
    restart at 1 on a new connection, or its first messages there would look like replays."""
    server, agent = rogue
    first, before = server.next_sequence_from()
    agent.proc.send_signal(signal.SIGUSR1)  # reconfigure: new sockets, same agent process
    agent.wait_log("connected: heartbeat", count=2)
    while True:
        routing_id, sequence = server.next_sequence_from()
        if routing_id != first:
            break
        before = sequence
    assert sequence > before, (before, sequence)


# ---- F8: a rogue server cannot blow up the agent's memory -------------------------------------

OVERSIZED = 48 * 1024 * 1024


def test_oversized_messages_are_refused_without_buffering(
    rogue: tuple[RogueServer, RogueAgent],
) -> None:
    server, agent = rogue
    server.wait_subscribed()
    routing_id = server.next_heartbeat_from()
    server.router.send_multipart([routing_id, *server.command(1)])
    agent.wait_log("received ack (sequence 1")
    before = agent.peak_rss_kib()
    blob = zmq.Frame(b"\0" * OVERSIZED)
    server.pub.send(blob, copy=False)
    server.router.send_multipart([routing_id, b"x" * 100, blob], copy=False)
    agent.wait_log("connection closed: heartbeat socket")
    agent.wait_log("connection closed: command socket")
    # libzmq abandons a connection it dropped for an oversized message (no retry follows): the
    # agent notices and reconfigures within one heartbeat interval, then a proper command gets
    # through (sent to each routing id heard from, as a queued heartbeat may name a dead one)
    agent.wait_log("libzmq will not reconnect, reconfiguring")
    agent.wait_log("reconfiguring: ", count=1)
    deadline = time.monotonic() + 20
    while "received ack (sequence 2" not in agent.log():
        assert time.monotonic() < deadline, agent.log()
        server.router.send_multipart([server.next_heartbeat_from(), *server.command(2)])
        time.sleep(0.2)
    grown = agent.peak_rss_kib() - before
    assert grown < 16 * 1024, f"agent peak RSS grew by {grown} KiB"
    assert agent.proc.poll() is None


# ---- F10: a job that calls setsid() does not survive abort or timeout -------------------------

ESCAPE_WHITELIST = """
"escape" = { run = 'setsid sleep 1000 & echo $! > "$PIDS"; sleep 1000', shell = true }
"""


def escaped_pid(pid_file: Path, agent: AgentProcess) -> int:
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 15, what="pid file")
    pid = int(pid_file.read_text())
    wait_for(lambda: os.getsid(pid) == pid, 5, what="setsid in the job")  # left the group
    return pid


@pytest.fixture
def delegated_cgroup() -> Iterator[Path]:
    """A cgroup v2 marked delegated as systemd marks a `Delegate=yes` unit's cgroup; skipped
    where this machine cannot create one (no cgroup v2, not root, no xattrs)."""
    with open("/proc/self/mountinfo") as fh:
        mount = cgroup2_mount(fh.read())
    with open("/proc/self/cgroup") as fh:
        own = cgroup2_path(fh.read())
    if mount is None or own is None:
        pytest.skip("no cgroup v2 hierarchy here")
    path = Path(mount) / own.lstrip("/") / f"pushjobs-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup here: {exc}")
    try:
        try:
            os.setxattr(path, "trusted.delegate", b"1")
        except OSError as exc:
            pytest.skip(f"cannot mark a cgroup delegated here: {exc}")
        yield path
    finally:
        for child in [*path.glob("*/"), path]:
            if (child / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (child / "cgroup.kill").write_text("1")
        for child in [*path.glob("*/"), path]:
            with contextlib.suppress(OSError):
                wait_for(lambda c=child: not (c / "cgroup.procs").read_text().strip(), 10)  # type: ignore[misc]
                child.rmdir()


def start_in_cgroup(agent: AgentProcess, cgroup: Path) -> None:
    """Start the agent as systemd would with Delegate=yes: inside the delegated cgroup."""
    procs = str(cgroup / "cgroup.procs")

    def enter() -> None:
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))

    agent.proc = spawn_logged(
        agent_command(agent.config_path), agent.log_path, cwd=agent.dir, preexec_fn=enter
    )
    agent.wait_available()


@pytest.mark.parametrize("ending", ["abort", "timeout"])
def test_setsid_descendant_is_killed_with_a_delegated_cgroup(
    agent_factory: AgentFactory,
    server: ServerProcess,
    tmp_path: Path,
    delegated_cgroup: Path,
    ending: str,
) -> None:
    pid_file = tmp_path / "pids"
    agent = agent_factory(whitelist=ESCAPE_WHITELIST, start=False)
    start_in_cgroup(agent, delegated_cgroup)
    assert f"job containment: one cgroup per job below {delegated_cgroup}" in agent.log_text()
    options: dict[str, Any] = {"env": {"PIDS": str(pid_file)}}
    if ending == "timeout":
        options["run_timeout"] = 3
    job_id = post_job(server, "escape", [agent.name], **options)
    pid = 0
    try:
        pid = escaped_pid(pid_file, agent)
        job_cgroup = delegated_cgroup / f"job-{job_id}"
        assert str(pid) in (job_cgroup / "cgroup.procs").read_text().split()
        if ending == "abort":
            assert server.post(f"jobs/{job_id}/abort").status_code == 200
        job = server.wait_job(job_id, timeout=30)
        assert job["status"] == ("aborted" if ending == "abort" else "timed_out")
        wait_for(lambda: not pids_alive([pid]), 15, what="the setsid() descendant killed")
        wait_for(lambda: not job_cgroup.exists(), 15, what="the job's cgroup removed")
        agent.wait_available()
        # the agent left the job cgroup after the fork and was not killed with it
        assert str(agent.pid) in (delegated_cgroup / "cgroup.procs").read_text().split()
    finally:
        if pid:
            kill_pid(pid)
        agent.stop()


def test_without_delegation_the_group_kill_is_logged_as_incomplete(
    agent_factory: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    agent = agent_factory(whitelist=ESCAPE_WHITELIST)
    assert "job containment: process group only; a job process that calls setsid()" in (
        agent.log_text()
    )
    assert agent.log_text().count("job containment:") == 1
    job_id = post_job(server, "escape", [agent.name], env={"PIDS": str(pid_file)})
    pid = 0
    try:
        pid = escaped_pid(pid_file, agent)
        assert server.post(f"jobs/{job_id}/abort").status_code == 200
        wait_for(lambda: f"job {job_id}: reporting aborted" in agent.log_text(), 15)
        assert pids_alive([pid]) == [pid]  # the documented limit of the fallback
    finally:
        if pid:
            kill_pid(pid)


# ---- F10: file_dir and key permissions ---------------------------------------------------------


def run_agent(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agent_command(agent.config_path, *args),
        capture_output=True,
        text=True,
        timeout=30,  # an agent that starts instead of refusing is killed by subprocess.run
        cwd=agent.dir,
    )


@pytest.mark.parametrize("problem", ["group-writable", "other-owner", "relative"])
def test_unsafe_file_dir_refuses_to_start(agent_factory: AgentFactory, problem: str) -> None:
    agent = agent_factory(start=False)
    agent.file_dir.mkdir(mode=0o700)
    if problem == "group-writable":
        agent.file_dir.chmod(0o777)
        expected = f"file_dir {agent.file_dir} is writable by group or others (mode 0777)"
    elif problem == "other-owner":
        os.chown(agent.file_dir, 65534, 65534)
        expected = f"file_dir {agent.file_dir} is owned by uid 65534, not by the agent's user"
    else:
        agent.config_path.write_text(
            agent.config_path.read_text().replace(f'"{agent.file_dir}"', '"files"')
        )
        expected = "file_dir must be an absolute path"
    for args in ((), ("--check-config",)):
        result = run_agent(agent, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.splitlines()[-1] == f"pushjobs-agent: {expected}", result.stderr
        assert "Traceback" not in result.stderr


def test_readable_key_is_warned_about(agent_factory: AgentFactory) -> None:
    agent = agent_factory(start=False)
    agent.key_path.chmod(0o644)
    warning = f"client_key {agent.key_path} is readable by group or others (mode 0644)"
    result = run_agent(agent, "--check-config")
    assert result.returncode == 0, result.stderr
    assert f"warning: {warning}: chmod 600 it" in result.stderr
    agent.start()
    assert f"WARNING [{agent.name}] {warning}" in agent.log_text()
    agent.key_path.chmod(0o600)
    assert "readable by group" not in run_agent(agent, "--check-config").stderr

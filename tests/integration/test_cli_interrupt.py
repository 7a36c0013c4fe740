"""Ctrl-C always wins (cli.md §3.5): SIGINT at many moments of `pushjobs job start`.

One private server, one real agent and one silent scripted node (it never votes, so voting
lasts until the job is aborted). The CLI talks to the server through a TCP relay the test can
cut, to interrupt it in the middle of an SSE reconnect; the last round kills the server itself.
Every round must exit 130 with the `continues on the server` line as the last line on stderr.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.agents import AgentProcess
from tests.support.cli import cli_env, make_cli_home, popen_cli
from tests.support.clients import unique_name
from tests.support.peer import open_peer
from tests.support.procs import kill_if_running
from tests.support.server import FINAL_JOB_STATUSES, ServerProcess
from tests.support.waits import wait_for

WHITELIST = '"sleep" = "sleep 30"\n'


class Relay:
    """A TCP relay to the server whose open connections `cut()` resets (a network fault)."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            conns, self.open = self.open, []
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                s.close()  # RST
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def silent_node(server_factory: Any) -> Iterator[tuple[ServerProcess, str]]:
    """A private server and a connected node that never votes (aborts are answered)."""
    server = server_factory()
    name, key = server.make_client(unique_name("silent"))
    ready, stop = threading.Event(), threading.Event()

    async def peer_main() -> None:
        async with open_peer(server.http_url, server.org, name, key, answer_aborts=True) as peer:
            peer.start_heartbeats(0.5)
            await peer.wait_node_state(status="online", availability="available")
            ready.set()
            while not stop.is_set():
                await trio.sleep(0.1)
                peer.drain()

    thread = threading.Thread(target=trio.run, args=(peer_main,), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the scripted node never became available"
        yield server, name
    finally:
        stop.set()
        thread.join(10)


def cli_home(tmp_path: Path, server: ServerProcess, port: int) -> dict[str, str]:
    """The CLI's environment, its config signing as the admin of `server` reached at `port`."""
    url = f"http://127.0.0.1:{port}/organizations/{server.org}"
    return cli_env(make_cli_home(server, tmp_path / "home", server_url=url))


def test_ctrl_c_always_wins(silent_node: tuple[ServerProcess, str], tmp_path: Path) -> None:
    server, silent = silent_node
    agent = AgentProcess(server, tmp_path / "agent", unique_name("busy"), whitelist=WHITELIST)
    agent.start()
    relay = Relay(int(server.http_url.rsplit(":", 1)[1]))
    env = cli_home(tmp_path, server, relay.port)
    rng = random.Random(15)
    # (moment, delay after the cue): 20 rounds
    rounds = (
        [("started", d) for d in (0, 0, 0, 0.0005, 0.001, 0.003)]
        + [("voting", rng.uniform(0, 0.4)) for _ in range(3)]
        + [("running", rng.uniform(0, 0.5)) for _ in range(5)]
        + [("reconnect", d) for d in (0, 0.3, 0.7, 1.0, 1.3)]
        + [("server_stopped", 0.5)]
    )
    failures: list[str] = []
    try:
        for moment, delay in rounds:
            node = silent if moment == "voting" else agent.name
            proc = popen_cli("job", "start", "sleep", node, env=env)
            job_id = ""
            try:
                assert proc.stdout is not None
                first = proc.stdout.readline()
                assert first.startswith("Started.  Job ID: "), first + proc.communicate()[1]
                job_id = first.split()[-1]
                if moment != "started":
                    cue = "Voting." if moment == "voting" else "Running (1/1"
                    while not (line := proc.stdout.readline()).startswith(cue):
                        assert line, f"{moment}: the CLI ended before {cue!r}"
                if moment == "reconnect":
                    relay.cut()
                elif moment == "server_stopped":
                    assert server.proc is not None
                    os.kill(server.proc.pid, signal.SIGKILL)  # the feed drops, reopens fail
                if delay:
                    time.sleep(delay)
                os.kill(proc.pid, signal.SIGINT)
                _, err = proc.communicate(timeout=20)
            finally:
                kill_if_running(proc)
            want = f"Job {job_id} continues on the server; follow it with: pushjobs job watch"
            last = err.splitlines()[-1] if err.strip() else ""
            if proc.returncode != 130 or not last.startswith(want) or "Traceback" in err:
                failures.append(f"{moment} (+{delay:.4f}s): exit {proc.returncode}, {err!r}")
            if moment == "server_stopped":
                server.stop()
            else:
                status = server.get(f"jobs/{job_id}").json()["status"]
                if status in FINAL_JOB_STATUSES:
                    failures.append(f"{moment}: the job ended ({status}) before it was aborted")
                server.post(f"jobs/{job_id}/abort")
                server.wait_job(job_id)
                wait_for(
                    lambda: server.node_state(agent.name)["availability"] == "available",
                    what="the agent idle again",
                )
    finally:
        relay.close()
        agent.stop()
    assert not failures, "\n".join(failures)


def test_ctrl_c_wins_when_sigint_was_inherited_ignored(
    server: ServerProcess, agent_factory: Any, tmp_path: Path
) -> None:
    """`pushjobs job start ... &` from a script inherits SIGINT ignored; `kill -INT` still wins."""
    agent = agent_factory(whitelist=WHITELIST)
    env = cli_home(tmp_path, server, int(server.http_url.rsplit(":", 1)[1]))
    proc = popen_cli(
        "job",
        "start",
        "sleep",
        agent.name,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    job_id = ""
    try:
        assert proc.stdout is not None
        job_id = proc.stdout.readline().removeprefix("Started.  Job ID: ").strip()
        while not (line := proc.stdout.readline()).startswith("Running (1/1"):
            assert line, "the CLI ended before the job ran"
        os.kill(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGINT was ignored: the CLI went on following")
    finally:
        kill_if_running(proc)
        server.post(f"jobs/{job_id}/abort")
    assert proc.returncode == 130
    assert err == (
        f"Job {job_id} continues on the server; follow it with: pushjobs job watch {job_id}\n"
    )

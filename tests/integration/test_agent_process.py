"""The agent's job runner against real processes (no server): agent.md §8–§14."""

from __future__ import annotations

import base64
import contextlib
import grp
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from pushjobs.agent.process import SystemHost, prepare_file_dir
from pushjobs.agent.runner import JobRunner, Send
from pushjobs.agent.whitelist import Whitelist
from pushjobs.agent.worker import JobWorker
from tests.support.procs import pids_alive, read_pids

WHITELIST = {
    "hello": {"run": "sh -c 'echo out; echo err >&2; exit 3'"},
    "ok": "true",
    "env": "env",
    "pwd": "pwd",
    "id": {"run": "id -u; id -g; id -G; umask", "shell": True},
    "catfile": {"run": 'cat "$CHEF_PUSH_JOB_FILE"; ls -ln "$CHEF_PUSH_JOB_FILE"', "shell": True},
    "group": {
        "run": 'sleep 300 & echo $! > "$PIDS"; sleep 300 & echo $! >> "$PIDS"; '
        'echo $$ >> "$PIDS"; wait',
        "shell": True,
    },
    "stubborn": {
        "run": "trap '' TERM; echo $$ > \"$PIDS\"; echo ready; while true; do sleep 0.1; done",
        "shell": True,
    },
    "daemonize": {"run": 'sleep 300 & echo $! > "$PIDS"; echo started', "shell": True},
    "missing": "/nonexistent/program-xyz",
    "noexec": {"run": "PLACEHOLDER"},
    "big": {"run": "head -c 300000 /dev/zero", "shell": True},
    "locked": {"run": "true", "lock": True},
}


class Harness:
    def __init__(self, tmp: Path, host: SystemHost | None = None, **kw: Any) -> None:
        self.tmp = tmp
        self.file_dir = tmp / "files"
        prepare_file_dir(str(self.file_dir))
        table = dict(WHITELIST)
        noexec = tmp / "noexec.sh"
        noexec.write_text("#!/bin/sh\necho no\n")
        noexec.chmod(0o644)
        table["noexec"] = {"run": str(noexec)}
        self.runner = JobRunner(
            node_name="node1",
            whitelist=Whitelist(table, str(tmp / "lock.pid")),
            host=host or SystemHost(),
            file_dir=str(self.file_dir),
            max_run_time=kw.pop("max_run_time", 3600),
            max_output_bytes=kw.pop("max_output_bytes", 1 << 20),
            log=logging.getLogger("pushjobs.agent.test"),
        )
        self.sent: list[Send] = []
        self.worker = JobWorker(
            self.runner,
            self.sent.append,
            kill_grace=kw.pop("kill_grace", 1.0),
            log=logging.getLogger("pushjobs.agent.test"),
        )

    def command(self, **fields: Any) -> None:
        self.worker.submit(fields)

    async def run_job(self, job_id: str, command: str, timeout: float = 20, **extra: Any) -> Send:
        self.command(type="commit", job_id=job_id, command=command, **extra)
        self.command(type="run", job_id=job_id)
        return await self.final(job_id, timeout)

    async def wait(self, predicate: Callable[[], Any], timeout: float = 20) -> Any:
        with trio.fail_after(timeout):
            while not (value := predicate()):
                await trio.sleep(0.02)
        return value

    async def final(self, job_id: str | None, timeout: float = 20) -> Send:
        kinds = ("succeeded", "failed", "aborted", "nack_commit", "nack_run")
        return await self.wait(
            lambda: next((m for m in self.sent if m.job_id == job_id and m.type in kinds), None),
            timeout,
        )

    def types(self, job_id: str | None) -> list[str]:
        return [m.type for m in self.sent if m.job_id == job_id]

    def output(self, job_id: str, channel: str) -> bytes:
        parts = sorted(
            (m.fields["offset"], m.fields["data"])
            for m in self.sent
            if m.job_id == job_id and m.type == "output" and m.fields["channel"] == channel
        )
        return b"".join(data for _, data in parts)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.worker.run)
        yield h
        await h.worker.shutdown()
        nursery.cancel_scope.cancel()


def gone(pids: list[int]) -> bool:
    """True once none of `pids` lives. The group was signalled, but a loaded kernel delivers
    the signal and ends the processes a moment later: callers wait for this, with a deadline."""
    return pids_alive(pids) == []


async def test_exit_status_and_output(harness: Harness) -> None:
    final = await harness.run_job("j1", "hello", capture=True)
    assert final.type == "failed"
    assert final.fields == {"exit_status": 3, "signal": None, "stdout_bytes": 4, "stderr_bytes": 4}
    assert harness.types("j1")[:2] == ["ack_commit", "ack_run"]
    assert harness.output("j1", "stdout") == b"out\n"
    assert harness.output("j1", "stderr") == b"err\n"
    assert harness.runner.idle


async def test_success(harness: Harness) -> None:
    final = await harness.run_job("j2", "ok")
    assert final.type == "succeeded" and final.fields == {"exit_status": 0, "signal": None}


async def test_environment_and_dir(harness: Harness, tmp_path: Path) -> None:
    await harness.run_job("j3", "env", capture=True, env={"MY_VAR": "v 1"})
    env = dict(
        line.split("=", 1)
        for line in harness.output("j3", "stdout").decode().splitlines()
        if "=" in line
    )
    assert env["MY_VAR"] == "v 1"
    assert env["CHEF_PUSH_JOB_ID"] == env["PUSHY_JOB_ID"] == "j3"
    assert env["CHEF_PUSH_NODE_NAME"] == env["PUSHY_NODE_NAME"] == "node1"
    assert "CHEF_PUSH_JOB_FILE" not in env
    await harness.run_job("j4", "pwd", capture=True, dir=str(tmp_path))
    assert harness.output("j4", "stdout") == f"{tmp_path}\n".encode()


@pytest.mark.parametrize(
    "file, content",
    [
        ("raw:héllo\nworld", "héllo\nworld".encode()),
        ("base64:" + base64.b64encode(bytes(range(256))).decode(), bytes(range(256))),
    ],
)
async def test_job_file(harness: Harness, file: str, content: bytes) -> None:
    job_id = f"f{uuid.uuid4().hex[:8]}"
    final = await harness.run_job(job_id, "catfile", capture=True, file=file)
    assert final.type == "succeeded", harness.output(job_id, "stderr")
    out = harness.output(job_id, "stdout")
    assert out.startswith(content)
    listing = out[len(content) :].decode()
    assert listing.startswith("-rw-------")
    assert str(harness.file_dir / f"job-{job_id}") in listing
    assert not (harness.file_dir / f"job-{job_id}").exists()  # removed after the job


async def test_abort_kills_the_whole_group(harness: Harness, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    harness.command(type="commit", job_id="ja", command="group", env={"PIDS": str(pid_file)})
    harness.command(type="run", job_id="ja")
    await harness.wait(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 3)
    pids = read_pids(pid_file, missing_ok=False)
    assert pids_alive(pids) == pids
    harness.command(type="abort")
    final = await harness.final("ja")
    assert final.type == "aborted"
    await harness.wait(lambda: gone(pids))
    assert harness.runner.idle


async def test_abort_while_committed_and_idle(harness: Harness) -> None:
    harness.command(type="commit", job_id="jc", command="ok")
    harness.command(type="abort")
    harness.command(type="abort")
    await harness.wait(lambda: len([m for m in harness.sent if m.type == "aborted"]) == 2)
    assert [(m.type, m.job_id) for m in harness.sent] == [
        ("ack_commit", "jc"),
        ("aborted", "jc"),
        ("aborted", None),
    ]


async def test_term_ignored_gets_killed_after_grace(harness: Harness, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    harness.command(
        type="commit", job_id="js", command="stubborn", capture=True, env={"PIDS": str(pid_file)}
    )
    harness.command(type="run", job_id="js")
    await harness.wait(lambda: b"ready" in harness.output("js", "stdout"))
    pid = read_pids(pid_file, missing_ok=False)[0]
    harness.command(type="abort")
    assert (await harness.final("js")).type == "aborted"
    await harness.wait(lambda: gone([pid]))


async def test_local_deadline(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_run_time=1)
    pid_file = tmp_path / "pids"
    async with trio.open_nursery() as nursery:
        await nursery.start(h.worker.run)
        final = await h.run_job("jt", "group", run_timeout=100, env={"PIDS": str(pid_file)})
        nursery.cancel_scope.cancel()
    assert final.type == "failed"
    assert final.fields["exit_status"] is None
    assert final.fields["signal"] in ("SIGTERM", "SIGKILL")
    await h.wait(lambda: gone(read_pids(pid_file, missing_ok=False)))


async def test_background_child_does_not_hold_the_job(harness: Harness, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    final = await harness.run_job("jd", "daemonize", capture=True, env={"PIDS": str(pid_file)})
    assert final.type == "succeeded"
    child = read_pids(pid_file, missing_ok=False)[0]
    try:
        assert pids_alive([child]) == [child]  # left alone after a normal exit
        assert harness.output("jd", "stdout") == b"started\n"
    finally:
        os.kill(child, 9)


async def test_program_not_found_127(harness: Harness) -> None:
    final = await harness.run_job("jn", "missing", capture=True)
    assert harness.types("jn") == ["ack_commit", "ack_run", "output", "failed"]
    assert final.fields["exit_status"] == 127 and final.fields["signal"] is None
    assert harness.output("jn", "stderr").startswith(b"pushjobs-agent: cannot start command: ")


async def test_not_executable_126(harness: Harness) -> None:
    final = await harness.run_job("jx", "noexec")
    assert harness.types("jx") == ["ack_commit", "ack_run", "failed"]
    assert final.fields["exit_status"] == 126


async def test_output_over_cap(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_output_bytes=100_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.worker.run)
        final = await h.run_job("jb", "big", capture=True)
        nursery.cancel_scope.cancel()
    assert final.fields["stdout_bytes"] == 300_000
    outputs = [m for m in h.sent if m.type == "output"]
    assert all(1 <= len(m.fields["data"]) <= 32768 for m in outputs)
    assert sum(len(m.fields["data"]) for m in outputs) == 100_000
    marked = [m for m in outputs if "omitted_bytes" in m.fields]
    assert len(marked) == 1 and marked[0].fields["omitted_bytes"] == 200_000
    assert marked[0].fields["offset"] == 300_000 - 25_000


async def test_lock_held_elsewhere_is_refused(harness: Harness, tmp_path: Path) -> None:
    import fcntl

    lock_path = tmp_path / "lock.pid"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        harness.command(type="commit", job_id="jl", command="locked")
        assert (await harness.final("jl")).type == "nack_commit"
    final = await harness.run_job("jl2", "locked")
    assert final.type == "succeeded"
    assert lock_path.read_text() == ""  # never truncated or written


async def test_internal_error_fails_the_job(tmp_path: Path) -> None:
    class BrokenHost(SystemHost):
        def base_environment(self) -> dict[str, str]:
            raise RuntimeError("environment exploded")

    h = Harness(tmp_path, host=BrokenHost())
    async with trio.open_nursery() as nursery:
        await nursery.start(h.worker.run)
        final = await h.run_job("ji", "ok", capture=True)
        # the runner is usable afterwards
        h.command(type="abort")
        await h.final(None)
        nursery.cancel_scope.cancel()
    assert final.type == "failed" and final.fields["exit_status"] is None
    assert h.runner.idle


async def test_shutdown_terminates_and_sends_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    pid_file = tmp_path / "pids"
    async with trio.open_nursery() as nursery:
        await nursery.start(h.worker.run)
        h.command(
            type="commit", job_id="jq", command="group", file="raw:x", env={"PIDS": str(pid_file)}
        )
        h.command(type="run", job_id="jq")
        # running = started and acknowledged (the pids can be written before `ack_run` is sent)
        await h.wait(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 3)
        await h.wait(lambda: "ack_run" in h.types("jq"))
        await h.worker.shutdown()
        nursery.cancel_scope.cancel()
    assert h.types("jq") == ["ack_commit", "ack_run"]
    await h.wait(lambda: gone(read_pids(pid_file, missing_ok=False)))
    assert list(h.file_dir.iterdir()) == []
    assert h.runner.idle


async def test_shutdown_while_the_process_is_being_spawned(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    pid_file = tmp_path / "pids"
    async with trio.open_nursery() as nursery:
        await nursery.start(h.worker.run)
        h.command(type="commit", job_id="jw", command="group", env={"PIDS": str(pid_file)})
        h.command(type="run", job_id="jw")
        # shut down exactly while the worker awaits the spawn (it runs in a thread)
        with trio.fail_after(20):
            while h.worker._starting is None:
                await trio.sleep(0)  # a bare checkpoint: the spawn must not finish meanwhile
        assert not h.worker._starting.is_set()
        await h.worker.shutdown()
        # the shutdown waited for the spawn and terminated and reaped the new process itself
        await h.wait(lambda: h.worker._starting.is_set())
        assert h.worker._process is None
        nursery.cancel_scope.cancel()
    assert h.types("jw") == ["ack_commit"]  # nothing reported after the shutdown began
    assert h.runner.idle
    if pid_file.exists():
        await h.wait(lambda: gone(read_pids(pid_file, missing_ok=False)))
    assert list(h.file_dir.iterdir()) == []


def test_prepare_file_dir_removes_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "new" / "files"
    assert prepare_file_dir(str(target)) == []
    assert (target.stat().st_mode & 0o777) == 0o711
    (target / "job-old").write_text("x")
    (target / "keep.txt").write_text("x")
    assert prepare_file_dir(str(target)) == ["job-old"]
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


# ---- run as another user (root only) ------------------------------------------------------------


@contextlib.contextmanager
def temporary_user() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    if shutil.which("useradd") is None or shutil.which("groupadd") is None:
        pytest.skip("useradd/groupadd not available")
    suffix = uuid.uuid4().hex[:6]
    user, group = f"pjt{suffix}", f"pjg{suffix}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "-M", "-d", f"/home/{user}", "-G", group, user], check=True)
        try:
            yield user, group
        finally:
            subprocess.run(["userdel", user], check=False)
    finally:
        subprocess.run(["groupdel", group], check=False)


async def test_run_as_user_with_groups_and_file() -> None:
    # pytest's tmp dirs are 0700: the job user could not reach its file there
    base = Path(tempfile.mkdtemp(prefix="pjagent-"))
    base.chmod(0o755)
    try:
        with temporary_user() as (user, group):
            harness = Harness(base)
            async with trio.open_nursery() as nursery:
                await nursery.start(harness.worker.run)
                await _run_as_user_checks(harness, user, group)
                nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _run_as_user_checks(harness: Harness, user: str, group: str) -> None:
    entry = pwd.getpwnam(user)
    extra_gid = grp.getgrnam(group).gr_gid
    final = await harness.run_job("ju", "id", capture=True, user=user)
    assert final.type == "succeeded", harness.output("ju", "stderr")
    uid, gid, groups, umask = harness.output("ju", "stdout").decode().split("\n")[:4]
    assert int(uid) == entry.pw_uid and int(gid) == entry.pw_gid
    assert extra_gid in {int(g) for g in groups.split()}
    assert 0 not in {int(g) for g in groups.split()}  # root's groups are dropped
    assert umask.strip() == "0022"
    final = await harness.run_job("jv", "catfile", capture=True, user=user, file="raw:secret")
    assert final.type == "succeeded", harness.output("jv", "stderr")
    listing = harness.output("jv", "stdout").decode()
    assert listing.startswith("secret-rw------- 1 " + str(entry.pw_uid))
    await harness.run_job("jw", "env", capture=True, user=user)
    env = harness.output("jw", "stdout").decode()
    assert f"HOME=/home/{user}\n" in env and f"USER={user}\n" in env
    assert f"LOGNAME={user}\n" in env


async def test_missing_user_and_dir_refused(harness: Harness, tmp_path: Path) -> None:
    harness.command(type="commit", job_id="m1", command="ok", user="no-such-user-xyz")
    assert (await harness.final("m1")).type == "nack_commit"
    harness.command(type="commit", job_id="m2", command="ok", dir=str(tmp_path / "absent"))
    assert (await harness.final("m2")).type == "nack_commit"
    harness.command(type="commit", job_id="m3", command="ok", file="nope:x")
    assert (await harness.final("m3")).type == "nack_commit"

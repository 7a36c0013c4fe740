"""The job runner state machine: every row of agent.md §8 and the checks of §9."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pushjobs.agent.environment import UserInfo
from pushjobs.agent.runner import (
    JobRunner,
    LockBusy,
    ProcessPlan,
    Send,
    StartProcess,
    Terminate,
)
from pushjobs.agent.whitelist import Whitelist
from pushjobs.protocol.vocabulary import AgentJobState

IDLE, COMMITTED, RUNNING = AgentJobState.IDLE, AgentJobState.COMMITTED, AgentJobState.RUNNING

LOCK = "/locks/chef.pid"


class FakeHost:
    def __init__(self, root: bool = True) -> None:
        self.root = root
        self.users = {
            "alice": UserInfo("alice", 1001, 1001, "/home/alice", (1001, 27)),
            "agent": UserInfo("agent", 500, 500, "/home/agent", (500,)),
        }
        self.dirs = {"/tmp", "/srv"}
        self.held: set[str] = set()
        self.busy: set[str] = set()
        self.removed: list[str] = []

    def lookup_user(self, name: str) -> UserInfo | None:
        return self.users.get(name)

    def is_root(self) -> bool:
        return self.root

    def own_user_name(self) -> str | None:
        return "agent"

    def is_dir(self, path: str) -> bool:
        return path in self.dirs

    def acquire_lock(self, path: str, command: str) -> object:
        if path in self.busy or path in self.held:
            raise LockBusy(f"'{command}' is already running (lock {path} is held)")
        if not path.startswith("/locks/"):
            raise LockBusy(f"cannot create lock {path}: its directory does not exist")
        self.held.add(path)
        return path

    def release_lock(self, handle: object) -> None:
        self.held.discard(str(handle))

    def remove_file(self, path: str) -> None:
        self.removed.append(path)

    def base_environment(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": "/root", "USER": "root"}


WHITELIST = {
    "echo hi": "echo hi",
    "chef-client": {"run": "chef-client", "lock": True},
    "held": {"run": "backup", "lock": True, "hold_lock": True},
    "nolockdir": {"run": "x", "lock": "/nowhere/x.lock"},
}


def make_runner(host: FakeHost | None = None, **kw: Any) -> tuple[JobRunner, FakeHost]:
    host = host or FakeHost()
    runner = JobRunner(
        node_name="node1",
        whitelist=Whitelist(WHITELIST, LOCK),
        host=host,
        file_dir="/var/lib/files",
        max_run_time=kw.pop("max_run_time", 86400),
        max_output_bytes=kw.pop("max_output_bytes", 1000),
        **kw,
    )
    return runner, host


def commit(job_id: Any = "job1", command: str = "echo hi", **extra: Any) -> dict[str, Any]:
    msg = {"type": "commit", "job_id": job_id, "command": command, "capture": False}
    if job_id is None:
        del msg["job_id"]
    msg.update(extra)
    return msg


def sends(actions: list[Any]) -> list[tuple[str, str | None]]:
    return [(a.type, a.job_id) for a in actions if isinstance(a, Send)]


def start_job(runner: JobRunner, job_id: str = "job1", **extra: Any) -> ProcessPlan:
    assert sends(runner.on_commit(commit(job_id, **extra))) == [("ack_commit", job_id)]
    actions = runner.on_run({"type": "run", "job_id": job_id})
    assert len(actions) == 1 and isinstance(actions[0], StartProcess)
    assert sends(runner.on_started()) == [("ack_run", job_id)]
    return actions[0].plan


# ---- §8 rows ------------------------------------------------------------------------------


def test_commit_idle_all_checks_pass() -> None:
    runner, _ = make_runner()
    assert sends(runner.on_commit(commit())) == [("ack_commit", "job1")]
    assert runner.state == COMMITTED
    assert runner.job_id == "job1"


def test_commit_idle_check_fails() -> None:
    runner, _ = make_runner()
    assert sends(runner.on_commit(commit(command="rm -rf /"))) == [("nack_commit", "job1")]
    assert runner.state == IDLE


@pytest.mark.parametrize("state", [COMMITTED, RUNNING])
def test_commit_while_busy(state: str, caplog: pytest.LogCaptureFixture) -> None:
    runner, _ = make_runner()
    if state == COMMITTED:
        runner.on_commit(commit())
    else:
        start_job(runner)
    assert sends(runner.on_commit(commit("job2"))) == [("nack_commit", "job2")]
    assert runner.state == state
    assert runner.job_id == "job1"
    assert "busy with job job1" in caplog.text


@pytest.mark.parametrize("state", [IDLE, COMMITTED, RUNNING])
def test_commit_without_job_id(state: str) -> None:
    runner, _ = make_runner()
    if state == COMMITTED:
        runner.on_commit(commit())
    elif state == RUNNING:
        start_job(runner)
    assert sends(runner.on_commit(commit(None))) == [("nack_commit", None)]
    assert runner.state == state


def test_run_committed_matching_job() -> None:
    runner, _ = make_runner()
    runner.on_commit(commit(run_timeout=10))
    actions = runner.on_run({"type": "run", "job_id": "job1"})
    assert [type(a) for a in actions] == [StartProcess]
    plan = actions[0].plan
    assert plan.argv == ["echo", "hi"]
    assert plan.time_limit == 15
    assert runner.state == RUNNING
    assert sends(runner.on_started()) == [("ack_run", "job1")]


@pytest.mark.parametrize(
    "state, run_id, expected",
    [
        (IDLE, "job1", "job1"),
        (IDLE, None, None),
        (COMMITTED, "other", "other"),
        (COMMITTED, 17, None),
        (RUNNING, "job1", "job1"),
    ],
)
def test_run_in_any_other_case_is_nacked(state: str, run_id: Any, expected: str | None) -> None:
    runner, _ = make_runner()
    if state == COMMITTED:
        runner.on_commit(commit())
    elif state == RUNNING:
        start_job(runner)
    msg = {"type": "run"} if run_id is None else {"type": "run", "job_id": run_id}
    assert sends(runner.on_run(msg)) == [("nack_run", expected)]
    assert runner.state == state


@pytest.mark.parametrize(
    "returncode, kind, exit_status, signame",
    [(0, "succeeded", 0, None), (3, "failed", 3, None), (-11, "failed", None, "SIGSEGV")],
)
def test_process_ended(returncode: int, kind: str, exit_status: Any, signame: Any) -> None:
    runner, _ = make_runner()
    start_job(runner)
    actions = runner.on_exited(returncode, 1.0)
    assert sends(actions) == [(kind, "job1")]
    assert actions[-1].fields == {"exit_status": exit_status, "signal": signame}
    assert runner.state == IDLE and runner.job is None


def test_local_deadline_terminates_then_failed_with_signal() -> None:
    runner, _ = make_runner()
    start_job(runner)
    assert runner.on_deadline() == [Terminate("deadline")]
    runner.on_signal_sent("SIGTERM")
    actions = runner.on_exited(-15, 2.0)
    assert sends(actions) == [("failed", "job1")]
    assert actions[-1].fields == {"exit_status": None, "signal": "SIGTERM"}
    assert runner.state == IDLE


def test_local_deadline_process_exiting_with_code_reports_sent_signal() -> None:
    runner, _ = make_runner()
    start_job(runner)
    runner.on_deadline()
    runner.on_signal_sent("SIGTERM")
    actions = runner.on_exited(0, 2.0)
    assert actions[-1].fields == {"exit_status": None, "signal": "SIGTERM"}


def test_abort_idle() -> None:
    runner, _ = make_runner()
    assert sends(runner.on_abort()) == [("aborted", None)]
    assert runner.state == IDLE


def test_abort_committed_releases_lock() -> None:
    runner, host = make_runner()
    runner.on_commit(commit(command="chef-client"))
    assert host.held == {LOCK}
    assert sends(runner.on_abort()) == [("aborted", "job1")]
    assert host.held == set()
    assert runner.state == IDLE


def test_abort_running_terminates_then_aborted_after_output() -> None:
    runner, _ = make_runner()
    start_job(runner, capture=True)
    runner.on_output("stdout", b"partial", 0.0)
    assert runner.on_abort() == [Terminate("abort")]
    assert runner.state == RUNNING  # until the process is gone
    actions = runner.on_exited(-15, 1.0)
    assert sends(actions) == [("output", "job1"), ("aborted", "job1")]
    assert actions[-1].fields == {}
    assert runner.state == IDLE


def test_abort_during_deadline_termination_is_answered_aborted() -> None:
    runner, _ = make_runner()
    start_job(runner)
    runner.on_deadline()
    assert runner.on_abort() == [Terminate("abort")]
    assert sends(runner.on_exited(-9, 1.0)) == [("aborted", "job1")]


def test_internal_error_committed() -> None:
    runner, host = make_runner()
    runner.on_commit(commit(command="chef-client"))
    actions = runner.on_internal_error("boom", 0.0)
    assert sends(actions) == [("failed", "job1")]
    assert actions[-1].fields["exit_status"] is None
    assert host.held == set()
    assert runner.state == IDLE


def test_internal_error_running_terminates_and_notes_stderr() -> None:
    runner, _ = make_runner()
    start_job(runner, capture=True)
    assert runner.on_internal_error("boom", 0.0) == [Terminate("internal error")]
    actions = runner.on_exited(-15, 1.0)
    outputs = [a for a in actions if isinstance(a, Send) and a.type == "output"]
    assert outputs[-1].fields["channel"] == "stderr"
    assert outputs[-1].fields["data"] == b"pushjobs-agent: internal error: boom\n"
    assert sends(actions)[-1] == ("failed", "job1")
    assert actions[-1].fields["exit_status"] is None
    assert actions[-1].fields["stderr_bytes"] == len(b"pushjobs-agent: internal error: boom\n")
    assert runner.state == IDLE


def test_internal_error_idle_does_nothing() -> None:
    runner, _ = make_runner()
    assert runner.on_internal_error("boom", 0.0) == []


# ---- start failures, output, clean-up -------------------------------------------------------


def test_start_failure_acks_run_then_fails_with_stderr_note() -> None:
    runner, _ = make_runner()
    runner.on_commit(commit(capture=True, file="raw:x"))
    runner.on_run({"type": "run", "job_id": "job1"})
    actions = runner.on_start_failed("echo: command not found", 127, 0.0)
    assert sends(actions) == [("ack_run", "job1"), ("output", "job1"), ("failed", "job1")]
    assert (
        actions[1].fields["data"]
        == b"pushjobs-agent: cannot start command: echo: command not found\n"
    )
    assert actions[-1].fields["exit_status"] == 127
    assert actions[-1].fields["signal"] is None
    assert runner.state == IDLE


def test_job_file_removed_and_lock_released_after_the_job() -> None:
    runner, host = make_runner()
    plan = start_job(runner, command="held", file="raw:hello")
    assert plan.file_path == "/var/lib/files/job-job1"
    assert plan.file_bytes == b"hello"
    assert host.held == {LOCK}  # hold_lock: kept while running
    runner.on_exited(0, 1.0)
    assert host.held == set()
    assert host.removed == ["/var/lib/files/job-job1"]


def test_lock_released_before_the_process_starts() -> None:
    runner, host = make_runner()
    runner.on_commit(commit(command="chef-client"))
    assert host.held == {LOCK}
    runner.on_run({"type": "run", "job_id": "job1"})
    assert host.held == set()


def test_capture_streams_output_and_counts_bytes() -> None:
    runner, _ = make_runner(max_output_bytes=100)
    start_job(runner, capture=True)
    assert runner.on_output("stdout", b"a" * 10, 0.0) == []
    assert runner.next_flush() == pytest.approx(0.1)
    flushed = runner.on_tick(0.2)
    assert [(a.fields["offset"], a.fields["data"]) for a in flushed] == [(0, b"a" * 10)]
    runner.on_output("stderr", b"e" * 300, 0.3)
    actions = runner.on_exited(0, 1.0)
    final = actions[-1]
    assert final.type == "succeeded"
    assert final.fields == {
        "exit_status": 0,
        "signal": None,
        "stdout_bytes": 10,
        "stderr_bytes": 300,
    }
    tail = [a for a in actions if a.type == "output" and a.fields.get("omitted_bytes")]
    assert tail[0].fields["offset"] == 275 and tail[0].fields["omitted_bytes"] == 200


def test_without_capture_output_is_only_counted() -> None:
    runner, _ = make_runner()
    start_job(runner)
    assert runner.on_output("stdout", b"x" * 50, 0.0) == []
    actions = runner.on_exited(0, 1.0)
    assert sends(actions) == [("succeeded", "job1")]
    assert "stdout_bytes" not in actions[-1].fields


def test_deadline_capped_by_max_run_time() -> None:
    runner, _ = make_runner(max_run_time=60)
    plan = start_job(runner, run_timeout=3600)
    assert plan.time_limit == 60
    runner2, _ = make_runner(max_run_time=60)
    assert start_job(runner2).time_limit == 60  # no run_timeout: max_run_time


def test_plan_environment_and_user() -> None:
    runner, _ = make_runner(allowed_overwritable_env_vars=["FOO"])
    plan = start_job(runner, user="alice", dir="/srv", env={"FOO": "1", "bar": "2"}, file="raw:x")
    assert plan.user is not None and plan.user.uid == 1001
    assert plan.cwd == "/srv"
    env = plan.env
    assert env["HOME"] == "/home/alice" and env["USER"] == "alice" and env["LOGNAME"] == "alice"
    assert env["FOO"] == "1" and env["CHEF_PUSH_ENV_bar"] == "2" and "bar" not in env
    assert env["CHEF_PUSH_JOB_ID"] == env["PUSHY_JOB_ID"] == "job1"
    assert env["CHEF_PUSH_NODE_NAME"] == env["PUSHY_NODE_NAME"] == "node1"
    assert env["CHEF_PUSH_JOB_FILE"] == env["PUSHY_JOB_FILE"] == "/var/lib/files/job-job1"


def test_ack_is_not_a_runner_input() -> None:
    # `ack` is ignored before it reaches the runner (worker.submit); the runner has no handler
    runner, _ = make_runner()
    assert not hasattr(runner, "on_ack")


# ---- §9 checks, in order -----------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, reason",
    [
        ({"job_id": "bad id!"}, "invalid job id"),
        ({"job_id": "x" * 65}, "invalid job id"),
        ({"command": 42}, "command is not a string"),
        ({"command": "echo hi\n"}, "control character"),
        ({"command": "reboot"}, "not in the whitelist"),
        ({"user": "mallory"}, "user 'mallory' does not exist"),
        ({"user": 7}, "user is not a string"),
        ({"dir": "/nope"}, "does not exist or is not a directory"),
        ({"file": "text"}, "must start with 'raw:' or 'base64:'"),
        ({"file": "base64:!!!"}, "invalid base64"),
        ({"file": "raw:" + "x" * 100_001}, "larger than 100000 bytes"),
        ({"env": ["A"]}, "env must be an object of strings"),
        ({"env": {"A": 1}}, "env must be an object of strings"),
        ({"env": {"": "x"}}, "invalid environment variable name"),
        ({"env": {"A=B": "x"}}, "invalid environment variable name"),
        ({"env": {"A\0": "x"}}, "invalid environment variable name"),
        ({"env": {"A": "x\0y"}}, "contains a NUL character"),
        ({"run_timeout": -1}, "run_timeout"),
        ({"command": "nolockdir"}, "directory does not exist"),
    ],
)
def test_commit_checks(
    extra: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    runner, _ = make_runner()
    job_id = extra.pop("job_id", "job1")
    msg = commit(job_id, **extra)
    assert sends(runner.on_commit(msg)) == [("nack_commit", job_id)]
    assert runner.state == IDLE
    assert reason in caplog.text
    assert f"job {job_id}: commit refused" in caplog.text


def test_checks_run_in_order_first_failure_wins(caplog: pytest.LogCaptureFixture) -> None:
    runner, _ = make_runner()
    runner.on_commit(commit(command="reboot", user="mallory", dir="/nope"))
    assert "not in the whitelist" in caplog.text
    assert "mallory" not in caplog.text


def test_lock_held_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost()
    host.busy.add(LOCK)
    runner, _ = make_runner(host)
    assert sends(runner.on_commit(commit(command="chef-client"))) == [("nack_commit", "job1")]
    assert f"'chef-client' is already running (lock {LOCK} is held)" in caplog.text


def test_non_root_agent_may_only_run_as_itself() -> None:
    runner, _ = make_runner(FakeHost(root=False))
    assert sends(runner.on_commit(commit(user="alice"))) == [("nack_commit", "job1")]
    assert sends(runner.on_commit(commit(user="agent"))) == [("ack_commit", "job1")]


def test_base64_file_decoded_strictly() -> None:
    runner, _ = make_runner()
    payload = bytes(range(256))
    plan = start_job(runner, file="base64:" + base64.b64encode(payload).decode())
    assert plan.file_bytes == payload


def test_file_exactly_100000_bytes_is_accepted() -> None:
    runner, _ = make_runner()
    assert sends(runner.on_commit(commit(file="raw:" + "x" * 100_000))) == [("ack_commit", "job1")]


def test_process_lost_to_an_internal_error_ends_failed() -> None:
    runner, _ = make_runner()
    start_job(runner, capture=True)
    runner.note_error("supervision failed")
    actions = runner.on_exited(-9, 1.0)
    assert sends(actions)[-1] == ("failed", "job1")
    assert actions[-1].fields["exit_status"] is None and actions[-1].fields["signal"] == "SIGKILL"
    assert any(
        a.type == "output" and b"internal error: supervision failed" in a.fields["data"]
        for a in actions
    )
    assert runner.state == IDLE

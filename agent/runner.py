"""The job runner state machine (agent.md §8, §9, §13, §14). Sans-I/O.

Inputs are method calls (server commands, process events, timer ticks); outputs are actions the
trio worker carries out (`Send`, `StartProcess`, `Terminate`). Small synchronous system checks
(user look-up, directory test, lock, file removal) go through an injected `Host`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import signal
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Protocol, Union

from pushjobs.agent.capture import ChannelCapture, Chunk
from pushjobs.agent.environment import UserInfo, build_environment, env_problem
from pushjobs.agent.whitelist import Refusal, Resolution, Whitelist, has_control_char
from pushjobs.protocol.compat import dataclass
from pushjobs.protocol.limits import JOB_FILE_LIMIT, JOB_ID_LIMIT
from pushjobs.protocol.vocabulary import AgentJobState, MessageType, OutputChannel

JOB_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{JOB_ID_LIMIT}}}")  # agent.md §9 check 2
DEADLINE_EXTRA = 5  # seconds after run_timeout: the server's own timer fires first


class LockBusy(Exception):
    """The lock could not be taken; the message is the logged reason."""


class Host(Protocol):
    """The small synchronous system operations the runner needs."""

    def lookup_user(self, name: str) -> UserInfo | None: ...
    def is_root(self) -> bool: ...
    def own_user_name(self) -> str | None: ...
    def is_dir(self, path: str) -> bool: ...
    def acquire_lock(self, path: str, command: str) -> object: ...  # raises LockBusy
    def release_lock(self, handle: object) -> None: ...
    def remove_file(self, path: str) -> None: ...
    def base_environment(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class Send:
    """Queue a job message in the outbox."""

    type: MessageType
    job_id: str | None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    """Everything needed to start the job's process."""

    job_id: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    user: UserInfo | None
    file_path: str | None
    file_bytes: bytes | None
    time_limit: float  # seconds from start until the local deadline


@dataclass(frozen=True, slots=True)
class StartProcess:
    plan: ProcessPlan


@dataclass(frozen=True, slots=True)
class Terminate:
    """Terminate the process group (TERM, grace, KILL); report `process_exited` afterwards."""

    reason: str


Action = Union[Send, StartProcess, Terminate]


@dataclass
class Job:
    job_id: str
    command: str
    resolution: Resolution
    capture: bool
    user: UserInfo | None = None
    dir: str | None = None
    env: dict[str, str] | None = None
    file_bytes: bytes | None = None
    run_timeout: int | None = None
    lock: object | None = None
    file_path: str | None = None
    process: bool = False  # a process is alive (started, not yet reaped)
    ending: str | None = None  # None | "abort" | "deadline" | "error"
    error: str | None = None
    sent_signal: str | None = None
    captures: dict[str, ChannelCapture] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {OutputChannel.STDOUT: 0, OutputChannel.STDERR: 0}
    )


class JobRunner:
    """One job at a time: idle → committed → running → idle."""

    def __init__(
        self,
        *,
        node_name: str,
        whitelist: Whitelist,
        host: Host,
        file_dir: str,
        max_run_time: int,
        max_output_bytes: int = 1_048_576,
        allowed_overwritable_env_vars: list[str] | None = None,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.node_name = node_name
        self.whitelist = whitelist
        self.host = host
        self.file_dir = file_dir
        self.max_run_time = max_run_time
        self.max_output_bytes = max_output_bytes
        self.allowed_overwritable_env_vars = allowed_overwritable_env_vars
        self.log = log or logging.getLogger("pushjobs.agent.runner")
        self.state: AgentJobState = AgentJobState.IDLE
        self.job: Job | None = None

    # ---- views -------------------------------------------------------------------------

    @property
    def job_id(self) -> str | None:
        return self.job.job_id if self.job else None

    @property
    def idle(self) -> bool:
        return self.state == AgentJobState.IDLE

    # ---- server commands ---------------------------------------------------------------

    def on_commit(self, msg: Mapping[str, Any]) -> list[Action]:
        """`commit`: run the checks of agent.md §9 in order; ack or nack."""
        job_id = msg.get("job_id")
        if not isinstance(job_id, str):
            self.log.warning("commit without a job id refused")
            return [Send(MessageType.NACK_COMMIT, None)]
        if self.job is not None:
            self.log.warning("job %s: commit refused: busy with job %s", job_id, self.job.job_id)
            return [Send(MessageType.NACK_COMMIT, job_id)]
        try:
            job = self._check_commit(job_id, msg)
        except _Refused as refused:
            self.log.warning("job %s: commit refused: %s", job_id, refused)
            return [Send(MessageType.NACK_COMMIT, job_id)]
        self.job = job
        self.state = AgentJobState.COMMITTED
        self.log.info("job %s: committed to %r", job_id, job.command)
        return [Send(MessageType.ACK_COMMIT, job_id)]

    def _check_commit(self, job_id: str, msg: Mapping[str, Any]) -> Job:
        if not JOB_ID_RE.fullmatch(job_id):
            raise _Refused("invalid job id")
        command = msg.get("command")
        if not isinstance(command, str):
            raise _Refused("command is not a string")
        if has_control_char(command):
            raise _Refused(f"command {command!r} contains a control character")
        resolution = self.whitelist.resolve(command)
        if isinstance(resolution, Refusal):
            raise _Refused(resolution.reason)
        self.log.info("job %s: whitelist %r -> %s", job_id, command, resolution.describe())
        user = None
        user_name = msg.get("user")
        if user_name is not None:
            if not isinstance(user_name, str):
                raise _Refused("user is not a string")
            user = self.host.lookup_user(user_name)
            if user is None:
                raise _Refused(f"user {user_name!r} does not exist")
            if not self.host.is_root() and user_name != self.host.own_user_name():
                raise _Refused(
                    f"cannot run as user {user_name!r}: the agent is not running as root"
                )
        directory = msg.get("dir")
        if directory is not None and (
            not isinstance(directory, str) or not self.host.is_dir(directory)
        ):
            raise _Refused(f"directory {directory!r} does not exist or is not a directory")
        file_bytes = None
        file_text = msg.get("file")
        if file_text is not None:
            file_bytes = decode_job_file(file_text)
        env = msg.get("env")
        if env is not None:
            problem = env_problem(env)
            if problem:
                raise _Refused(problem)
            env = dict(env)
        run_timeout = msg.get("run_timeout")
        if run_timeout is not None and (
            not isinstance(run_timeout, int) or isinstance(run_timeout, bool) or run_timeout < 0
        ):
            raise _Refused("run_timeout must be a non-negative integer")
        capture = msg.get("capture") is True
        lock = None
        if resolution.lock_path is not None:
            try:
                lock = self.host.acquire_lock(resolution.lock_path, command)
            except LockBusy as exc:
                raise _Refused(str(exc)) from None
        return Job(
            job_id=job_id,
            command=command,
            resolution=resolution,
            capture=capture,
            user=user,
            dir=directory,
            env=env,
            file_bytes=file_bytes,
            run_timeout=run_timeout,
            lock=lock,
        )

    def on_run(self, msg: Mapping[str, Any]) -> list[Action]:
        """`run`: start the committed job's process, or `nack_run`."""
        raw_id = msg.get("job_id")
        job_id = raw_id if isinstance(raw_id, str) else None
        job = self.job
        if self.state != AgentJobState.COMMITTED or job is None or job_id != job.job_id:
            why = f"busy with job {job.job_id} ({self.state})" if job else "no job committed"
            self.log.warning("job %s: run refused: %s", job_id, why)
            return [Send(MessageType.NACK_RUN, job_id)]
        if job.file_bytes is not None:
            job.file_path = f"{self.file_dir.rstrip('/')}/job-{job.job_id}"
        env = build_environment(
            self.host.base_environment(),
            node_name=self.node_name,
            job_id=job.job_id,
            user=job.user,
            job_env=job.env,
            allowed_overwritable=self.allowed_overwritable_env_vars,
            file_path=job.file_path,
        )
        limit = float(self.max_run_time)
        if job.run_timeout is not None:
            limit = min(limit, float(job.run_timeout + DEADLINE_EXTRA))
        if job.capture:
            job.captures = {
                OutputChannel.STDOUT: ChannelCapture(self.max_output_bytes),
                OutputChannel.STDERR: ChannelCapture(self.max_output_bytes),
            }
        if not job.resolution.hold_lock:
            self._release_lock(job)
        self.state = AgentJobState.RUNNING
        plan = ProcessPlan(
            job_id=job.job_id,
            argv=list(job.resolution.argv),
            env=env,
            cwd=job.dir,
            user=job.user,
            file_path=job.file_path,
            file_bytes=job.file_bytes,
            time_limit=limit,
        )
        return [StartProcess(plan)]

    def on_abort(self) -> list[Action]:
        """`abort`: always answered with `aborted` (after termination when running)."""
        job = self.job
        if job is None:
            self.log.debug("abort while idle: answering aborted")
            return [Send(MessageType.ABORTED, None)]
        if self.state == AgentJobState.COMMITTED or not job.process:
            self.log.info("job %s: aborted before it ran", job.job_id)
            self._cleanup()
            return [Send(MessageType.ABORTED, job.job_id)]
        self.log.info("job %s: abort: terminating the process group", job.job_id)
        job.ending = "abort"
        return [Terminate("abort")]

    # ---- process events ----------------------------------------------------------------

    def on_started(self) -> list[Action]:
        """The process was started."""
        job = self._running_job()
        job.process = True
        self.log.info("job %s: process started", job.job_id)
        return [Send(MessageType.ACK_RUN, job.job_id)]

    def on_start_failed(self, reason: str, exit_status: int | None, now: float) -> list[Action]:
        """The process could not be started: `ack_run`, a stderr note, `failed`."""
        job = self._running_job()
        self.log.error("job %s: cannot start command: %s", job.job_id, reason)
        actions: list[Action] = [Send(MessageType.ACK_RUN, job.job_id)]
        actions += self._note(job, f"pushjobs-agent: cannot start command: {reason}\n", now)
        actions += self._finish(job, MessageType.FAILED, exit_status, None)
        return actions

    def on_output(self, channel: str, data: bytes, now: float) -> list[Action]:
        """Bytes read from the process's stdout or stderr."""
        job = self.job
        if job is None or self.state != AgentJobState.RUNNING or not data:
            return []
        job.counts[channel] += len(data)
        capture = job.captures.get(channel)
        if capture is None:
            return []
        return self._output(job, channel, capture.feed(data, now))

    def next_flush(self) -> float | None:
        """When `on_tick` has something to release, or None."""
        if self.job is None:
            return None
        times = [t for c in self.job.captures.values() if (t := c.next_flush()) is not None]
        return min(times) if times else None

    def on_tick(self, now: float) -> list[Action]:
        """Release output chunks whose 100 ms delay has passed."""
        job = self.job
        if job is None:
            return []
        actions: list[Action] = []
        for channel, capture in job.captures.items():
            actions += self._output(job, channel, capture.poll(now))
        return actions

    def on_deadline(self) -> list[Action]:
        """The local deadline passed while the process runs."""
        job = self.job
        if job is None or not job.process or job.ending is not None:
            return []
        self.log.warning("job %s: local deadline passed, terminating the process group", job.job_id)
        job.ending = "deadline"
        return [Terminate("deadline")]

    def on_signal_sent(self, signame: str) -> None:
        """Remember the last signal the worker sent to the group (for timed-out jobs)."""
        if self.job is not None:
            self.job.sent_signal = signame

    def on_exited(self, returncode: int, now: float) -> list[Action]:
        """The main process was reaped and the pipes drained: remaining output, final message."""
        job = self._running_job()
        job.process = False
        signame = _signal_name(-returncode) if returncode < 0 else None
        if job.ending == "abort":
            self.log.info("job %s: aborted (%s)", job.job_id, _describe(returncode))
            return self._finish(job, MessageType.ABORTED, None, None)
        if job.ending == "deadline":
            self.log.warning("job %s: ended at the local deadline", job.job_id)
            return self._finish(
                job, MessageType.FAILED, None, signame or job.sent_signal or "SIGTERM"
            )
        if job.ending == "error":
            actions = self._note(job, f"pushjobs-agent: internal error: {job.error}\n", now)
            return actions + self._finish(job, MessageType.FAILED, None, signame)
        self.log.info(
            "job %s: process ended (%s), stdout %d bytes, stderr %d bytes",
            job.job_id,
            _describe(returncode),
            job.counts[OutputChannel.STDOUT],
            job.counts[OutputChannel.STDERR],
        )
        if returncode == 0:
            return self._finish(job, MessageType.SUCCEEDED, 0, None)
        if returncode > 0:
            return self._finish(job, MessageType.FAILED, returncode, None)
        return self._finish(job, MessageType.FAILED, None, signame)

    def on_internal_error(self, message: str, now: float) -> list[Action]:
        """An exception in the runner or worker: end the job as `failed` (agent.md §14)."""
        job = self.job
        if job is None:
            return []
        if job.process:
            if job.ending == "abort":
                return []  # the abort answer follows the process exit
            job.ending = "error"
            job.error = message
            return [Terminate("internal error")]
        if self.state == AgentJobState.RUNNING and job.captures:
            actions = self._note(job, f"pushjobs-agent: internal error: {message}\n", now)
        else:
            actions = []
        return actions + self._finish(job, MessageType.FAILED, None, None)

    def note_error(self, message: str) -> None:
        """The process was lost through an internal error; `on_exited` then reports `failed`."""
        job = self.job
        if job is not None and job.ending != "abort":
            job.ending = "error"
            job.error = message

    def forget(self) -> None:
        """Drop the job without sending anything (shutdown, or a failed internal-error path)."""
        if self.job is not None:
            self._cleanup()

    # ---- internals ---------------------------------------------------------------------

    def _running_job(self) -> Job:
        if self.job is None or self.state != AgentJobState.RUNNING:
            raise RuntimeError("no running job")
        return self.job

    def _output(self, job: Job, channel: str, chunks: list[Chunk]) -> list[Action]:
        actions: list[Action] = []
        for chunk in chunks:
            fields: dict[str, Any] = {
                "channel": channel,
                "offset": chunk.offset,
                "data": chunk.data,
            }
            if chunk.omitted_bytes is not None:
                fields["omitted_bytes"] = chunk.omitted_bytes
            actions.append(Send(MessageType.OUTPUT, job.job_id, fields))
        return actions

    def _note(self, job: Job, text: str, now: float) -> list[Action]:
        """A stderr line from the agent itself (capture jobs only)."""
        capture = job.captures.get(OutputChannel.STDERR)
        if capture is None:
            return []
        data = text.encode("utf-8", "replace")
        job.counts[OutputChannel.STDERR] += len(data)
        return self._output(job, OutputChannel.STDERR, capture.feed(data, now))

    def _finish(
        self, job: Job, kind: MessageType, exit_status: int | None, signame: str | None
    ) -> list[Action]:
        actions: list[Action] = []
        for channel, capture in job.captures.items():
            actions += self._output(job, channel, capture.finish())
        fields: dict[str, Any] = {}
        if kind != MessageType.ABORTED:
            fields = {"exit_status": exit_status, "signal": signame}
            if job.captures:
                fields["stdout_bytes"] = job.counts[OutputChannel.STDOUT]
                fields["stderr_bytes"] = job.counts[OutputChannel.STDERR]
        outcome = f"signal {signame}" if signame else f"exit status {exit_status}"
        if exit_status is None and signame is None:
            outcome = "no exit status"
        self.log.info("job %s: reporting %s (%s)", job.job_id, kind, outcome)
        actions.append(Send(kind, job.job_id, fields))
        self._cleanup()
        return actions

    def _release_lock(self, job: Job) -> None:
        if job.lock is not None:
            lock, job.lock = job.lock, None
            self.host.release_lock(lock)

    def _cleanup(self) -> None:
        job = self.job
        self.job = None
        self.state = AgentJobState.IDLE
        if job is None:
            return
        try:
            if job.file_path is not None:
                self.host.remove_file(job.file_path)
        finally:
            self._release_lock(job)


class _Refused(Exception):
    pass


def decode_job_file(text: object) -> bytes:
    """The bytes of a commit's `file` (agent.md §9 check 7); raises _Refused."""
    if not isinstance(text, str):
        raise _Refused("file is not a string")
    if text.startswith("raw:"):
        data = text[4:].encode("utf-8", "surrogatepass")
    elif text.startswith("base64:"):
        try:
            data = base64.b64decode(text[7:], validate=True)
        except (binascii.Error, ValueError):
            raise _Refused("file has an invalid base64 payload") from None
    else:
        raise _Refused("file must start with 'raw:' or 'base64:'")
    if len(data) > JOB_FILE_LIMIT:
        raise _Refused(f"file is larger than {JOB_FILE_LIMIT} bytes")
    return data


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    return f"exit status {returncode}"

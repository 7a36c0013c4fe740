"""Process execution for jobs (agent.md §10, §12, §14): host checks, job files, spawning,
pipe reading, and terminating whole process groups."""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import trio

from pushjobs.agent.cgroup import CgroupError, JobCgroups
from pushjobs.agent.environment import UserInfo
from pushjobs.agent.runner import LockBusy, ProcessPlan
from pushjobs.protocol.vocabulary import OutputChannel

READ_CHUNK = 32 * 1024
CGROUP_EMPTY_WAIT = 2.0  # seconds a killed job's cgroup may take to empty before rmdir
PIPE_DRAIN_AFTER_EXIT = 2.0  # seconds the pipes are still read after the main process exited
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def agent_search_path() -> str:
    """The PATH programs are looked up in: the agent's own, never the job's."""
    return os.environ.get("PATH") or SAFE_PATH


def resolve_program(program: str, search_path: str) -> str | None:
    """`program` itself when it contains a slash, else the first executable file named
    `program` in the absolute directories of `search_path`; None when there is none."""
    if "/" in program:
        return program
    for directory in search_path.split(os.pathsep):
        if not os.path.isabs(directory):
            continue  # "" or "." would mean the agent's working directory
        candidate = os.path.join(directory, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class SystemHost:
    """The runner's `Host` backed by the real system."""

    def lookup_user(self, name: str) -> UserInfo | None:
        try:
            entry = pwd.getpwnam(name)
        except (KeyError, ValueError):
            return None
        try:
            groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        except OSError:
            groups = (entry.pw_gid,)
        return UserInfo(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, groups)

    def is_root(self) -> bool:
        return os.geteuid() == 0

    def own_user_name(self) -> str | None:
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            return None

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def acquire_lock(self, path: str, command: str) -> object:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise LockBusy(f"cannot create lock {path}: its directory does not exist") from None
        except OSError as exc:
            raise LockBusy(f"cannot open lock {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockBusy(f"'{command}' is already running (lock {path} is held)") from None
            raise LockBusy(f"cannot lock {path}: {exc.strerror}") from None
        return fd

    def release_lock(self, handle: object) -> None:
        assert isinstance(handle, int)
        try:
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            os.close(handle)

    def remove_file(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def base_environment(self) -> dict[str, str]:
        return dict(os.environ)


def file_dir_problem(file_dir: str) -> str | None:
    """Why `file_dir` must not hold job files (someone else could swap or read them), or
    None when it is fine or does not exist yet (the agent creates it)."""
    try:
        st = os.stat(file_dir)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot use file_dir {file_dir}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"file_dir {file_dir} is not a directory"
    if st.st_uid != os.geteuid():
        return f"file_dir {file_dir} is owned by uid {st.st_uid}, not by the agent's user"
    if st.st_mode & 0o022:
        mode = stat.S_IMODE(st.st_mode)
        return f"file_dir {file_dir} is writable by group or others (mode {mode:04o})"
    return None


class FileDirError(Exception):
    """`file_dir` is unsafe; the message says why."""


def prepare_file_dir(file_dir: str) -> list[str]:
    """Create `file_dir` (0711) if missing and check it (FileDirError); delete leftover `job-*`
    files and return their names."""
    path = Path(file_dir)
    if not path.is_dir():
        path.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(path, 0o711)  # mkdir's mode is filtered by the umask
    problem = file_dir_problem(file_dir)
    if problem is not None:
        raise FileDirError(problem)
    removed = []
    for leftover in sorted(path.glob("job-*")):
        try:
            if leftover.is_symlink() or leftover.is_file():
                leftover.unlink()
                removed.append(leftover.name)
        except OSError:
            pass
    return removed


def write_job_file(path: str, data: bytes, user: UserInfo | None) -> None:
    """Write the job file: 0600, O_EXCL|O_NOFOLLOW, owned by the run-as user (agent.md §12)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if user is not None and os.geteuid() == 0:
            os.fchown(fd, user.uid, user.gid)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


class StartError(Exception):
    """The process could not be started; `exit_status` is 127, 126 or None."""

    def __init__(self, reason: str, exit_status: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


def _start_error(exc: OSError, plan: ProcessPlan, executable: str) -> StartError:
    reason = exc.strerror or str(exc)
    if plan.cwd and exc.filename == plan.cwd:
        return StartError(f"cannot change directory to {plan.cwd}: {reason}", None)
    program = plan.argv[0]
    if exc.filename is not None and os.fsdecode(exc.filename) in (program, executable):
        if isinstance(exc, FileNotFoundError):
            return StartError(f"{program}: command not found", 127)
        if isinstance(exc, PermissionError) or exc.errno == errno.ENOEXEC:
            return StartError(f"{program}: {reason}", 126)
    return StartError(f"{program}: {reason}", None)


def _enter_job_cgroup(cgroups: JobCgroups | None, job_id: str) -> str | None:
    """Create the job's cgroup and move the agent into it for the fork; None when there is
    no cgroup support or it failed (then the process-group kill alone applies)."""
    if cgroups is None or cgroups.broken:
        return None
    cgroups.sweep()
    try:
        path = cgroups.create(job_id)
    except CgroupError as exc:
        cgroups.log.warning("job %s: %s; process-group kill only", job_id, exc)
        return None
    try:
        cgroups.enter(path)
    except CgroupError as exc:
        cgroups.log.warning("job %s: %s; process-group kill only", job_id, exc)
        cgroups.remove(path)
        return None
    return path


class JobProcess:
    """A started job process: its group, its pipes, exit detection without reaping, terminate."""

    def __init__(
        self,
        proc: trio.Process,
        cgroups: JobCgroups | None = None,
        cgroup: str | None = None,
    ) -> None:
        self.proc = proc
        self.cgroups = cgroups
        self.cgroup = cgroup  # the job's own cgroup, or None (process-group kill only)
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session: the process leads its own group
        self.exited = trio.Event()  # the main process exited (may not be reaped yet)
        self._terminating = False
        self.terminated = trio.Event()

    @classmethod
    async def start(cls, plan: ProcessPlan, cgroups: JobCgroups | None = None) -> JobProcess:
        """Write the job file and start the process (in a cgroup of its own when `cgroups`
        is given); raise StartError when that fails."""
        if plan.file_path is not None and plan.file_bytes is not None:
            try:
                write_job_file(plan.file_path, plan.file_bytes, plan.user)
            except OSError as exc:
                raise StartError(
                    f"cannot write job file {plan.file_path}: {exc.strerror}", None
                ) from None
        # None is Popen's default for each: run as the agent's own user.
        user: int | None = None
        group: int | None = None
        extra_groups: list[int] | None = None
        if plan.user is not None and os.geteuid() == 0:
            user, group, extra_groups = plan.user.uid, plan.user.gid, list(plan.user.groups)
        executable = resolve_program(plan.argv[0], agent_search_path()) if plan.argv else None
        if executable is None:
            raise StartError(f"{plan.argv[0] if plan.argv else ''}: command not found", 127)
        cgroup = _enter_job_cgroup(cgroups, plan.job_id)
        proc: trio.Process | None = None
        try:
            proc = await trio.lowlevel.open_process(
                plan.argv,
                executable=executable,  # argv[0] stays as written; the job's PATH is not used
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=plan.env,
                cwd=plan.cwd,
                start_new_session=True,
                close_fds=True,
                umask=0o022,
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        except OSError as exc:
            raise _start_error(exc, plan, executable) from None
        except (subprocess.SubprocessError, ValueError, TypeError) as exc:
            raise StartError(str(exc), None) from None
        finally:
            if cgroups is not None and cgroup is not None:
                if not cgroups.leave():
                    cgroup = None  # the agent may still be in it: never kill it
                elif proc is None:
                    cgroups.remove(cgroup)
        assert proc is not None
        return cls(proc, cgroups, cgroup)

    async def watch_exit(self) -> None:
        """Set `exited` when the main process has exited, without reaping it (the group id
        stays reserved until we reap, so killpg cannot hit a recycled group)."""
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pidfd = None
        try:
            if pidfd is not None:
                await trio.lowlevel.wait_readable(pidfd)
            else:
                while True:
                    info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    if info is not None:
                        break
                    await trio.sleep(0.05)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        self.exited.set()

    async def read_pipes(self, on_output: Callable[[str, bytes], None]) -> None:
        """Read stdout and stderr in chunks of up to 32 KiB until both reach end-of-file."""
        async with trio.open_nursery() as nursery:
            for name, stream in (
                (OutputChannel.STDOUT, self.proc.stdout),
                (OutputChannel.STDERR, self.proc.stderr),
            ):
                if stream is not None:
                    nursery.start_soon(self._read_one, name, stream, on_output)

    @staticmethod
    async def _read_one(
        name: str, stream: trio.abc.ReceiveStream, on_output: Callable[[str, bytes], None]
    ) -> None:
        while True:
            try:
                data = await stream.receive_some(READ_CHUNK)
            except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                return
            if not data:
                return
            on_output(name, bytes(data))  # a pipe yields bytes: no copy

    def signal_group(self, signum: int) -> bool:
        """killpg, and signal every process of the job's cgroup (descendants that left the
        group with setsid()); False when the group is already empty."""
        alive = True
        try:
            os.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            alive = False
        if self.cgroups is not None and self.cgroup is not None:
            try:
                self.cgroups.signal_all(self.cgroup, signum)
            except CgroupError as exc:
                self.cgroups.log.error("cannot signal the job's cgroup: %s", exc)
        return alive

    async def terminate(self, grace: float, on_signal: Callable[[str], None]) -> None:
        """TERM the group, wait for the main process up to `grace`, then KILL the group."""
        if self._terminating:
            await self.terminated.wait()
            return
        self._terminating = True
        try:
            if not self.exited.is_set():
                on_signal("SIGTERM")
            self.signal_group(signal.SIGTERM)
            with trio.move_on_after(grace):
                await self.exited.wait()
            if not self.exited.is_set():
                on_signal("SIGKILL")
            self.signal_group(signal.SIGKILL)  # also any children left in the group
            with trio.move_on_after(grace + 5):
                await self.exited.wait()
        finally:
            self.terminated.set()

    @property
    def terminating(self) -> bool:
        return self._terminating

    async def reap(self) -> int:
        """Reap the main process and close the pipes; return the return code."""
        with trio.CancelScope(shield=True):
            returncode = await self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    await stream.aclose()
            await self._remove_cgroup()
        return returncode

    async def _remove_cgroup(self) -> None:
        """rmdir the job's cgroup; after a kill wait a moment for it to empty. Daemons a
        successful job left behind keep it (removed by a later sweep once empty)."""
        if self.cgroups is None or self.cgroup is None:
            return
        with trio.move_on_after(CGROUP_EMPTY_WAIT if self._terminating else 0):
            while not self.cgroups.remove(self.cgroup):
                await trio.sleep(0.02)

    def kill_now(self) -> None:
        """Last resort (shutdown or internal failure): KILL the group at once."""
        self.signal_group(signal.SIGKILL)

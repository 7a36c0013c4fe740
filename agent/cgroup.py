"""One cgroup v2 per job, when systemd delegated the agent's cgroup (unit `Delegate=yes`).

A job process that calls setsid() leaves its process group, so killpg cannot reach it; a cgroup
holds every descendant whatever it does. The agent may only manage cgroups below its own when
systemd delegated that subtree: systemd ≥ 251 marks it with the `trusted.delegate` (root
services) or `user.delegate` extended attribute. Without that mark jobs keep the process-group
kill alone (security.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from typing import Any

DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")
_JOB_DIR_RE = re.compile(r"job-[A-Za-z0-9_-]{1,64}(\.[0-9]+)?")


def cgroup2_path(proc_cgroup: str) -> str | None:
    """The unified-hierarchy path from /proc/self/cgroup text (the `0::` line), or None."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or None
    return None


def cgroup2_mount(mountinfo: str) -> str | None:
    """The mount point of the cgroup2 file system from /proc/self/mountinfo text, or None."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            fields = left.split()
            if len(fields) >= 5 and fields[3] == "/":
                return fields[4]
    return None


def own_cgroup_dir() -> str | None:
    """The directory of this process's cgroup v2, or None (no cgroup v2, or the root)."""
    try:
        with open("/proc/self/cgroup") as fh:
            path = cgroup2_path(fh.read())
        with open("/proc/self/mountinfo") as fh:
            mount = cgroup2_mount(fh.read())
    except OSError:
        return None
    if path is None or mount is None or path == "/":
        return None
    directory = os.path.join(mount, path.lstrip("/"))
    return directory if os.path.isdir(directory) else None


def is_delegated(directory: str) -> bool:
    """True when systemd delegated `directory` to us and we can create cgroups and move
    processes there."""
    marked = False
    for name in DELEGATE_XATTRS:
        try:
            marked = marked or os.getxattr(directory, name) == b"1"
        except OSError:
            pass
    return (
        marked
        and os.access(directory, os.W_OK)
        and os.access(os.path.join(directory, "cgroup.procs"), os.W_OK)
    )


class CgroupError(Exception):
    """A cgroup operation failed; the message says which."""


class JobCgroups:
    """Creates, enters, kills and removes `job-<id>` cgroups below the agent's own cgroup."""

    def __init__(self, directory: str, log: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.directory = directory
        self.log = log
        self.broken = False  # once set, jobs fall back to the process-group kill

    @classmethod
    def detect(cls, log: logging.Logger | logging.LoggerAdapter[Any]) -> JobCgroups | None:
        directory = own_cgroup_dir()
        if directory is None or not is_delegated(directory):
            return None
        return cls(directory, log)

    def sweep(self) -> None:
        """Remove empty job cgroups left by an earlier agent process."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if _JOB_DIR_RE.fullmatch(name):
                self.remove(os.path.join(self.directory, name))

    def create(self, job_id: str) -> str:
        """Make a fresh cgroup for the job; return its directory."""
        base = os.path.join(self.directory, f"job-{job_id}")
        for attempt in range(100):
            path = base if attempt == 0 else f"{base}.{attempt}"
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                continue
            except OSError as exc:
                raise CgroupError(f"cannot create cgroup {path}: {exc.strerror}") from None
        raise CgroupError(f"cannot create cgroup {base}: too many leftovers")

    def enter(self, path: str) -> None:
        """Move the agent into `path` just before forking a job process, so the child is born
        there: it has no moment outside in which it could fork or setsid. `leave` follows."""
        _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))

    def leave(self) -> bool:
        """Move the agent back to its own cgroup. False (and no more job cgroups) when that
        fails: a cgroup that may hold the agent itself must never be killed."""
        try:
            _write(os.path.join(self.directory, "cgroup.procs"), str(os.getpid()))
        except CgroupError as exc:
            self.broken = True
            self.log.error("%s; job cgroups disabled, process-group kill only", exc)
            return False
        return True

    def signal_all(self, path: str, signum: int) -> None:
        """Send `signum` to every process of the cgroup (never to the agent)."""
        if signum == signal.SIGKILL and os.path.exists(os.path.join(path, "cgroup.kill")):
            _write(os.path.join(path, "cgroup.kill"), "1")
            return
        for pid in _pids(path):
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)

    def remove(self, path: str) -> bool:
        """rmdir the cgroup; False while it still has processes (daemons a job left behind
        on success, or processes still dying) or when it cannot be removed."""
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def _pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as fh:
            return [int(line) for line in fh.read().split()]
    except (OSError, ValueError):
        return []


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as exc:
        raise CgroupError(f"cannot write {path}: {exc.strerror}") from None

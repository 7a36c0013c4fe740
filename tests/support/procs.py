"""OS processes in tests: start one with its output in a log file, stop it by its own pid, and
look at processes through /proc (alive, memory, open files) — always by pid, never by name.
`started` keeps anything with `start()`/`stop()` (a server process, a fake Chef Server) running
for a `with` block."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar


class Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> object: ...


S = TypeVar("S", bound=Startable)


@contextlib.contextmanager
def started(thing: S) -> Iterator[S]:
    """`thing` started for the `with` block, stopped afterwards (also when the block fails)."""
    thing.start()
    try:
        yield thing
    finally:
        thing.stop()


def spawn_logged(
    cmd: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` with stdout and stderr appended to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=preexec_fn
        )


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0
) -> int:
    """Signal a running `proc` by pid and wait for it (SIGKILL after `timeout`); its status."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode is not None
    return proc.returncode


def kill_if_running(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL `proc` and reap it, unless it has ended (the clean-up of a `finally`)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def pids_alive(pids: list[int]) -> list[int]:
    """The pids of `pids` that still exist (zombies count as gone)."""
    return [pid for pid in pids if pid_alive(pid)]


def read_pids(path: Path, *, missing_ok: bool = True) -> list[int]:
    """The pids a job wrote to `path`, one per word ([] for a missing file if `missing_ok`)."""
    if missing_ok and not path.exists():
        return []
    return [int(p) for p in path.read_text().split()]


def kill_pid(pid: int) -> None:
    """SIGKILL `pid` unless it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def kill_all(pids: list[int]) -> None:
    """SIGKILL every pid of `pids` still alive."""
    for pid in pids_alive(pids):
        kill_pid(pid)


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of /proc/<pid>/status in KiB: `VmRSS` (resident), `VmHWM` (its peak)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def fd_count(pid: int) -> int:
    """How many file descriptors `pid` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))

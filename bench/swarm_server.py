"""The server side of the swarm benchmark: start a real server (or describe one to attach to),
register the swarm's nodes, and read the server process's CPU time and memory from `/proc`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushjobs.protocol.keys import generate_rsa_key, private_key_pem, public_key_pem

ORG = "bench"
ADMIN = "benchadmin"


@dataclass
class Target:
    """Where the swarm connects and whom it signs as."""

    http_url: str
    org: str
    admin_user: str
    admin_key_pem: bytes
    node_key_pem: bytes
    pid: int | None  # the server process, for /proc figures (None: unknown)


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards `wanted` (up to the hard limit); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and wanted > hard:
        try:  # root (CAP_SYS_RESOURCE) may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def node_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(count)]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


class LocalServer:
    """A private `pushjobs-server` in a temp dir: production timing except the heartbeat
    interval, CURVE on, info logging to a file. Stopped by its pid."""

    def __init__(
        self,
        heartbeat_interval: float,
        keep_dir: bool = False,
        *,
        extra: dict[str, dict[str, Any]] | None = None,
        prefix: str = "pushjobs-swarm-",
        fixed_ports: bool = False,
    ) -> None:
        """`extra`: more server.toml sections, e.g. `store` and `cluster` (merged in).
        `fixed_ports`: free ports picked now instead of ephemeral ones, so that a `restart`
        listens where the agents already connect (as a production server does)."""
        self.base = Path(tempfile.mkdtemp(prefix=prefix))
        self.keep_dir = keep_dir
        self.config_path = self.base / "server.toml"
        self.log_path = self.base / "server.log"
        self.data_dir = self.base / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        sections: dict[str, dict[str, Any]] = {
            "": {
                "server_name": "127.0.0.1",
                "data_dir": str(self.data_dir),
                "log_level": "info",
                "log_file": str(self.log_path),
            },
            "http": {"bind": "127.0.0.1", "port": 0},
            "zeromq": {"listen": "tcp://127.0.0.1", "heartbeat_port": 0, "command_port": 0},
            "timing": {"heartbeat_interval": heartbeat_interval},
        }
        if fixed_ports:
            http, heartbeat, command = free_ports(3)
            sections["http"]["port"] = http
            sections["zeromq"].update(heartbeat_port=heartbeat, command_port=command)
        for section, values in (extra or {}).items():
            sections.setdefault(section, {}).update(values)
        lines = [f"{k} = {_toml(v)}" for k, v in sections.pop("").items()]
        for name, values in sections.items():
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def admin(self, *args: str) -> str:
        """Run `python -m pushjobs.server -c CONFIG ARGS...`; raise with its output on failure."""
        cmd = [sys.executable, "-m", "pushjobs.server", "-c", str(self.config_path), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr}{result.stdout}")
        return result.stdout

    def prepare(self, names: list[str]) -> Target:
        """init (org + admin), then `client import --public-key` with one shared node key."""
        admin_key = self.base / "admin.pem"
        self.admin("init", "--org", ORG, "--admin", ADMIN, "--admin-key-out", str(admin_key))
        node_key = generate_rsa_key()
        (self.base / "node.pub").write_text(public_key_pem(node_key.public_key()))
        (self.base / "nodes.txt").write_text("\n".join(names) + "\n")
        self.admin(
            "client",
            "import",
            ORG,
            str(self.base / "nodes.txt"),
            "--public-key",
            str(self.base / "node.pub"),
        )
        return Target("", ORG, ADMIN, admin_key.read_bytes(), private_key_pem(node_key), None)

    def join(self, first: Target) -> Target:
        """`init` of another server on `first`'s database (a cluster): the organization, admin
        and nodes are already there; returns a `Target` with `first`'s keys."""
        self.admin("init")
        return dataclasses.replace(first, http_url="", pid=None)

    def start(self, target: Target, timeout: float = 30.0) -> Target:
        """Start `run` in its own session (Ctrl-C reaches only us) and wait for server.json."""
        state_file = self.data_dir / "server.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pushjobs.server", "-c", str(self.config_path), "run"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.base / "server.stderr", "ab"),  # noqa: SIM115 - child owns it
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            if state_file.exists():
                state = json.loads(state_file.read_text())
                if state.get("pid") == self.proc.pid:
                    target.http_url = state["http_url"]
                    target.pid = self.proc.pid
                    return target
            time.sleep(0.05)
        raise RuntimeError(f"server did not start within {timeout}s")

    def restart(self, target: Target, timeout: float = 30.0) -> Target:
        """Stop the server (SIGTERM) and start it again on the same data and ports."""
        self.stop_process()
        (self.data_dir / "server.json").unlink(missing_ok=True)
        return self.start(target, timeout)

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.log_path, self.base / "server.stderr"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """`stop_process`, then remove the temp dir unless asked to keep it."""
        self.stop_process()
        if not self.keep_dir:
            import shutil

            shutil.rmtree(self.base, ignore_errors=True)

    def stop_process(self) -> None:
        """SIGTERM by pid, SIGKILL after 15 s (the temp dir stays)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------------------------------
# /proc figures

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcSample:
    wall: float
    cpu: float  # user + system seconds, all threads
    rss_kb: int
    hwm_kb: int  # peak RSS
    main_cpu: float = 0.0  # of the main thread alone (the event loop: HTTP, broker, jobs)


def sample(pid: int | None) -> ProcSample | None:
    """CPU seconds and memory of process `pid` (None when unknown or gone)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        main_stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    mem = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0])
    return ProcSample(
        time.monotonic(),
        _cpu_seconds(stat),
        mem.get("VmRSS", 0),
        mem.get("VmHWM", 0),
        _cpu_seconds(main_stat),
    )


def _cpu_seconds(stat: str) -> float:
    """utime + stime of a `/proc/.../stat` line, in seconds."""
    # Fields after the command name (which may contain spaces) start at field 3.
    rest = stat.rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / _TICKS


def self_cpu() -> float:
    """CPU seconds used by this (swarm) process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

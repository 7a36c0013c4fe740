"""The pushjobs demo: a server and three agents on this machine, running real jobs.

Started by `scripts/demo.sh` (which prepares `.venv`), or directly with any interpreter that has
pushjobs installed with the `[server]` extra:

    python scripts/demo.py [--dir DIR]

Everything runs on 127.0.0.1 with ports the kernel picks; data and logs go to a fresh temporary
directory (or `--dir` / `$PUSHJOBS_DEMO_DIR`) that is left in place for inspection. Every
process the demo starts is recorded by pid and stopped by that pid when the demo ends, fails or
is interrupted (Ctrl-C, SIGTERM, SIGHUP) — unless `--keep-running` is given: then, once the
jobs have run, the server and the agents stay up for `pushjobs ui` (the web dashboard); the
demo prints that command with the demo's settings and the `kill` command that stops them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

ORG = "demo"
ADMIN = "alice"
NODES = ("web1", "web2", "web3")
OFFLINE_NODE = "web4"  # registered, but no agent runs for it
FLAKY_NODE = "web2"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
JOB_TIMEOUT = 40.0

SERVER_TIMING = {
    "heartbeat_interval": 1.0,
    "rehab_interval": 0.5,
    "voting_timeout": 10,
    "wait_complete_time": 3,
    "keep_alive_time": 5,
}

# The demo whitelist (TOML): what each node runs for a job command. The agent sets
# CHEF_PUSH_NODE_NAME for every job, so one whitelist can behave differently per node.
GREET = 'echo "hello from $CHEF_PUSH_NODE_NAME"; echo "(a line on stderr)" >&2'
FLAKY = (
    'if [ "$CHEF_PUSH_NODE_NAME" = {node} ]; then echo "{node}: simulated failure" >&2; exit 3; '
    "fi; echo ok"
)


def demo_whitelist(uptime: str) -> dict[str, Any]:
    """The `[whitelist]` table; `uptime` is the command line for the `uptime` entry."""
    return {
        "hostname": "hostname",
        "uptime": uptime,
        "greet": {"run": GREET, "shell": True},
        "flaky": {"run": FLAKY.format(node=FLAKY_NODE), "shell": True},
        "sleep": {"pattern": "^sleep ([0-9]{1,2})$", "run": "sleep \\1"},
    }


class Interrupted(Exception):
    """A signal asked the demo to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------- output


class Out:
    """What the user sees: step headers, commands, indented program output, explanations."""

    def __init__(self, color: bool) -> None:
        self.color = color
        self.closed = False  # stdout went away (e.g. `| head`): keep working, stop writing

    def _style(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def step(self, text: str) -> None:
        self.line("")
        self.line(self._style("1;36", f"==> {text}"))

    def command(self, argv: Sequence[str]) -> None:
        self.line(self._style("1", "$ " + shlex.join(argv)))

    def note(self, text: str) -> None:
        self.line("    " + text)

    def result(self, ok: bool, text: str) -> None:
        mark = self._style("32", "ok") if ok else self._style("1;31", "UNEXPECTED")
        self.line(f"--> [{mark}] {text}")

    def line(self, text: str) -> None:
        if self.closed:
            return
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except OSError:  # a closed pipe must not stop the clean-up
            self.closed = True


# ---------------------------------------------------------------- processes


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back stop signals while a child is started and recorded, so none is missed."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _child_setup_outliving() -> None:
    """In a child that may outlive the demo (`--keep-running`): unblock the stop signals."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _child_setup() -> None:
    """In the child before exec: unblock the stop signals (the mask is inherited) and, on
    Linux, get SIGTERM if the demo itself dies without cleaning up."""
    _child_setup_outliving()
    if sys.platform == "linux":
        with contextlib.suppress(Exception):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Started:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """Every long-running process the demo started, stopped by pid in reverse order."""

    out: Out
    outlive: bool = False  # `--keep-running`: the processes survive the demo's exit
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path, cwd: Path) -> Started:
        with log.open("ab") as fh, signals_deferred():
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
                preexec_fn=_child_setup_outliving if self.outlive else _child_setup,
            )
            entry = Started(name, proc, log)
            self.started.append(entry)
        self.out.note(f"started {name} (pid {proc.pid}), log {log}")
        return entry

    def stop_all(self) -> None:
        """SIGTERM each process by pid (newest first), wait, SIGKILL what does not exit."""
        for entry in reversed(self.started):
            proc = entry.proc
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for entry in reversed(self.started):
            proc = entry.proc
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            code = proc.returncode
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            self.out.note(f"stopped {entry.name} (pid {proc.pid}, {how})")
        self.started.clear()


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check` until it returns a truthy value; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def read_lines(fd: int, deadline: float) -> Iterator[str]:
    """Lines from a pipe as they arrive, until end of file; RuntimeError at `deadline`."""
    pending = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError("timed out waiting for the CLI")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ---------------------------------------------------------------- programs


def program(name: str, module: str) -> list[str]:
    """The console script next to this interpreter, else `python -m module`."""
    script = Path(sys.executable).parent / name
    if script.exists() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", module]


SERVER_CMD = program("pushjobs-server", "pushjobs.server")
AGENT_CMD = program("pushjobs-agent", "pushjobs.agent.main")
CLI_CMD = program("pushjobs", "pushjobs.cli")


def write_toml(path: Path, values: dict[str, Any], header: str = "") -> None:
    """Write `values` as TOML (tomli-w quotes every string TOML accepts, e.g. DEL or emoji)."""
    path.write_text(header + tomli_w.dumps(values), encoding="utf-8")


# ---------------------------------------------------------------- the demo


class Demo:
    def __init__(self, base: Path, out: Out, temporary: bool, keep_running: bool = False) -> None:
        self.base = base
        self.temporary = temporary  # the demo made the directory (so it may suggest removing it)
        self.out = out
        self.keep_running = keep_running
        self.procs = Processes(out, outlive=keep_running)
        self.data_dir = base / "data"
        self.logs = base / "logs"
        self.keys = base / "keys"
        self.agents_dir = base / "agents"
        self.server_config = base / "server.toml"
        self.cli_config = base / "pushjobs.toml"
        self.admin_key = self.keys / f"{ADMIN}.pem"
        self.state: dict[str, Any] = {}
        self.failures: list[str] = []
        self.cli_env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "PUSHJOBS_SERVER_URL",
                "PUSHJOBS_USER",
                "PUSHJOBS_KEY",
                "PUSHJOBS_PROFILE",
                "CHEF_PROFILE",
            }
        }
        self.cli_env["PUSHJOBS_CONFIG"] = str(self.cli_config)
        self.cli_env["HOME"] = str(base)  # keep the user's ~/.chef/credentials out of it
        self.cli_pid: int | None = None

    # -- helpers ---------------------------------------------------------------------
    def admin(self, *args: str, show: bool = True) -> None:
        argv = [*SERVER_CMD, "-c", str(self.server_config), *args]
        shown = ["pushjobs-server", "-c", str(self.server_config), *args]
        if show:
            self.out.command(shown)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if show:
            for line in result.stdout.splitlines():
                self.out.note(line)
        if result.returncode != 0:
            raise RuntimeError(f"{shlex.join(shown)} failed:\n{result.stderr}{result.stdout}")

    def cli(self, *args: str, echo: bool = True) -> tuple[int, str]:
        """Run `pushjobs ARGS`: stdout is echoed line by line and returned; stderr (the live
        progress display when it is a terminal) goes straight to the user."""
        argv = [*CLI_CMD, *args]
        if echo:
            self.out.command(["pushjobs", *args])
        with signals_deferred():
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=None if echo else subprocess.DEVNULL,
                env=self.cli_env,
                cwd=self.base,
                preexec_fn=_child_setup,
            )
            self.cli_pid = proc.pid
        captured: list[str] = []
        try:
            assert proc.stdout is not None
            for line in read_lines(proc.stdout.fileno(), time.monotonic() + JOB_TIMEOUT):
                captured.append(line)
                if echo:
                    self.out.note(line)
            code = proc.wait(max(1.0, JOB_TIMEOUT / 4))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"pushjobs {shlex.join(args)} did not finish") from None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            self.cli_pid = None
        return code, "\n".join(captured)

    def expect(self, code: int, expected: int, explanation: str) -> None:
        if code == expected:
            self.out.result(True, f"exit code {code}: {explanation}")
        else:
            self.out.result(False, f"exit code {code}, expected {expected}: {explanation}")
            self.failures.append(f"exit code {code} instead of {expected}")

    # -- steps -----------------------------------------------------------------------
    def init_server(self) -> None:
        self.out.step(f"Initialising a server in {self.base}")
        for folder in (self.logs, self.keys, self.agents_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # private keys go here: `client import --key-dir` refuses a folder others can write
        self.keys.chmod(0o700)
        server_config = {
            "server_name": "127.0.0.1",
            "data_dir": str(self.data_dir),
            "log_level": "info",
            # port 0 = a free port, written to data/server.json
            "http": {"bind": "127.0.0.1", "port": 0},
            "zeromq": {"listen": "tcp://127.0.0.1", "heartbeat_port": 0, "command_port": 0},
            "timing": SERVER_TIMING,  # fast, for a demo on one machine
        }
        write_toml(
            self.server_config,
            server_config,
            "# pushjobs demo server; ports 0 = free ports, written to data/server.json\n",
        )
        self.admin("init", "--org", ORG, "--admin", ADMIN, "--admin-key-out", str(self.admin_key))

    def register_nodes(self) -> None:
        names = (*NODES, OFFLINE_NODE)
        self.out.step(f"Registering nodes {', '.join(names)} (one key pair each)")
        node_list = self.base / "nodes.txt"
        node_list.write_text("".join(f"{n}\n" for n in names))
        self.admin("client", "import", ORG, str(node_list), "--key-dir", str(self.keys))
        self.out.note(f"{OFFLINE_NODE} is registered, but no agent will run for it")

    def start_server(self) -> None:
        self.out.step("Starting the server")
        state_file = self.data_dir / "server.json"
        state_file.unlink(missing_ok=True)
        entry = self.procs.start(
            "pushjobs-server",
            [*SERVER_CMD, "-c", str(self.server_config), "run"],
            self.logs / "server.log",
            self.base,
        )

        def ready() -> dict[str, Any] | None:
            if entry.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited with status {entry.proc.returncode}:\n{tail(entry.log)}"
                )
            try:
                state = json.loads(state_file.read_text())
            except (FileNotFoundError, ValueError):
                return None
            return state if state.get("pid") == entry.proc.pid else None

        self.state = wait_until(ready, START_TIMEOUT, "the server to listen", 0.1)
        self.out.note(
            f"HTTP {self.state['http_url']}, ZeroMQ heartbeats :{self.state['heartbeat_port']}, "
            f"commands :{self.state['command_port']} (CurveZMQ)"
        )
        org_url = f"{self.state['http_url']}/organizations/{ORG}"
        write_toml(
            self.cli_config,
            {"default": {"server_url": org_url, "user": ADMIN, "key": str(self.admin_key)}},
        )

    def start_agents(self) -> None:
        self.out.step(f"Starting {len(NODES)} agents with a demo whitelist")
        whitelist = demo_whitelist("uptime" if shutil.which("uptime") else "cat /proc/uptime")
        org_url = f"{self.state['http_url']}/organizations/{ORG}"
        for node in NODES:
            folder = self.agents_dir / node
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "agent.toml"
            agent_config = {
                "server_url": org_url,
                "node_name": node,
                "client_key": str(self.keys / f"{node}.pem"),
                "file_dir": str(folder / "files"),
                "lock_file": str(folder / "chef-client.pid"),
                "log_level": "info",
                "kill_grace": 2.0,
                "allowed_overwritable_env_vars": [],
                "whitelist": whitelist,
            }
            write_toml(config, agent_config)
            self.procs.start(
                f"pushjobs-agent {node}",
                [*AGENT_CMD, "-c", str(config)],
                self.logs / f"agent-{node}.log",
                folder,
            )
        self.out.note("whitelist of every node:")
        for line in tomli_w.dumps({"whitelist": whitelist}).splitlines():
            self.out.note("  " + line)

    def wait_available(self) -> None:
        self.out.step("Waiting until every node is available")

        def all_available() -> bool:
            for entry in self.procs.started:
                if entry.proc.poll() is not None:
                    raise RuntimeError(
                        f"{entry.name} exited with status {entry.proc.returncode}:\n"
                        f"{tail(entry.log)}"
                    )
            code, text = self.cli("node", "status", *NODES, echo=False)
            states = dict(line.split("\t")[:2] for line in text.splitlines() if "\t" in line)
            return code == 0 and all(states.get(n) == "available" for n in NODES)

        wait_until(all_available, START_TIMEOUT, "the nodes to become available", 0.3)
        self.cli("node", "status", "--long")

    def run_jobs(self) -> None:
        nodes = list(NODES)

        self.out.step("Job 1: a command on every node, with its output")
        code, _ = self.cli("job", "start", "greet", *nodes, "--show-output", "all")
        self.expect(code, 0, "the job completed and every node succeeded")

        self.out.step(f"Job 2: a command that fails on {FLAKY_NODE}")
        code, text = self.cli("job", "start", "flaky", *nodes, "--show-output", "failed")
        self.expect(
            code,
            1,
            f"the job ran to completion, but not every node succeeded ({FLAKY_NODE} exited 3)",
        )
        match = re.search(r"Job ID: ([0-9a-f]{32})", text)
        if match:
            self.out.note("exit codes per node:")
            self.cli("job", "status", match.group(1), "--nodes")

        self.out.step(f"Job 3: a quorum that cannot be met ({OFFLINE_NODE} is offline)")
        code, _ = self.cli("job", "start", "sleep 1", *nodes, OFFLINE_NODE, "--quorum", "100%")
        self.expect(
            code,
            2,
            f"quorum failed: 4 nodes had to agree, {OFFLINE_NODE} could not, so nothing ran "
            "(the others are was_ready)",
        )

        self.out.step("Job 4: the same with a quorum of 75%")
        code, _ = self.cli("job", "start", "sleep 1", *nodes, OFFLINE_NODE, "--quorum", "75%")
        self.expect(
            code,
            1,
            f"3 of 4 nodes were enough: the job ran and completed, but {OFFLINE_NODE} "
            "is unavailable, so not every node succeeded",
        )

        rollout = [FLAKY_NODE, *(n for n in nodes if n != FLAKY_NODE)]
        self.out.step(
            f"Job 5: a safe rollout, one node at a time, stopping at the first failure "
            f"({FLAKY_NODE} goes first and fails)"
        )
        code, _ = self.cli(
            "job",
            "start",
            "flaky",
            *rollout,
            "--max-concurrency",
            "1",
            "--max-errors",
            "0",
            "--stream",
        )
        self.expect(
            code,
            1,
            f"the job stopped: {FLAKY_NODE} failed, so the other nodes were skipped and never "
            "ran the command",
        )

        self.out.step("All jobs of the organization")
        self.cli("job", "list")

    def run(self) -> int:
        self.out.line(f"pushjobs demo: org '{ORG}', user '{ADMIN}', nodes {', '.join(NODES)}")
        self.init_server()
        self.register_nodes()
        self.start_server()
        self.start_agents()
        self.wait_available()
        self.run_jobs()
        return 1 if self.failures else 0

    def stop(self) -> None:
        if self.cli_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.cli_pid, signal.SIGTERM)
        if self.procs.started:
            self.out.step("Stopping every process the demo started")
            self.procs.stop_all()

    def keep(self) -> None:
        """`--keep-running`: leave the server and agents up; say how to use and stop them."""
        self.out.step("The server and the agents keep running (--keep-running)")
        org_url = f"{self.state['http_url']}/organizations/{ORG}"
        ui = [
            *CLI_CMD,
            "ui",
            "--server-url",
            org_url,
            "--user",
            ADMIN,
            "--key",
            str(self.admin_key),
        ]
        self.out.note("open the web dashboard (it prints its URL and opens your browser):")
        self.out.line(f"    ui command: {shlex.join(ui)}")
        pids = [str(entry.proc.pid) for entry in reversed(self.procs.started)]
        self.out.note("stop the server and the agents when you are done:")
        self.out.line(f"    stop command: kill {' '.join(pids)}")

    def where(self) -> None:
        self.out.step("Data and logs are kept for you to look at")
        self.out.note(f"directory      {self.base}")
        self.out.note(f"server data    {self.data_dir} (SQLite database, server key)")
        self.out.note(f"server config  {self.server_config}")
        self.out.note(f"logs           {self.logs}/server.log, agent-web1.log, ...")
        self.out.note(f"agent configs  {self.agents_dir}/<node>/agent.toml")
        self.out.note(f"CLI settings   {self.cli_config} (PUSHJOBS_CONFIG)")
        if self.temporary:
            self.out.note(f"remove with    rm -rf {shlex.quote(str(self.base))}")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into `Interrupted` while the demo runs."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.sh", description="Run a pushjobs server and three agents, then jobs."
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=os.environ.get("PUSHJOBS_DEMO_DIR") or None,
        help="new or empty directory for data and logs (default: a new temporary directory)",
    )
    parser.add_argument("--no-color", action="store_true", help="plain output")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the server and agents running after the jobs (for `pushjobs ui`)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.dir is not None:
        base = Path(args.dir).absolute()
        if base.exists() and any(base.iterdir()):
            sys.stderr.write(f"demo: {base} is not empty; give a new or empty directory\n")
            return 2
        base.mkdir(parents=True, exist_ok=True)
    else:
        base = Path(tempfile.mkdtemp(prefix="pushjobs-demo."))
    color = not args.no_color and "NO_COLOR" not in os.environ and sys.stdout.isatty()
    out = Out(color)
    demo = Demo(base, out, temporary=args.dir is None, keep_running=args.keep_running)
    status = 1
    started = time.monotonic()
    completed = False
    with signals_raise():
        try:
            status = demo.run()
            completed = True
        except Interrupted as exc:
            out.line("")
            out.line(f"demo interrupted ({exc}); cleaning up")
            status = 130
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            out.line("")
            out.line(f"demo failed: {exc}")
            status = 1
        finally:
            # A second Ctrl-C must not cut the clean-up short.
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            if not (completed and args.keep_running):
                demo.stop()
    demo.where()
    elapsed = time.monotonic() - started
    if status == 0:
        out.line(f"\ndemo finished in {elapsed:.1f}s: every job ended as expected")
    elif status == 1 and demo.failures:
        out.line(f"\ndemo finished in {elapsed:.1f}s with surprises: {'; '.join(demo.failures)}")
    if completed and args.keep_running:
        demo.keep()
    return status


if __name__ == "__main__":
    sys.exit(main())

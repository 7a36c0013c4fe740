"""Real network faults between a real server and real agents: namespaces joined by a TUN hub.

Every `FaultNet` gets its own network namespaces: one for the server (address `10.201.0.1`) and
one per agent (`10.201.0.11`, `.12`, …), named after this process's pid (`pjnf<pid>-<n>-…`) so
parallel runs never meet. The kernel here has no `sch_netem`, so the links are made by
`tests/support/tun_link.py`: one TUN device per namespace and a userspace forwarder between
them that applies loss, delay and partitions per agent link, changed at runtime
(docs/dev/network-faults.md explains why and how).

The server and the agents run inside their namespaces (their processes are started while the
calling thread is in the namespace with setns(2), so each is forked there); the server listens
only on its link address and advertises it as `server_name`, so agents' HTTP and ZeroMQ
traffic crosses their link. The test's own HTTP requests (`NetServer.request`) enter the
server's namespace for the length of the request: the control path is never impaired, and no
interface is added to the root namespace. Test traffic stays inside those namespaces.

Fixture `fault_net` (import `fault_net_fixture` into the test module) makes nets:

    net = fault_net(3, whitelist=...)          # server + 3 available agents
    net.down(net.agents[0]); net.up(net.agents[0])
    net.impair(net.agents, loss=0.3, delay=0.25)
    net.flap(agent, period=2, duration=60)

Everything (agents, server, forwarder, namespaces) is removed at teardown, also after a
failure. The tests are skipped unless running as root with `ip` and /dev/net/tun.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agents import DEFAULT_WHITELIST, AgentProcess
from tests.support.clients import unique_name
from tests.support.procs import pid_alive
from tests.support.server import FAST_TIMING, ServerProcess
from tests.support.tun_link import setns
from tests.support.waits import wait_for

TUN_LINK = Path(__file__).with_name("tun_link.py")
SUBNET = "10.201.0"
SERVER_ADDRESS = f"{SUBNET}.1"
FIRST_AGENT_HOST = 11
NS_PREFIX = "pjnf"
SERVER_LINK = "srv"

# Server timings of a fault net: the fast test timings, and finished jobs stay live (their
# whole event feed readable) long after the end, since a test reads it once the faults are over.
NET_TIMING: dict[str, Any] = {**FAST_TIMING, "wait_complete_time": 600}

_nets = itertools.count(1)


def missing_support() -> str | None:
    """Why network-fault tests cannot run here, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network-fault tests need root (ip netns, TUN devices, setns)"
    if shutil.which("ip") is None:
        return "network-fault tests need the `ip` command (iproute2)"
    if not os.path.exists("/dev/net/tun"):
        return "network-fault tests need /dev/net/tun"
    return None


def agent_address(index: int) -> str:
    return f"{SUBNET}.{FIRST_AGENT_HOST + index}"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS...`; fail with its stderr when `check`."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def sweep_stale_namespaces() -> None:
    """Delete namespaces of this harness left by test processes that no longer exist."""
    listing = ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{NS_PREFIX}(\d+)-\d+-\w+", name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            ip("netns", "del", name, check=False)


class Netns:
    """One named network namespace (`ip netns`), which threads of this process can enter."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._fd: int | None = None

    def create(self) -> None:
        ip("netns", "add", self.name)
        self._fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)

    def delete(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        ip("netns", "del", self.name, check=False)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread inside this namespace for the block (sockets made and processes
        started meanwhile belong to it); back in its own namespace afterwards."""
        assert self._fd is not None, f"namespace {self.name} not created"
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(self._fd)
            try:
                yield
            finally:
                setns(home)
        finally:
            os.close(home)


class Forwarder:
    """The `tun_link.py` process: devices in every namespace, and its control channel."""

    def __init__(self, links: Iterable[tuple[str, Netns, str]], log_path: Path) -> None:
        args = [f"{name}={netns.name}={address}" for name, netns, address in links]
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(TUN_LINK), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self._pending = b""

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"tun_link silent for {timeout}s: {self.log_tail()}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"tun_link exited: {self.log_tail()}")
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def wait_ready(self, timeout: float = 30.0) -> None:
        line = self._line(timeout)
        assert line == "ready", f"tun_link said {line!r}: {self.log_tail()}"

    def command(self, text: str, timeout: float = 15.0) -> str:
        """Send one command; return the text after `ok` (an `error:` answer fails the test)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        reply = self._line(timeout)
        assert reply == "ok" or reply.startswith("ok "), f"tun_link: {text!r} -> {reply!r}"
        return reply[3:]

    def stop(self) -> None:
        """End of input stops it (its devices vanish with it); SIGKILL if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return "(no log)"


class NetServer(ServerProcess):
    """A `ServerProcess` living in namespace `netns` on `address`, advertised to agents."""

    def __init__(
        self,
        base_dir: Path,
        netns: Netns,
        address: str,
        timing: dict[str, Any] | None = None,
    ) -> None:
        self.netns = netns
        overrides: dict[str, dict[str, Any]] = {
            "": {"server_name": address},
            "http": {"bind": address},
            "zeromq": {"listen": f"tcp://{address}"},
            "timing": {**NET_TIMING, **(timing or {})},
        }
        super().__init__(base_dir, overrides)

    def start(self, timeout: float = 60.0) -> None:
        with self.netns.entered():
            super().start(timeout)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        with self.netns.entered():
            return super().request(method, path, **kw)


class NetAgent(AgentProcess):
    """An `AgentProcess` started inside its own namespace `netns`."""

    def __init__(
        self, server: NetServer, base_dir: Path, name: str, netns: Netns, **kw: Any
    ) -> None:
        self.netns = netns
        super().__init__(server, base_dir, name, **kw)

    def start(self, wait: bool = True, timeout: float = 45.0) -> None:
        with self.netns.entered():
            super().start(wait=False)
        if wait:
            self.wait_available(timeout)

    def runs(self, path: str = "runs.log") -> list[str]:
        """The job ids a job command appended to `path` in the agent's directory (its cwd)."""
        file = self.dir / path
        return file.read_text().split() if file.exists() else []

    def child_pids(self) -> list[int]:
        """Processes the agent has started that are still alive (its job processes)."""
        pids: list[int] = []
        with contextlib.suppress(FileNotFoundError):
            for task in os.listdir(f"/proc/{self.pid}/task"):
                with open(f"/proc/{self.pid}/task/{task}/children") as fh:
                    pids += [int(pid) for pid in fh.read().split()]
        return [pid for pid in pids if pid_alive(pid)]


Whitelist = str | Callable[[int], str]


class FaultNet:
    """A server, `count` agents in their own namespaces and the impairing hub between them."""

    def __init__(self, base: Path, count: int, whitelist: Whitelist, timing: dict[str, Any]):
        self.base = base
        tag = f"{NS_PREFIX}{os.getpid()}-{next(_nets)}"
        self.server_ns = Netns(f"{tag}-s")
        self.agent_ns = [Netns(f"{tag}-a{i}") for i in range(count)]
        self.namespaces = [self.server_ns, *self.agent_ns]
        self.forwarder: Forwarder | None = None
        self.server: NetServer | None = None
        self.agents: list[NetAgent] = []
        self._links: dict[str, str] = {}  # agent name → link name
        self._count, self._whitelist, self._timing = count, whitelist, timing
        self.opened_in = 0.0  # seconds `open` took (for the test's report)

    def open(self) -> None:
        """Namespaces, forwarder, server, agents (all available). Call `close` even if it fails."""
        started = time.monotonic()
        self.base.mkdir(parents=True, exist_ok=True)
        sweep_stale_namespaces()
        for netns in self.namespaces:
            netns.create()
        links = [(SERVER_LINK, self.server_ns, SERVER_ADDRESS)]
        links += [(f"ag{i}", ns, agent_address(i)) for i, ns in enumerate(self.agent_ns)]
        self.forwarder = Forwarder(links, self.base / "tun_link.log")
        self.forwarder.wait_ready()
        self.server = NetServer(self.base / "server", self.server_ns, SERVER_ADDRESS, self._timing)
        self.server.start()
        for i, netns in enumerate(self.agent_ns):
            whitelist = self._whitelist(i) if callable(self._whitelist) else self._whitelist
            agent = NetAgent(
                self.server,
                self.base / f"a{i}",
                unique_name(f"nf{i}"),
                netns,
                whitelist=whitelist,
            )
            self.agents.append(agent)
            self._links[agent.name] = f"ag{i}"
        for agent in self.agents:
            agent.start(wait=False)
        for agent in self.agents:
            agent.wait_available(timeout=90)
        self.agents.sort(key=lambda agent: agent.name)  # the order jobs list nodes in
        self.opened_in = time.monotonic() - started

    def close(self) -> None:
        """Stop everything by pid and delete every namespace, whatever state it is in."""
        errors: list[str] = []

        def attempt(what: str, step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as exc:
                errors.append(f"{what}: {exc!r}")

        if self.forwarder is not None:
            attempt("clear faults", lambda: self.command("clear"))  # agents stop faster
        for agent in self.agents:
            attempt(f"stop {agent.name}", agent.stop)
        if self.server is not None:
            attempt("stop server", self.server.stop)
        if self.forwarder is not None:
            attempt("stop tun_link", self.forwarder.stop)
        for netns in self.namespaces:
            attempt(f"delete {netns.name}", netns.delete)
        assert not errors, f"fault net clean-up: {errors}"

    # ---- faults ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [agent.name for agent in self.agents]

    def link(self, agent: AgentProcess) -> str:
        return self._links[agent.name]

    def _names(self, agents: AgentProcess | Iterable[AgentProcess]) -> str:
        agents = [agents] if isinstance(agents, AgentProcess) else list(agents)
        return ",".join(self.link(agent) for agent in agents)

    def command(self, text: str) -> str:
        assert self.forwarder is not None
        return self.forwarder.command(text)

    def impair(
        self, agents: AgentProcess | Iterable[AgentProcess], *, loss: float, delay: float
    ) -> None:
        """Each packet crossing these agents' links is lost with probability `loss` and
        delayed `delay` seconds (each way: the round trip grows by twice that)."""
        self.command(f"set {self._names(agents)} loss={loss} delay={delay}")

    def down(self, agents: AgentProcess | Iterable[AgentProcess]) -> None:
        """Silent partition: every packet on these links is dropped (no reset, no error)."""
        self.command(f"down {self._names(agents)}")

    def up(self, agents: AgentProcess | Iterable[AgentProcess]) -> None:
        self.command(f"up {self._names(agents)}")

    def flap(self, agent: AgentProcess, *, period: float, duration: float) -> None:
        """Down now, toggled every `period` s by the forwarder itself, up after `duration`."""
        self.command(f"flap {self._names(agent)} {period} {duration}")

    def clear(self) -> None:
        """Every link clean again."""
        self.command("clear")

    def stats(self, agent: AgentProcess | None = None) -> dict[str, Any]:
        """The forwarder's state and counters: of one agent's link, or of every link by name."""
        every: dict[str, Any] = json.loads(self.command("stats"))
        return every if agent is None else every[self.link(agent)]

    def wait_flapping_over(self, agent: AgentProcess, timeout: float) -> None:
        wait_for(
            lambda: not self.stats(agent)["flapping"],
            timeout,
            interval=0.5,
            what=f"flapping of {agent.name} to end",
        )


FaultNetFactory = Callable[..., FaultNet]
"""The type of the `fault_net` fixture."""


@pytest.fixture(name="fault_net")
def fault_net_fixture(tmp_path: Path) -> Iterator[FaultNetFactory]:
    """`fault_net(count, whitelist=..., timing={...})` → a running `FaultNet` (server and
    `count` available agents); skips the test where namespaces and TUN devices are unavailable;
    everything is torn down afterwards."""
    reason = missing_support()
    if reason is not None:
        pytest.skip(reason)
    made: list[FaultNet] = []

    def make(
        count: int,
        *,
        whitelist: Whitelist = DEFAULT_WHITELIST,
        timing: dict[str, Any] | None = None,
    ) -> FaultNet:
        net = FaultNet(tmp_path / f"net{len(made)}", count, whitelist, timing or {})
        made.append(net)
        net.open()
        return net

    try:
        yield make
    finally:
        for net in made:
            net.close()

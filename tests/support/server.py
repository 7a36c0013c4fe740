"""Run a real `pushjobs-server` process for integration tests.

`ServerProcess` initialises a data dir in a temp folder (org `testorg`, admin user `admin` with a
key), starts `pushjobs-server run` on ephemeral ports of 127.0.0.1 with short timings, and offers
blocking signed HTTP as its admin (`request`, `get`, `post` over `tests.support.api`) and waits for
node states and jobs. Fixtures (import them in a conftest or test module):

- `server`: one server per test module (fast timings); use unique node names per test.
- `server_factory`: call it with setting overrides to get a private server (e.g. to restart it).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from tests.support import api
from tests.support.procs import spawn_logged, started, stop_process
from tests.support.toml import toml_document
from tests.support.waits import wait_for

ORG = "testorg"
ADMIN = "admin"
FINAL_JOB_STATUSES = frozenset(
    {"complete", "quorum_failed", "timed_out", "crashed", "aborted", "stopped"}
)

FAST_TIMING: dict[str, Any] = {
    "heartbeat_interval": 0.5,
    # Liveness (lifecycle.md §3) with the default threshold 0.6 declares a node down after two
    # empty 0.5 s intervals: a heartbeat delayed by ~1 s on a loaded CI machine (test process or
    # server starved of CPU) would end a node mid-test. At 0.2 a node survives ~3 s of silence;
    # a dead one is still noticed within ~3-5 s.
    "down_threshold": 0.2,
    "rehab_interval": 0.5,
    "voting_timeout": 10,
    # the grace period in which a finished job's feed still replays every event: tests read
    # the feed right after the job ends, which on a loaded machine can take a few seconds
    "wait_complete_time": 5,
    "keep_alive_time": 2,
    "output_close_timeout": 5,
}


def server_command(config_path: Path, *args: str) -> list[str]:
    """`pushjobs-server -c <config> ARGS...` with this interpreter."""
    return [sys.executable, "-m", "pushjobs.server", "-c", str(config_path), *args]


def write_server_config(path: Path, data_dir: Path, overrides: dict[str, dict[str, Any]]) -> None:
    """Write a server.toml for loopback with ephemeral ports; `overrides` maps section → values."""
    sections: dict[str, dict[str, Any]] = {
        "": {"server_name": "127.0.0.1", "data_dir": str(data_dir), "log_level": "debug"},
        "http": {"bind": "127.0.0.1", "port": 0},
        "zeromq": {"listen": "tcp://127.0.0.1", "heartbeat_port": 0, "command_port": 0},
        "timing": dict(FAST_TIMING),
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    path.write_text(toml_document(sections.pop(""), sections))


class ServerProcess:
    """A real server in `base_dir`: init once, then start/stop/restart the `run` process."""

    _instances: ClassVar[list[ServerProcess]] = []

    @classmethod
    def running(cls) -> list[ServerProcess]:
        """Servers of this test session whose process is alive now."""
        return [p for p in cls._instances if p.proc is not None and p.proc.poll() is None]

    def __init__(
        self,
        base_dir: Path,
        overrides: dict[str, dict[str, Any]] | None = None,
        *,
        joins: ServerProcess | None = None,
    ) -> None:
        """`joins`: another server on the same database (a cluster); its organization and
        admin are reused instead of created."""
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.config_path = base_dir / "server.toml"
        self.log_path = base_dir / "server.log"
        self.admin_key_path = base_dir / "admin.pem"
        self.keys_dir = base_dir / "keys"
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        self.org = ORG
        self.admin_user = ADMIN
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {}
        write_server_config(self.config_path, self.data_dir, overrides or {})
        if joins is None:
            self.admin(
                "init", "--org", ORG, "--admin", ADMIN, "--admin-key-out", str(self.admin_key_path)
            )
        else:
            self.admin("init")
            self.admin_key_path = joins.admin_key_path
        self.admin_key = api.load_key(self.admin_key_path)
        ServerProcess._instances.append(self)

    # -- operator commands -------------------------------------------------------------------
    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `pushjobs-server -c <config> ARGS...` and return the completed process."""
        cmd = server_command(self.config_path, *args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr}{result.stdout}"
            )
        return result

    def make_client(self, name: str, admin: bool = False) -> tuple[str, Path]:
        """Register client `name` in the org with a new key; return (name, private key path)."""
        key_path = self.keys_dir / f"{name}.pem"
        args = ["client", "create", self.org, name, "--key-out", str(key_path)]
        if admin:
            args.append("--admin")
        self.admin(*args)
        return name, key_path

    # -- process control ---------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Start `pushjobs-server run` and wait until it has written its state file."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        state_file = self.data_dir / "server.json"
        state_file.unlink(missing_ok=True)
        proc = self.proc = spawn_logged(server_command(self.config_path, "run"), self.log_path)

        def ready() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{self.log_tail()}")
            if not state_file.exists():
                return None
            state = json.loads(state_file.read_text())
            return state if state.get("pid") == proc.pid else None

        self.state = wait_for(ready, timeout, what="server start")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the server (by pid) and wait for it to exit; return its exit status."""
        if self.proc is None:
            return 0
        return stop_process(self.proc, sig, timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # -- addresses ---------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return self.state["http_url"]

    @property
    def org_url(self) -> str:
        """The organization URL agents and CLIs are configured with."""
        return f"{self.http_url}/organizations/{self.org}"

    @property
    def heartbeat_port(self) -> int:
        return self.state["heartbeat_port"]

    @property
    def command_port(self) -> int:
        return self.state["command_port"]

    @property
    def incarnation_id(self) -> str:
        return self.state["incarnation_id"]

    # -- signed HTTP -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | dict | list | None = None,
        user: str | None = None,
        key: Any = None,
        headers: dict[str, str] | None = None,
        version: str = "1.3",
        timeout: float = 30.0,
    ) -> httpx.Response:
        """A Chef-signed request (`tests.support.api`) as the admin unless `user`/`key` given;
        `path` is absolute (`/organizations/...`) or org-relative (`jobs/...`)."""
        prepared = api.prepare(
            self.http_url,
            method,
            api.org_path(self.org, path),
            user=user or self.admin_user,
            key=key if key is not None else self.admin_key,
            body=body,
            headers=headers,
            version=version,
        )
        return prepared.send(timeout)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def node_state(self, node: str) -> dict[str, Any]:
        response = self.get(f"node_states/{node}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_node(self, node: str, availability: str = "available", timeout: float = 30.0) -> None:
        """Wait until `node_states/{node}` reports the given availability (or `offline`)."""
        if availability == "offline":
            wait_for(
                lambda: self.node_state(node)["status"] == "offline",
                timeout,
                what=f"{node} offline",
            )
        else:
            wait_for(
                lambda: self.node_state(node)["availability"] == availability,
                timeout,
                what=f"{node} {availability}",
            )

    def wait_job(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the job has a final status; return the job object."""

        def done() -> dict[str, Any] | None:
            job = self.get(f"jobs/{job_id}").json()
            return job if job.get("status") in FINAL_JOB_STATUSES else None

        return wait_for(done, timeout, interval=0.1, what=f"job {job_id} to finish")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One running server per test module, with fast timings."""
    with started(ServerProcess(tmp_path_factory.mktemp("server"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with CURVE disabled (a plain command socket), one per test module."""
    plain = {"zeromq": {"disable_curve_encryption": True}}
    with started(ServerProcess(tmp_path_factory.mktemp("plain"), plain)) as proc:
        yield proc


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Make private servers: `server_factory(timing={...}, zeromq={...}, start=True)`."""
    made: list[ServerProcess] = []

    def make(start: bool = True, **overrides: dict[str, Any]) -> ServerProcess:
        proc = ServerProcess(tmp_path_factory.mktemp("server"), overrides)
        made.append(proc)
        if start:
            proc.start()
        return proc

    try:
        yield make
    finally:
        for proc in made:
            proc.stop()

"""Cluster benchmark: K servers on one PostgreSQL database, N simulated nodes on each, one job
on all K·N nodes coordinated by the first server — next to one server alone with N nodes.

Starts a throwaway PostgreSQL cluster (or uses `--database-url`), then per scenario a fresh
database, the servers (bench/swarm_server.py: temp dirs, ephemeral ports on 127.0.0.1, CURVE
on, production timing except the heartbeat interval), registers the nodes once with `client
import --public-key`, and one simulated-agent process per server (this script's `_simulate`
mode around bench/swarm_agents.py's `Swarm`) whose nodes fetch their config from — and so are
connected to — that server. Once every node is `available` in the first server's
`node_states`, it POSTs one job on every node there and follows its feed to `job_complete`.

Figures per scenario: wall time POST → job_complete, CPU seconds of every server process,
every simulator process and PostgreSQL in that window (`/proc/<pid>/stat`), plus connect
times, final node counts, stall detectors and the servers' log warnings. Asserts nothing.

    python bench/cluster.py                          # 3 servers × 3000 nodes, then 1 × 3000
    python bench/cluster.py --nodes-per-server 50    # a quick run (~30 s)
    python bench/cluster.py --sqlite --json out.json # also one SQLite server; figures as JSON

Everything it started (servers, simulators, PostgreSQL) is stopped by pid at the end and every
temp dir removed (`--keep` keeps the servers' dirs with their logs), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support.postgres

from swarm import final_job, follow_job, wait_available
from swarm_agents import SignedHttp, Swarm
from swarm_server import (
    LocalServer,
    ProcSample,
    Target,
    node_names,
    raise_fd_limit,
    sample,
)

from pushjobs.protocol.keys import load_private_key

LABELS = "ABCDEFGH"
PREFIX = "node-"
_LEVELS = re.compile(r"^\S+ (WARNING|ERROR|CRITICAL) (\S+) (.*)$")
_TICKS = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------------
# The simulator process: one Swarm for one server's nodes, driven over stdin/stdout.
#
# Started as `cluster.py _simulate ARGS`; prints one JSON line when every node has fetched its
# config and connected, then answers each `stats` line on stdin with one JSON line (its
# counters and stall detectors, which it then resets); `stop` or end of input ends it.


def _swarm_stats(swarm: Swarm) -> dict[str, Any]:
    st = swarm.stats
    return {
        "sent": dict(st.sent),
        "received": dict(st.received),
        "errors": dict(st.errors),
        "send_failures": st.send_failures,
        "config_failures": st.config_failures,
        "server_heartbeats": st.server_heartbeats,
        "send_lag_max_s": round(st.send_lag_max, 3),
        "server_gap_max_s": round(st.server_gap_max, 3),
    }


async def _lines(stream: trio.abc.ReceiveStream) -> Any:
    """The stream's lines (text, without the newline) until its end."""
    buffer = b""
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buffer += chunk


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def simulate(opts: argparse.Namespace) -> None:
    """Connect the nodes, report, then answer `stats` requests until told to stop."""
    names = node_names(PREFIX, opts.first + opts.count)[opts.first :]
    key_pem = Path(opts.node_key).read_bytes()
    limits = httpx.Limits(max_connections=opts.concurrency + 8)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        http = SignedHttp(client, opts.url, opts.org, names[0], load_private_key(key_pem))
        swarm = Swarm(http, names, key_pem, run_time=opts.run_time, concurrency=opts.concurrency)
        try:
            async with trio.open_nursery() as nursery:
                t0 = time.monotonic()
                await swarm.connect_all(nursery, opts.heartbeat_interval)
                _emit({"connected_s": time.monotonic() - t0, "connected": len(swarm.connected)})
                async for line in _lines(trio.lowlevel.FdStream(os.dup(0))):
                    if line == "stats":
                        _emit(_swarm_stats(swarm))
                        swarm.stats.reset_stalls()
                    elif line == "stop":
                        break
                nursery.cancel_scope.cancel()
        finally:
            swarm.close()


def simulate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cluster.py _simulate")
    for name in ("--url", "--org", "--node-key"):
        parser.add_argument(name, required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--heartbeat-interval", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--run-time", type=float, default=0.0)
    trio.run(simulate, parser.parse_args(argv))
    return 0


class Simulator:
    """The parent's handle on one simulator process (stopped by its pid)."""

    def __init__(self, label: str, proc: trio.Process) -> None:
        self.label = label
        self.proc = proc
        assert proc.stdout is not None
        self._lines = _lines(proc.stdout)

    @classmethod
    async def start(
        cls, label: str, url: str, first: int, count: int, args: argparse.Namespace, base: Path
    ) -> Simulator:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_simulate",
            "--url", url,
            "--org", args.org,
            "--node-key", str(base / "node.pem"),
            "--first", str(first),
            "--count", str(count),
            "--heartbeat-interval", str(args.heartbeat_interval),
            "--concurrency", str(args.concurrency),
            "--run-time", str(args.run_time),
        ]  # fmt: skip
        with open(base / f"simulator-{label}.log", "ab") as log:
            proc = await trio.lowlevel.open_process(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches only this script, which stops it
            )
        return cls(label, proc)

    async def read(self) -> dict[str, Any]:
        """The process's next JSON line (RuntimeError when it ended instead)."""
        async for line in self._lines:
            return json.loads(line)
        raise RuntimeError(f"simulator {self.label} exited ({self.proc.returncode})")

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(b"stats\n")
        return await self.read()

    async def stop(self) -> None:
        """`stop`, then SIGKILL by pid after 10 s."""
        try:
            if self.proc.stdin is not None:
                with trio.move_on_after(2):
                    await self.proc.stdin.send_all(b"stop\n")
                await self.proc.stdin.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.move_on_after(10):
            await self.proc.wait()
            return
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


# ---------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway cluster (tests/support/postgres.py) or one named on the command line;
# each scenario gets a database of its own, dropped at the end.


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def create_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return _with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def tree_cpu(pid: int | None) -> float | None:
    """CPU seconds of `pid` and its children, live (their own and reaped descendants') and
    reaped — PostgreSQL's postmaster and its backends."""
    if pid is None:
        return None

    def fields(stat: str) -> list[str]:
        return stat.rsplit(")", 1)[1].split()

    try:
        own = fields(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None
    total = sum(int(own[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            rest = fields(Path(entry.path, "stat").read_text())
        except OSError:
            continue
        if int(rest[1]) == pid:
            total += sum(int(rest[i]) for i in (11, 12, 13, 14))
    return total / _TICKS


# ---------------------------------------------------------------------------------------------
# One scenario: servers, simulators, the job.


@dataclass
class Scenario:
    name: str  # "cluster", "single (PostgreSQL)", "single (SQLite)"
    servers: int
    nodes_per_server: int
    backend: str  # "postgresql" | "sqlite"
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(LABELS[: self.servers])

    @property
    def nodes(self) -> int:
        return self.servers * self.nodes_per_server


def machine_cpu() -> float:
    """CPU seconds all processes of this machine used so far (`/proc/stat`: all but idle and
    iowait), to tell how much of a window went to processes other than ours."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / _TICKS


@dataclass
class Reading:
    servers: dict[str, ProcSample | None]
    simulators: dict[str, ProcSample | None]
    postgres: float | None
    machine: float
    bench: float


@dataclass
class Meter:
    """The processes whose CPU a window is charged to, by pid."""

    servers: dict[str, int | None]
    simulators: dict[str, int | None]
    postgres: int | None

    def read(self) -> Reading:
        def of(pids: dict[str, int | None]) -> dict[str, ProcSample | None]:
            return {label: sample(pid) for label, pid in pids.items()}

        own = sample(os.getpid())
        return Reading(
            of(self.servers),
            of(self.simulators),
            tree_cpu(self.postgres),
            machine_cpu(),
            own.cpu if own else 0.0,
        )


def _delta(before: dict[str, ProcSample | None], after: dict[str, ProcSample | None]) -> dict:
    out: dict[str, float | None] = {}
    for label, b in before.items():
        a = after.get(label)
        out[label] = round(a.cpu - b.cpu, 3) if a and b else None
    return out


def window(a: Reading, b: Reading) -> dict[str, Any]:
    """CPU seconds between two readings: per server and simulator, PostgreSQL, this script,
    the whole machine, and what of the machine's went to other processes."""
    servers, sims = _delta(a.servers, b.servers), _delta(a.simulators, b.simulators)
    pg = None if a.postgres is None or b.postgres is None else round(b.postgres - a.postgres, 3)
    bench = b.bench - a.bench
    ours = sum(v for v in [*servers.values(), *sims.values(), pg, bench] if v is not None)
    machine = b.machine - a.machine
    return {
        "server_cpu_s": servers,
        "simulator_cpu_s": sims,
        "postgres_cpu_s": pg,
        "bench_cpu_s": round(bench, 3),
        "machine_cpu_s": round(machine, 3),
        "other_cpu_s": round(max(0.0, machine - ours), 3),
    }


def scan_log(path: Path, examples: int = 5) -> dict[str, Any]:
    """Warnings and errors of one server log (counts, the most frequent messages) and how
    many nodes were declared down."""
    counts: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    down = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"missing": True}
    for line in text.splitlines():
        if " down: " in line and " INFO " in line:
            down += 1
        match = _LEVELS.match(line)
        if match:
            counts[match[1]] += 1
            # group messages that differ only by numbers, ids and quoted names
            shape = re.sub(r"'[^']*'|\b[0-9a-f-]{8,}\b|\d+(\.\d+)?", "…", match[3])
            messages[f"{match[1]} {match[2]} {shape}"[:200]] += 1
    return {
        "warnings": counts["WARNING"],
        "errors": counts["ERROR"] + counts["CRITICAL"],
        "nodes_down": down,
        "top": [f"{n}× {m}" for m, n in messages.most_common(examples)],
    }


async def drive(
    scn: Scenario,
    args: argparse.Namespace,
    targets: list[Target],
    base: Path,
    pg_pid: int | None,
) -> None:
    """Simulators, wait for every node, the job(s); results into `scn.figures`."""
    fig = scn.figures
    n = scn.nodes_per_server
    names = node_names(PREFIX, scn.nodes)
    server_pids = {label: t.pid for label, t in zip(scn.labels, targets, strict=True)}
    first = targets[0]
    admin_key = load_private_key(first.admin_key_pem)
    sims: list[Simulator] = []
    async with httpx.AsyncClient(timeout=120) as client:
        http = SignedHttp(client, first.http_url, first.org, first.admin_user, admin_key)
        try:
            t0 = time.monotonic()
            for i, (label, target) in enumerate(zip(scn.labels, targets, strict=True)):
                sims.append(await Simulator.start(label, target.http_url, i * n, n, args, base))
            sim_pids: dict[str, int | None] = {sim.label: sim.proc.pid for sim in sims}
            meter = Meter(server_pids, sim_pids, pg_pid)
            r0 = meter.read()  # the simulators have only just been started
            connected: dict[str, dict[str, Any]] = {}

            async def connect(sim: Simulator) -> None:
                connected[sim.label] = await sim.read()

            with trio.fail_after(args.available_timeout):
                async with trio.open_nursery() as nursery:
                    for sim in sims:
                        nursery.start_soon(connect, sim)
            t_conn = time.monotonic() - t0
            expected = sum(c["connected"] for c in connected.values())
            fig["connect_s"] = round(t_conn, 3)
            fig["connect_s_per_simulator"] = {
                k: round(v["connected_s"], 3) for k, v in sorted(connected.items())
            }
            fig["connected"] = expected
            t_avail, available = await wait_available(
                http, set(names), expected, args.available_timeout, args.poll
            )
            fig["available_s"] = None if t_avail is None else round(t_avail - t0, 3)
            fig["available"] = available
            fig["connect_cpu"] = window(r0, meter.read())
            fig["connect_cpu"]["wall_s"] = round(time.monotonic() - t0, 3)
            fig["connect_simulators"] = {sim.label: await sim.stats() for sim in sims}
            if t_avail is None:
                return
            await trio.sleep(args.settle)
            fig["jobs"] = []
            for _ in range(args.jobs):
                fig["jobs"].append(await _one_job(http, names, args, meter))
                fig["jobs"][-1]["simulators"] = {sim.label: await sim.stats() for sim in sims}
            end = meter.read().servers
            fig["peak_rss_mb"] = {
                label: round(s.hwm_kb / 1024, 1) if s else None for label, s in end.items()
            }
        finally:
            with trio.CancelScope(shield=True):
                for sim in sims:
                    await sim.stop()


async def _one_job(
    http: SignedHttp,
    names: list[str],
    args: argparse.Namespace,
    meter: Meter,
) -> dict[str, Any]:
    """POST one job on every node to the first server; figures of POST → job_complete."""
    body: dict[str, Any] = {"command": "cluster-bench", "nodes": names, "run_timeout": 600}
    r0 = meter.read()
    followed = await follow_job(http, body, args.job_timeout)
    r1 = meter.read()
    out: dict[str, Any] = {"post_s": round(followed.t_post, 3)}
    if followed.job_id is None:
        out["error"] = f"POST failed: {followed.error}"
        return out
    done = followed.arrivals.get("job_complete")
    out["wall_s"] = None if done is None else round(done, 3)
    quorum = followed.arrivals.get("quorum_succeeded")
    out["quorum_s"] = None if quorum is None else round(quorum, 3)
    stamps = followed.stamps
    if "start" in stamps and "job_complete" in stamps:
        out["server_clock_s"] = round(stamps["job_complete"] - stamps["start"], 3)
    out["feed_status"] = followed.final_status
    out["events"] = followed.counts
    out.update(window(r0, r1))
    cpu = out["server_cpu_s"]
    total = sum(v for v in cpu.values() if v is not None)
    out["server_cpu_total_s"] = round(total, 3)
    out["us_per_node"] = round(1e6 * total / len(names))
    coordinator = next(iter(cpu.values()))
    out["coordinator_us_per_node"] = (
        None if coordinator is None else round(1e6 * coordinator / len(names))
    )
    job = await final_job(http, followed.job_id, len(names))
    out["status"] = job.get("status")
    out["node_counts"] = {k: len(v) for k, v in sorted(job.get("nodes", {}).items())}
    return out


def run_scenario(
    scn: Scenario, args: argparse.Namespace, admin_url: str | None, pg_pid: int | None
) -> None:
    """A fresh database, the servers, `drive`, then everything stopped and removed."""
    database = f"bench_{os.getpid()}_{scn.backend}_{scn.servers}"
    servers: list[LocalServer] = []
    print(f"{scn.name}: {scn.servers} × {scn.nodes_per_server} nodes …", file=sys.stderr)
    try:
        extra: dict[str, dict[str, Any]] = {}
        if scn.backend == "postgresql":
            assert admin_url is not None
            extra["store"] = {"backend": "postgresql", "url": create_database(admin_url, database)}
        targets: list[Target] = []
        for label in scn.labels:
            if scn.backend == "postgresql":
                extra["cluster"] = {"server_id": f"bench-{label.lower()}"}
            server = LocalServer(
                args.heartbeat_interval,
                keep_dir=args.keep,
                extra=extra,
                prefix=f"pushjobs-cluster-{label.lower()}-",
            )
            servers.append(server)
            if not targets:
                t = time.monotonic()
                targets.append(server.prepare(node_names(PREFIX, scn.nodes)))
                scn.figures["import_s"] = round(time.monotonic() - t, 2)
                key = server.base / "node.pem"
                key.write_bytes(targets[0].node_key_pem)
                key.chmod(0o600)
            else:
                targets.append(server.join(targets[0]))
        for server, target in zip(servers, targets, strict=True):
            server.start(target)
        trio.run(drive, scn, args, targets, servers[0].base, pg_pid)
    finally:
        for server in servers:
            server.stop_process()
        scn.figures["logs"] = {
            label: scan_log(server.log_path)
            for label, server in zip(scn.labels, servers, strict=False)
        }
        for server in servers:
            if args.keep:
                print(f"{scn.name}: server dir kept: {server.base}", file=sys.stderr)
            server.stop()
        if scn.backend == "postgresql" and admin_url is not None:
            drop_database(admin_url, database)


# ---------------------------------------------------------------------------------------------
# Output


def _f(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_report(scenarios: list[Scenario], args: argparse.Namespace, meta: dict) -> None:
    labels = list(LABELS[: args.servers])
    print(
        f"pushjobs cluster bench — {args.servers} servers × {args.nodes_per_server} nodes, "
        f"heartbeat interval {args.heartbeat_interval:g} s, CURVE on, {os.cpu_count()} CPUs, "
        f"load {meta['load_before']} → {meta['load_after']}, {meta['total_s']:.0f} s total"
    )
    head = ["scenario", "nodes", "wall s", *(f"CPU {x}" for x in labels), "CPU Σ"]
    head += ["µs/node", "coord µs/node", "sims CPU", "PG CPU", "others", "status"]
    rows: list[list[str]] = []
    for scn in scenarios:
        for i, job in enumerate(scn.figures.get("jobs") or [{}]):
            cpu = job.get("server_cpu_s", {})
            sims = job.get("simulator_cpu_s", {})
            name = scn.name + (f" job {i + 1}" if args.jobs > 1 else "")
            counts = ",".join(f"{k}={v}" for k, v in job.get("node_counts", {}).items())
            rows.append(
                [
                    name,
                    str(scn.nodes),
                    _f(job.get("wall_s")),
                    *(_f(cpu.get(x)) for x in labels),
                    _f(job.get("server_cpu_total_s")),
                    _f(job.get("us_per_node"), 0),
                    _f(job.get("coordinator_us_per_node"), 0),
                    _f(sum(v for v in sims.values() if v is not None) if sims else None),
                    _f(job.get("postgres_cpu_s")),
                    _f(job.get("other_cpu_s")),
                    f"{job.get('status', job.get('error', 'no job'))} {counts}".strip(),
                ]
            )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))  # fmt: skip
    ratios = meta.get("ratios", {})
    print(
        f"ratios: cluster wall / single wall = {_f(ratios.get('wall'))}; "
        f"coordinator CPU / single CPU = {_f(ratios.get('coordinator_cpu'))}; "
        f"cluster CPU Σ / single CPU = {_f(ratios.get('total_cpu'))}"
    )
    for scn in scenarios:
        fig = scn.figures
        print(f"{scn.name}:")
        print(
            f"  client import {fig.get('import_s')} s; simulators started + config fetch + "
            f"connect {_f(fig.get('connect_s'))} s "
            f"(per simulator {fig.get('connect_s_per_simulator')}); all {fig.get('connected')} "
            f"available {_f(fig.get('available_s'))} s after the first config request "
            f"({fig.get('available')} seen)"
        )
        if "connect_cpu" in fig:
            print(f"  connect phase CPU s: {_cpu_text(fig['connect_cpu'])}")
        for i, job in enumerate(fig.get("jobs", [])):
            wall = job.get("wall_s") or 0
            sims = job.get("simulator_cpu_s", {})
            busiest = max((v for v in sims.values() if v is not None), default=0)
            lag = max((s["send_lag_max_s"] for s in job.get("simulators", {}).values()), default=0)
            gap = max(
                (s["server_gap_max_s"] for s in job.get("simulators", {}).values()), default=0
            )
            print(
                f"  job {i + 1}: POST → 201 {_f(job.get('post_s'))} s, → quorum_succeeded "
                f"{_f(job.get('quorum_s'))} s, → job_complete {_f(job.get('wall_s'))} s "
                f"(server clock start → job_complete {_f(job.get('server_clock_s'))} s); "
                f"status {job.get('status')} {job.get('node_counts')}"
            )
            print(f"  job {i + 1}: CPU s: {_cpu_text(job)}")
            print(
                f"  job {i + 1}: busiest simulator {100 * busiest / wall if wall else 0:.0f}% of "
                f"a core, heartbeat sends up to {lag:.2f} s late, longest gap between server "
                f"heartbeats {gap:.2f} s"
            )
        problems: Counter[str] = Counter()
        for phase in [fig.get("connect_simulators", {})] + [
            j.get("simulators", {}) for j in fig.get("jobs", [])
        ]:
            for stats in phase.values():
                problems.update(stats.get("errors", {}))
                problems["send would block"] += stats.get("send_failures", 0)
        problems = +problems
        print(
            "  simulator problems: "
            + (", ".join(f"{k} ×{v}" for k, v in problems.items()) or "none")
        )
        print(f"  peak RSS MB: {fig.get('peak_rss_mb')}")
        for label, log in fig.get("logs", {}).items():
            print(
                f"  server {label} log: {log.get('warnings', '?')} warnings, "
                f"{log.get('errors', '?')} errors, {log.get('nodes_down', '?')} nodes down"
            )
            for line in log.get("top", []):
                print(f"    {line}")
    sys.stdout.flush()


def _cpu_text(w: dict[str, Any]) -> str:
    """One window's CPU figures as text."""
    wall = w.get("wall_s") or 0
    machine = w.get("machine_cpu_s", 0)
    busy = f" ({100 * machine / (wall * (os.cpu_count() or 1)):.0f}% busy)" if wall else ""
    return (
        f"servers {w.get('server_cpu_s')}, simulators {w.get('simulator_cpu_s')}, "
        f"PostgreSQL {_f(w.get('postgres_cpu_s'))}, this script {_f(w.get('bench_cpu_s'))}; "
        f"machine {_f(machine)}{busy}, other processes {_f(w.get('other_cpu_s'))}"
    )


def _load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def ratios(scenarios: list[Scenario]) -> dict[str, float | None]:
    """Cluster over single server (PostgreSQL), first job of each."""
    by_name = {s.name: (s.figures.get("jobs") or [{}])[0] for s in scenarios}
    cluster, single = by_name.get("cluster", {}), by_name.get("single (PostgreSQL)", {})
    coordinator = next(iter(cluster.get("server_cpu_s", {}).values()), None)
    alone = next(iter(single.get("server_cpu_s", {}).values()), None)
    return {
        "wall": _ratio(cluster.get("wall_s"), single.get("wall_s")),
        "coordinator_cpu": _ratio(coordinator, alone),
        "total_cpu": _ratio(cluster.get("server_cpu_total_s"), alone),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--servers", type=int, default=3, help="servers in the cluster (default 3)")
    add("--nodes-per-server", type=int, default=3000, help="simulated nodes per server (3000)")
    add(
        "--heartbeat-interval",
        type=float,
        default=10.0,
        help="server heartbeat_interval and the agents' period, s (default 10, production)",
    )
    add("--concurrency", type=int, default=16, help="config fetches in flight per simulator")
    add("--run-time", type=float, default=0.0, help="simulated command run time, s (default 0)")
    add("--jobs", type=int, default=1, help="jobs per scenario, one after another (default 1)")
    add("--settle", type=float, default=2.0, help="wait after all are available, s (default 2)")
    add("--sqlite", action="store_true", help="also the single server on SQLite")
    add("--no-single", action="store_true", help="only the cluster, no single-server baseline")
    add(
        "--database-url",
        help="a PostgreSQL server to use (a role that may CREATE DATABASE); default: start one",
    )
    add("--available-timeout", type=float, default=600.0, help="give up waiting after, s")
    add("--job-timeout", type=float, default=300.0, help="give up following a job after, s")
    add("--poll", type=float, default=0.5, help="node_states poll period, s (default 0.5)")
    add("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    add("--keep", action="store_true", help="keep the servers' temp dirs (logs)")
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    if sys.argv[1:2] == ["_simulate"]:
        return simulate_main(sys.argv[2:])
    args = build_parser().parse_args()
    args.org = "bench"
    if not 1 <= args.servers <= len(LABELS):
        raise SystemExit(f"--servers must be from 1 to {len(LABELS)}")
    needed = 3 * args.nodes_per_server + 512
    if raise_fd_limit(needed) < needed:
        print(f"warning: open-file limit below {needed}; raise it first", file=sys.stderr)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # stop what was started, as on Ctrl-C
        signal.signal(signum, _interrupt)
    started = time.monotonic()
    meta: dict[str, Any] = {"load_before": _load()}
    scenarios = [Scenario("cluster", args.servers, args.nodes_per_server, "postgresql")]
    if not args.no_single:
        scenarios.append(Scenario("single (PostgreSQL)", 1, args.nodes_per_server, "postgresql"))
    if args.sqlite:
        scenarios.append(Scenario("single (SQLite)", 1, args.nodes_per_server, "sqlite"))
    postgres: Any = None
    interrupted = False
    try:
        admin_url, pg_pid = args.database_url, None
        if admin_url is None:
            from tests.support.postgres import PostgresCluster

            postgres = PostgresCluster()
            postgres.start()
            admin_url = postgres.url()
            pg_pid = int((postgres.data / "postmaster.pid").read_text().split()[0])
        for scn in scenarios:
            run_scenario(scn, args, admin_url, pg_pid)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # trio nurseries wrap a Ctrl-C in an exception group; anything else is a real error.
        if isinstance(exc, BaseExceptionGroup) and (
            exc.split(KeyboardInterrupt)[1] is not None or exc.subgroup(KeyboardInterrupt) is None
        ):
            raise
        interrupted = True
        print("interrupted: stopping", file=sys.stderr)
    finally:
        if postgres is not None:
            try:
                postgres.stop()
            finally:
                postgres.remove()
    meta.update(load_after=_load(), total_s=time.monotonic() - started, ratios=ratios(scenarios))
    print_report(scenarios, args, meta)
    if args.json:
        out = {
            **meta,
            "servers": args.servers,
            "nodes_per_server": args.nodes_per_server,
            "heartbeat_interval": args.heartbeat_interval,
            "cpus": os.cpu_count(),
            "scenarios": {s.name: s.figures for s in scenarios},
        }
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())

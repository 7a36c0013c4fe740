"""The performance scorecard: every figure of the performance targets from one sitting.

Runs, one after another on this machine (nothing else should be running):

1. `swarm.py` with 10,000 simulated agents at the production heartbeat (10 s): time from the
   first config request until all are `available`, then an idle window: server CPU, µs a
   heartbeat, server memory per connected node;
2. `swarm.py` with 5,000 agents: 10 jobs one after another (wall and server CPU of each, server
   RSS after each), a server restart (the reconnect storm: seconds until all are available
   again, config requests per node), then the transport limit for 5,000 nodes
   (`transport_limit.py`) the jobs are divided by;
3. `swarm.py` with 1,000 agents, 3 jobs, and its transport limit;
4. `http_load.py`: signed `GET node_states/NODE` and `GET config/NODE`, hypercorn's floor;
5. `agent_memory.py`: VmRSS and PSS of one real idle `pushjobs-agent`;
6. `zmq_memory.py`: libzmq's own memory per agent (CURVE ROUTER + PUB connection), fresh and
   after 600 messages each way — the floor under the server's memory per node.

and prints the table with each figure, its ratio where the target is a ratio, and the target.
Asserts nothing. `--scale 0.1` runs everything with a tenth of the nodes (a smoke run whose
figures mean little).

    python bench/scorecard.py [--scale 0.1] [--json FILE] [--keep-logs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    figure: str
    measured: str
    target: str
    met: bool | None  # None: no verdict (missing figure, or no target)


def run_bench(name: str, args: list[str], out_dir: Path, timeout: float) -> Any:
    """Run `bench/NAME.py ARGS --json FILE`; its figures (or None), output kept in a log."""
    out = out_dir / f"{name}-{len(list(out_dir.iterdir()))}.json"
    log = out.with_suffix(".log")
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args, "--json", str(out)]
    print(f"==> {' '.join([name, *args])}", flush=True)
    started = time.monotonic()
    with log.open("w") as stream:
        try:
            code = subprocess.run(
                cmd, stdout=stream, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    print(f"    {time.monotonic() - started:.0f} s, exit {code}, output in {log}", flush=True)
    if code != 0 or not out.exists():
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        return None
    return json.loads(out.read_text())


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def verdict(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else ok(value)


def job_values(figures: dict[str, Any], suffix: str) -> list[float]:
    """Every `jobN_<suffix>` figure in job order (missing ones skipped)."""
    values = []
    index = 1
    while f"job{index}_status" in figures:
        value = figures.get(f"job{index}_{suffix}")
        if isinstance(value, int | float):
            values.append(float(value))
        index += 1
    return values


def fanout_rows(figures: Any, nodes: int) -> list[Row]:
    """Job wall and server CPU over the transport limit (median of the jobs)."""
    if not figures:
        return [Row(f"{nodes:,}-node job / transport limit", "not measured", "≤ 1.5×", None)]
    walls = job_values(figures, "complete_s")
    cpus = job_values(figures, "server_cpu_s")
    limit_wall, limit_cpu = figures.get("limit_wall_s"), figures.get("limit_router_cpu_s")
    wall = statistics.median(walls) if walls else None
    cpu = statistics.median(cpus) if cpus else None
    wall_ratio, cpu_ratio = ratio(wall, limit_wall), ratio(cpu, limit_cpu)
    jobs = f"median of {len(walls)} jobs"
    return [
        Row(
            f"{nodes:,}-node job, POST → job_complete / transport limit",
            f"{fmt(wall, ' s')} / {fmt(limit_wall, ' s', 3)} = **{fmt(wall_ratio, '×')}** ({jobs})",
            "≤ 1.5×",
            verdict(wall_ratio, lambda r: r <= 1.5),
        ),
        Row(
            f"server CPU per {nodes:,}-node job / ROUTER CPU of the limit",
            f"{fmt(cpu, ' s')} / {fmt(limit_cpu, ' s', 3)} = **{fmt(cpu_ratio, '×')}**"
            + (f" ({1e6 * cpu / nodes:.0f} µs a node)" if cpu else ""),
            "≤ 1.5×",
            verdict(cpu_ratio, lambda r: r <= 1.5),
        ),
    ]


def build_rows(
    idle: Any,
    big: Any,
    small: Any,
    http: Any,
    agent: Any,
    zmq_mem: Any,
    n_idle: int,
    n_big: int,
    n_small: int,
) -> list[Row]:
    rows = [*fanout_rows(big, n_big), *fanout_rows(small, n_small)]
    if idle:
        pct = idle.get("server_cpu_steady_pct")
        per = idle.get("server_us_per_heartbeat")
        rows.append(
            Row(
                f"{n_idle:,} idle nodes, 10 s heartbeat: server CPU",
                f"**{fmt(pct, ' %', 1)}** of a core ({fmt(per, ' µs', 0)} a heartbeat)",
                "≤ 5 %",
                verdict(pct, lambda v: v <= 5),
            )
        )
        kb = idle.get("server_rss_per_node_kb")
        rows.append(
            Row(
                "server memory per connected node",
                f"{fmt(kb, ' KB', 1)} (RSS with all connected: "
                f"{fmt(idle.get('server_rss_connected_mb'), ' MB', 0)})",
                "≤ 32 KB",
                verdict(kb, lambda v: v <= 32),
            )
        )
    if zmq_mem:
        rows.append(
            Row(
                "libzmq alone per agent (CURVE ROUTER + PUB connection; the swarm shares one SUB)",
                f"{fmt(zmq_mem.get('fresh_kb'), ' KB', 1)} fresh → "
                f"**{fmt(zmq_mem.get('warmed_kb'), ' KB', 1)}** after "
                f"{zmq_mem.get('rounds')} messages each way (flat after ~512)",
                "– (the floor)",
                None,
            )
        )
    if idle:
        avail = idle.get("available_s")
        rows.append(
            Row(
                f"{n_idle:,} agents from start to all available",
                f"**{fmt(avail, ' s', 1)}**",
                "≤ 10 s",
                verdict(avail, lambda v: v <= 10),
            )
        )
    if big:
        rss = job_values(big, "rss_mb")
        growth = rss[-1] - rss[0] if len(rss) > 1 else None
        rows.append(
            Row(
                f"server RSS after each of {len(rss)} jobs of {n_big:,} nodes",
                " → ".join(f"{v:.0f}" for v in rss)
                + " MB"
                + (f" (+{growth:.0f} MB after the first)" if growth is not None else ""),
                "flat after the first job",
                None,
            )
        )
        storm = big.get("storm_available_s")
        per_node = big.get("storm_config_requests_per_node")
        rows.append(
            Row(
                f"{n_big:,} agents back to available after a server restart",
                f"**{fmt(storm, ' s', 1)}** after the new server was up; "
                f"{fmt(per_node, '', 2)} config requests a node; new server "
                f"{fmt(big.get('storm_server_cpu_s'), ' s CPU', 1)} (main thread "
                f"{fmt(big.get('storm_server_main_cpu_s'), ' s', 1)}), simulated agents "
                f"{fmt(big.get('storm_swarm_cpu_s'), ' s CPU', 1)} on the same cores",
                "≤ 10 s, no retry storm",
                verdict(storm, lambda v: v <= 10),
            )
        )
    if http:
        best: dict[str, dict[str, Any]] = {}
        for row in http:
            if row["endpoint"] not in best or row["rate"] > best[row["endpoint"]]["rate"]:
                best[row["endpoint"]] = row
        parts = []
        for name in ("config", "node_state"):
            if name in best:
                row = best[name]
                parts.append(
                    f"{name} **{row['rate']:,.0f}** req/s (×{row['x_floor'] or 0:.2f} of the floor,"
                    f" {row['concurrency']} connections)"
                )
        floor = best.get("floor", {}).get("rate")
        worst = min((best[n]["rate"] for n in ("config", "node_state") if n in best), default=None)
        rows.append(
            Row(
                "signed GET config/NODE, node_states/NODE, one server process",
                "; ".join(parts) + f"; hypercorn's floor {fmt(floor, ' req/s', 0)}",
                "≥ 2,000 req/s",
                verdict(worst, lambda v: v >= 2000),
            )
        )
    if agent:
        rows.append(
            Row(
                "agent idle RSS (real pushjobs-agent)",
                f"**{fmt(agent.get('agent_rss_mib'), ' MiB', 1)}** (PSS "
                f"{fmt(agent.get('agent_pss_mib'), ' MiB', 1)}; floor of its libraries "
                f"{fmt(agent.get('floor_rss_mib'), ' MiB', 1)})",
                "≤ 25 MB RSS",
                verdict(agent.get("agent_rss_mib"), lambda v: v * 1.048576 <= 25),
            )
        )
    rows.append(
        Row("vs Salt, 30 real agents, /bin/true", "not measured (no Salt here)", "≤ 0.1×", None)
    )
    return rows


def print_table(rows: list[Row], title: str) -> None:
    print(f"\n{title}\n")
    print("| figure | measured | target | met |")
    print("|---|---|---|---|")
    marks = {True: "yes", False: "**no**", None: "–"}
    for row in rows:
        print(f"| {row.figure} | {row.measured} | {row.target} | {marks[row.met]} |")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="node counts × this (default 1)")
    parser.add_argument("--jobs", type=int, default=10, help="consecutive big jobs (default 10)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, s (default 30)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="keep the benches' output")
    args = parser.parse_args()
    n_idle, n_big, n_small = (max(10, int(n * args.scale)) for n in (10_000, 5_000, 1_000))
    out_dir = Path(tempfile.mkdtemp(prefix="pushjobs-scorecard-"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.monotonic()
    common = ["--heartbeat-interval", "10", "--probe", "0"]
    idle = run_bench(
        "swarm",
        ["--nodes", str(n_idle), *common, "--steady", str(args.idle), "--jobs", "0"],
        out_dir,
        1800,
    )
    big = run_bench(
        "swarm",
        ["--nodes", str(n_big), *common, "--steady", "3", "--jobs", str(args.jobs), "--restart"],
        out_dir,
        1800,
    )
    small = run_bench(
        "swarm", ["--nodes", str(n_small), *common, "--steady", "2", "--jobs", "3"], out_dir, 900
    )
    http = run_bench(
        "http_load",
        ["--endpoints", "floor,node_state,config", "--concurrency", "1,16", "--requests", "3000"],
        out_dir,
        900,
    )
    agent = run_bench("agent_memory", ["--no-imports"], out_dir, 300)
    zmq_mem = run_bench("zmq_memory", ["--nodes", str(max(10, n_small))], out_dir, 900)
    rows = build_rows(idle, big, small, http, agent, zmq_mem, n_idle, n_big, n_small)
    print_table(
        rows,
        f"pushjobs performance scorecard — {started}, {os.cpu_count()} CPUs, "
        f"{time.monotonic() - t0:.0f} s, scale {args.scale:g}",
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "idle": idle,
                    "big": big,
                    "small": small,
                    "http": http,
                    "agent": agent,
                    "zmq_memory": zmq_mem,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    if args.keep_logs:
        print(f"\nlogs kept in {out_dir}")
    else:
        for path in out_dir.iterdir():
            path.unlink()
        out_dir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())

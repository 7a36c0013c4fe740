"""Swarm benchmark: one real server, thousands of simulated agents, figures printed.

Starts a private `pushjobs-server` (production timing except the heartbeat interval; CURVE on)
or attaches to a running one, registers N nodes sharing one client key (`client import
--public-key`), then simulates N protocol-3.0 agents (optionally some 2.0) from this one trio
process and measures:

- time until all N nodes are `available` in `node_states` (config fetch + CURVE connect + rehab);
- steady heartbeat load: heartbeats/s sent, the server's CPU time per heartbeat;
- a job on all N nodes: POST → 201, → `quorum_succeeded`, → `complete` (from the job's SSE
  feed, arrival times here and the server's own event timestamps) and the final node counts;
- the server process's CPU seconds per phase (`/proc/<pid>/stat`) and peak RSS (`VmHWM`).

Asserts nothing. Everything it started is stopped by pid at the end, also on Ctrl-C.

    python bench/swarm.py                     # 1000 nodes, heartbeat interval 1 s
    python bench/swarm.py --nodes 3000 --v2-fraction 0.1 --capture --run-time 2

See bench/README.md for attaching to a running server and for large N (file descriptors).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from pushjobs.protocol.vocabulary import FINAL_JOB_STATUSES

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarm_agents import SignedHttp, Swarm
from swarm_server import (
    LocalServer,
    Target,
    node_names,
    raise_fd_limit,
    sample,
    self_cpu,
)
from transport_limit import measure_limit

from pushjobs.protocol.keys import load_private_key


def probe_name(prefix: str) -> str:
    return f"{prefix}probe"


def parse_sse_time(text: str) -> float:
    """`YYYY-MM-DD HH:MM:SS.ffffffZ` → epoch seconds."""
    stamp = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%fZ")
    return stamp.replace(tzinfo=datetime.UTC).timestamp()


class Figures:
    """Measured values by name, plus the printed table rows in order."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.rows: list[tuple[str, str]] = []

    def add(self, key: str, value: Any, label: str, text: str) -> None:
        self.values[key] = value
        self.rows.append((label, text))

    def note(self, label: str, text: str) -> None:
        self.rows.append((label, text))

    def print(self, title: str) -> None:
        width = max((len(label) for label, _ in self.rows), default=0)
        print(title)
        for label, text in self.rows:
            print(f"  {label:<{width}}  {text}")
        sys.stdout.flush()


def stall_text(swarm: Swarm, figures: Figures, phase: str) -> None:
    """Report the phase's stall detectors, then reset them for the next phase."""
    st = swarm.stats
    figures.values[f"{phase}_swarm_lag_max_s"] = round(st.send_lag_max, 3)
    figures.values[f"{phase}_server_hb_gap_max_s"] = round(st.server_gap_max, 3)
    figures.note(
        f"stalls, {phase} phase",
        f"swarm heartbeat sends up to {st.send_lag_max:.2f} s late; "
        f"longest gap between server heartbeats {st.server_gap_max:.2f} s",
    )
    rtts = sorted(st.probe_rtts)
    if rtts:
        median, worst = rtts[len(rtts) // 2], rtts[-1]
        figures.values[f"{phase}_probe_rtt_ms"] = {
            "median": round(1000 * median, 1),
            "max": round(1000 * worst, 1),
            "count": len(rtts),
        }
        figures.note(
            f"probe round trip, {phase} phase",
            f"median {1000 * median:.1f} ms, max {1000 * worst:.1f} ms ({len(rtts)} probes)",
        )
    st.reset_stalls()


def cpu_text(before: Any, after: Any) -> str:
    if before is None or after is None:
        return "n/a (server pid unknown)"
    cpu = after.cpu - before.cpu
    wall = after.wall - before.wall
    return f"{cpu:.2f} s CPU in {wall:.1f} s ({100 * cpu / wall if wall else 0:.0f}% of one core)"


async def wait_available(
    http: SignedHttp, names: set[str], count: int, timeout: float, poll: float
) -> tuple[float | None, int]:
    """Poll `node_states` until `count` nodes are available; (monotonic time or None, count)."""
    deadline = time.monotonic() + timeout
    available = 0
    while time.monotonic() < deadline:
        response = await http.request("GET", "node_states")
        if response.status_code == 200:
            available = sum(
                1
                for n in response.json()
                if n["availability"] == "available" and n["node_name"] in names
            )
            if available >= count:
                return time.monotonic(), available
        await trio.sleep(poll)
    return None, available


async def _count_available(http: SignedHttp, names: set[str]) -> int | None:
    """Available nodes among `names`, or None while the server does not answer."""
    try:
        response = await http.request("GET", "node_states")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return sum(
        1 for n in response.json() if n["availability"] == "available" and n["node_name"] in names
    )


async def _restart_storm(
    args: argparse.Namespace,
    target: Target,
    figures: Figures,
    http: SignedHttp,
    swarm: Swarm,
    server: LocalServer,
    names: set[str],
) -> None:
    """Restart the server (SIGTERM, start again on the same data and ports) and time the
    fleet's way back: every simulated node sees the new incarnation in the server's
    heartbeats, waits uniform [0, interval] like an agent, fetches its config and reconnects."""
    expected = len(swarm.connected)
    requests0, errors0 = swarm.stats.config_requests, sum(swarm.stats.errors.values())
    t0, trio0 = time.monotonic(), trio.current_time()
    await trio.to_thread.run_sync(server.restart, target)
    t_up = time.monotonic()
    first, swarm_cpu0 = sample(target.pid), self_cpu()
    available: int | None = 0
    deadline = t_up + args.available_timeout
    t_all = None
    while time.monotonic() < deadline:
        available = await _count_available(http, names)
        if available is not None and available >= expected:
            t_all = time.monotonic()
            break
        await trio.sleep(args.poll)
    # Late retries of nodes that were already back would still count: let stragglers settle.
    await trio.sleep(min(2.0, args.heartbeat_interval))
    end, swarm_cpu = sample(target.pid), self_cpu() - swarm_cpu0
    requests = swarm.stats.config_requests - requests0
    st = swarm.stats
    if st.restart_seen_at is not None and st.last_reconfigured_at is not None:
        seen = st.restart_seen_at - trio0 - (t_up - t0)
        last = st.last_reconfigured_at - st.restart_seen_at
        figures.values.update(storm_seen_s=round(seen, 3), storm_last_config_s=round(last, 3))
        figures.note(
            "restart storm: timeline",
            f"new incarnation seen {seen:.2f} s after the server was up; last reconfigure "
            f"done {last:.2f} s after that (splay: uniform over {args.heartbeat_interval:g} s)",
        )
    label = f"restart storm: all {expected} available again"
    if t_all is None:
        figures.add(
            "storm_available_s",
            None,
            label,
            f"not within {args.available_timeout:.0f} s ({available} available)",
        )
    else:
        figures.add(
            "storm_available_s",
            round(t_all - t_up, 3),
            label,
            f"{t_all - t_up:.2f} s after the new server was up "
            f"({t_all - t0:.2f} s after the restart began; stop + start {t_up - t0:.2f} s)",
        )
    figures.values["storm_restart_s"] = round(t_up - t0, 3)
    per_node = requests / expected if expected else 0.0
    figures.add(
        "storm_config_requests_per_node",
        round(per_node, 3),
        "restart storm: config requests a node",
        f"{per_node:.2f} ({requests} requests, {swarm.stats.reconfigures} nodes reconfigured, "
        f"{sum(swarm.stats.errors.values()) - errors0} errors)",
    )
    if first and end:
        cpu = end.cpu - first.cpu  # the new process once it was up (its start-up excluded)
        figures.add(
            "storm_server_cpu_s",
            round(cpu, 2),
            "restart storm: new server's CPU from up to all available",
            f"{cpu:.2f} s ({1e3 * cpu / max(expected, 1):.2f} ms a node; start-up before it "
            f"{first.cpu:.2f} s), RSS {end.rss_kb / 1024:.0f} MB",
        )
        # Both sides share the machine's cores: say which one the figure waited for. The main
        # thread is the server's serial part (HTTP, broker, jobs on one event loop); libzmq's
        # CURVE work runs beside it.
        main = end.main_cpu - first.main_cpu
        window = end.wall - first.wall
        figures.values.update(
            storm_server_main_cpu_s=round(main, 2), storm_swarm_cpu_s=round(swarm_cpu, 2)
        )
        figures.note(
            "restart storm: CPU by side in that window",
            f"server main thread {main:.2f} s ({100 * main / window:.0f}% of a core, "
            f"{1e3 * main / max(expected, 1):.2f} ms a node), other server threads "
            f"{cpu - main:.2f} s; simulated agents {swarm_cpu:.2f} s "
            f"({100 * swarm_cpu / window:.0f}% of a core) in {window:.1f} s",
        )


def _limit(text: str) -> int | str:
    """A command-line limit as the API takes it: a count, or the "N%" string."""
    return int(text) if text.isdigit() else text


@dataclass
class FollowedJob:
    """What `follow_job` saw: times are seconds after the POST was sent (this clock),
    `stamps` the server's event timestamps (epoch seconds), first occurrence of each event."""

    job_id: str | None
    t_post: float
    error: str = ""
    arrivals: dict[str, float] = field(default_factory=dict)
    stamps: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    final_status: str | None = None


async def follow_job(http: SignedHttp, body: dict[str, Any], timeout: float) -> FollowedJob:
    """POST the job, then read its SSE feed until `job_complete` (or `timeout`)."""
    t0 = time.monotonic()
    response = await http.request("POST", "jobs", body=body)
    followed = FollowedJob(None, time.monotonic() - t0)
    if response.status_code != 201:
        followed.error = f"{response.status_code} {response.text[:200]}"
        return followed
    followed.job_id = job_id = response.json()["uri"].rsplit("/", 1)[1]
    arrivals, stamps, counts = followed.arrivals, followed.stamps, followed.counts
    with trio.move_on_after(timeout):
        async for name, data in http.feed(job_id):
            counts[name] = counts.get(name, 0) + 1
            if name not in arrivals:
                arrivals[name] = time.monotonic() - t0
                if "timestamp" in data:
                    stamps[name] = parse_sse_time(data["timestamp"])
            if name == "job_complete":
                followed.final_status = data.get("status")
                break
    return followed


async def final_job(http: SignedHttp, job_id: str, nodes: int) -> dict[str, Any]:
    """The job object once its status is final and all `nodes` rows are (10 s at most):
    node rows are written in batches."""
    job: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = (await http.request("GET", f"jobs/{job_id}")).json()
        total = sum(len(v) for v in job.get("nodes", {}).values())
        if job.get("status") in FINAL_JOB_STATUSES and total == nodes:
            break
        await trio.sleep(0.2)
    return job


async def run_job(
    http: SignedHttp,
    names: list[str],
    args: argparse.Namespace,
    figures: Figures,
    index: int,
    *,
    pid: int | None = None,
    max_concurrency: str | None = None,
    jobs: int = 1,
) -> None:
    """POST a job on every node, follow its SSE feed to the end, read the final job object."""
    tag = f"job {index + 1}" if jobs > 1 else "job"
    body: dict[str, Any] = {"command": "swarm-bench", "nodes": names, "run_timeout": 600}
    if args.capture:
        body["capture_output"] = True
    if max_concurrency is not None:
        body["max_concurrency"] = (
            int(max_concurrency) if max_concurrency.isdigit() else max_concurrency
        )
        tag += f" (max_concurrency {max_concurrency})"
    if args.max_errors is not None:
        body["max_errors"] = int(args.max_errors) if args.max_errors.isdigit() else args.max_errors
    cpu0 = sample(pid)
    followed = await follow_job(http, body, args.job_timeout)
    cpu1 = sample(pid)
    t_post, arrivals, stamps = followed.t_post, followed.arrivals, followed.stamps
    counts, final_status = followed.counts, followed.final_status
    if followed.job_id is None:
        figures.note(tag, f"POST failed: {followed.error}")
        return
    job = await final_job(http, followed.job_id, len(names))
    node_counts = {status: len(nodes) for status, nodes in sorted(job.get("nodes", {}).items())}

    def since_start(event: str) -> str:
        if event not in arrivals:
            return "never"
        server = ""
        if "start" in stamps and event in stamps:
            server = f" (server clock: {stamps[event] - stamps['start']:.2f} s after start)"
        return f"{arrivals[event]:.2f} s{server}"

    key = f"job{index + 1}"
    figures.add(f"{key}_post_s", round(t_post, 3), f"{tag}: POST → 201", f"{t_post:.2f} s")
    figures.add(
        f"{key}_quorum_s",
        round(arrivals["quorum_succeeded"], 3) if "quorum_succeeded" in arrivals else None,
        f"{tag}: POST → quorum_succeeded",
        since_start("quorum_succeeded"),
    )
    figures.add(
        f"{key}_complete_s",
        round(arrivals["job_complete"], 3) if "job_complete" in arrivals else None,
        f"{tag}: POST → {final_status or 'job_complete'}",
        since_start("job_complete"),
    )
    figures.add(f"{key}_status", job.get("status"), f"{tag}: final status", str(job.get("status")))
    figures.add(
        f"{key}_nodes",
        node_counts,
        f"{tag}: node counts",
        ", ".join(f"{k}={v}" for k, v in node_counts.items()) or "none",
    )
    if cpu0 and cpu1:
        cpu = cpu1.cpu - cpu0.cpu
        figures.add(
            f"{key}_server_cpu_s",
            round(cpu, 3),
            f"{tag}: server CPU, POST → job_complete",
            f"{cpu:.2f} s ({1e6 * cpu / len(names):.0f} µs a node)",
        )
    if args.settle > 0:  # let the server drop the finished job and trim its heap
        await trio.sleep(args.settle)
        cpu1 = sample(pid)
    if cpu1:
        figures.add(
            f"{key}_rss_mb",
            round(cpu1.rss_kb / 1024, 1),
            f"{tag}: server RSS after it" + (f" (+{args.settle:g} s)" if args.settle > 0 else ""),
            f"{cpu1.rss_kb / 1024:.0f} MB",
        )
    figures.values[f"{key}_events"] = counts
    figures.note(
        f"{tag}: feed events",
        ", ".join(f"{k}={v}" for k, v in counts.items()),
    )


async def run(
    args: argparse.Namespace, target: Target, figures: Figures, server: LocalServer | None = None
) -> None:
    names = node_names(args.prefix, args.nodes)
    admin_key = load_private_key(target.admin_key_pem)
    limits = httpx.Limits(max_connections=args.concurrency + 8)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        http = SignedHttp(client, target.http_url, target.org, target.admin_user, admin_key)
        swarm = Swarm(
            http,
            names,
            target.node_key_pem,
            v2_fraction=args.v2_fraction,
            run_time=args.run_time,
            output_chunks=args.output_chunks,
            chunk_bytes=args.chunk_bytes,
            concurrency=args.concurrency,
            follow_restarts=args.restart,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_sigterm, nursery.cancel_scope, figures)
                await _measure(args, target, figures, http, swarm, names, nursery)
                if args.restart and server is not None:
                    await _restart_storm(args, target, figures, http, swarm, server, set(names))
                nursery.cancel_scope.cancel()
        finally:
            swarm.close()


async def _cancel_on_sigterm(scope: trio.CancelScope, figures: Figures) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            print(f"{signal.Signals(signum).name} received: stopping", file=sys.stderr)
            figures.values["interrupted"] = signal.Signals(signum).name
            scope.cancel()
            return


async def _measure(
    args: argparse.Namespace,
    target: Target,
    figures: Figures,
    http: SignedHttp,
    swarm: Swarm,
    names: list[str],
    nursery: trio.Nursery,
) -> None:
    pid = target.pid
    n = len(names)
    name_set = set(names)
    v2 = sum(1 for node in swarm.nodes if node.version == "2.0")
    figures.values.update(nodes=n, v2_nodes=v2, heartbeat_interval=args.heartbeat_interval)
    s_start = sample(pid)
    swarm_cpu_start = self_cpu()
    t0 = time.monotonic()
    await swarm.connect_all(nursery, args.heartbeat_interval)
    if args.probe > 0:
        await swarm.connect_probe(probe_name(args.prefix), args.probe)
    t_config = time.monotonic() - t0
    figures.add(
        "config_s",
        round(t_config, 3),
        f"config fetch + connect ({n} signed GETs, {args.concurrency} at a time)",
        f"{t_config:.2f} s ({n / t_config:.0f} nodes/s), failures {swarm.stats.config_failures}",
    )
    # Nodes whose config fetch failed can never become available: wait for the others.
    expected = len(swarm.connected)
    t_avail, available = await wait_available(
        http, name_set, expected, args.available_timeout, args.poll
    )
    label = f"all {n} available in node_states"
    if expected < n:
        label = f"all {expected} connected nodes (of {n}) available"
    if t_avail is None:
        text = f"not within {args.available_timeout:.0f} s ({available} available)"
        figures.add("available_s", None, label, text)
    else:
        text = f"{t_avail - t0:.2f} s after the first config request"
        figures.add("available_s", round(t_avail - t0, 3), label, text)
    s_connected = sample(pid)
    figures.note("server CPU, connect phase", cpu_text(s_start, s_connected))
    if s_start and s_connected:
        figures.values["server_cpu_connect_s"] = round(s_connected.cpu - s_start.cpu, 2)
    swarm_connect = self_cpu() - swarm_cpu_start
    figures.values["swarm_cpu_connect_s"] = round(swarm_connect, 2)
    figures.note("swarm CPU, connect phase", f"{swarm_connect:.2f} s")
    stall_text(swarm, figures, "connect")

    # Steady state: only heartbeats (and our node_states polls at the end).
    sent0, swarm_cpu0 = swarm.stats.sent["heartbeat"], self_cpu()
    s0 = sample(pid)
    await trio.sleep(args.steady)
    s1 = sample(pid)
    sent = swarm.stats.sent["heartbeat"] - sent0
    wall = (s1.wall - s0.wall) if s0 and s1 else args.steady
    rate = sent / wall if wall else 0.0
    text = f"{rate:,.0f} heartbeats/s sent over {wall:.1f} s"
    if s0 and s1 and sent:
        cpu = s1.cpu - s0.cpu
        per = 1e6 * cpu / sent
        text += f"; server CPU {100 * cpu / wall:.0f}% of one core, {per:.0f} µs per heartbeat"
        figures.values["server_cpu_steady_pct"] = round(100 * cpu / wall, 1)
        figures.values["server_us_per_heartbeat"] = round(per, 1)
        figures.values["heartbeat_capacity_per_core"] = round(1e6 / per) if per else None
    figures.add("heartbeat_rate", round(rate, 1), "steady heartbeat load", text)
    if s_start and s1 and n:
        per_node = (s1.rss_kb - s_start.rss_kb) / n
        figures.values["server_rss_per_node_kb"] = round(per_node, 1)
        figures.add(
            "server_rss_connected_mb",
            round(s1.rss_kb / 1024, 1),
            "server RSS with every node connected",
            f"{s1.rss_kb / 1024:.0f} MB; {per_node:.1f} KB a node over the RSS before they came",
        )
    figures.values["swarm_cpu_steady_pct"] = round(100 * (self_cpu() - swarm_cpu0) / wall, 1)
    stall_text(swarm, figures, "steady")
    _, still = await wait_available(http, name_set, 0, 5, args.poll)
    figures.add(
        "available_after_steady", still, "available after the steady window", f"{still}/{n}"
    )

    s_jobs0 = sample(pid)
    plan = [args.max_concurrency] * args.jobs
    if args.compare_limit is not None:  # the same job without, then with the limit
        plan = [None, args.compare_limit] * args.jobs
    for index, limit in enumerate(plan):
        await run_job(
            http, names, args, figures, index, pid=pid, max_concurrency=limit, jobs=len(plan)
        )
    s_jobs1 = sample(pid)
    figures.note("server CPU, job phase", cpu_text(s_jobs0, s_jobs1))
    if s_jobs0 and s_jobs1:
        figures.values["server_cpu_jobs_s"] = round(s_jobs1.cpu - s_jobs0.cpu, 2)
    stall_text(swarm, figures, "job")

    s_end = sample(pid)
    if s_start and s_end:
        figures.add(
            "server_cpu_s",
            round(s_end.cpu - s_start.cpu, 2),
            "server CPU, whole run",
            cpu_text(s_start, s_end),
        )
        figures.add(
            "server_peak_rss_mb",
            round(s_end.hwm_kb / 1024, 1),
            "server peak RSS",
            f"{s_end.hwm_kb / 1024:.0f} MB (now {s_end.rss_kb / 1024:.0f} MB)",
        )
    figures.add(
        "swarm_cpu_s",
        round(self_cpu(), 2),
        "swarm process CPU (shares the 2 cores)",
        f"{self_cpu():.1f} s; steady phase {figures.values['swarm_cpu_steady_pct']:.0f}% of a core",
    )
    st = swarm.stats
    figures.values.update(
        sent=dict(st.sent),
        received=dict(st.received),
        errors=dict(st.errors),
        send_failures=st.send_failures,
        server_heartbeats=st.server_heartbeats,
    )
    figures.note(
        "messages sent / received",
        ", ".join(f"{k}={v}" for k, v in sorted(st.sent.items()))
        + " / "
        + ", ".join(f"{k}={v}" for k, v in sorted(st.received.items())),
    )
    problems = dict(st.errors)
    if st.send_failures:
        problems["send would block"] = st.send_failures
    figures.note(
        "swarm-side problems", ", ".join(f"{k} ×{v}" for k, v in problems.items()) or "none"
    )
    figures.note("server heartbeats received (SUB)", str(st.server_heartbeats))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--nodes", type=int, default=1000, help="simulated agents (default 1000)")
    add(
        "--heartbeat-interval",
        type=float,
        default=1.0,
        help="server heartbeat_interval and the agents' heartbeat period, s (default 1)",
    )
    add(
        "--v2-fraction",
        type=float,
        default=0.0,
        help="share of agents speaking protocol 2.0 (JSON), 0..1 (default 0)",
    )
    add("--concurrency", type=int, default=16, help="config fetches in flight (default 16)")
    add("--steady", type=float, default=10.0, help="steady heartbeat window, s (default 10)")
    add("--jobs", type=int, default=1, help="jobs to run one after another (default 1)")
    add("--max-concurrency", metavar="N|N%", help="the jobs' max_concurrency (default none)")
    add("--max-errors", metavar="N|N%", help="the jobs' max_errors (default none)")
    add(
        "--compare-limit",
        metavar="N|N%",
        help="run each job twice: without a limit, then with max_concurrency N (the refill cost)",
    )
    add(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait after each job before reading the server's RSS (default 0)",
    )
    add("--run-time", type=float, default=0.0, help="simulated command run time, s (default 0)")
    add("--capture", action="store_true", help="capture_output jobs (3.0 agents send output)")
    add("--output-chunks", type=int, default=2, help="output messages per node (default 2)")
    add("--chunk-bytes", type=int, default=512, help="bytes per output chunk (default 512)")
    add("--available-timeout", type=float, default=300.0, help="give up waiting after, s")
    add("--job-timeout", type=float, default=300.0, help="give up following a job after, s")
    add("--poll", type=float, default=0.25, help="node_states poll period, s")
    add(
        "--probe",
        type=float,
        default=0.2,
        help="latency probe period, s (node PREFIXprobe; 0 = no probe; default 0.2)",
    )
    add(
        "--restart",
        action="store_true",
        help="after the jobs, restart the server and time the fleet's reconnect storm",
    )
    add(
        "--idle-read-interval",
        type=float,
        metavar="S",
        help="the local server's zeromq.idle_read_interval, s (default: the server's, 0.05)",
    )
    add("--prefix", default="swarm-", help="node name prefix (names are PREFIX00000...)")
    add("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    add("--keep", action="store_true", help="keep the local server's temp dir (logs)")
    add(
        "--no-limit",
        action="store_true",
        help="skip the transport limit (bench/transport_limit.py) measured after the jobs",
    )
    attach = parser.add_argument_group(
        "attach to a running server (nodes PREFIX00000.. registered with --node-key's public key)"
    )
    attach.add_argument("--server-url", help="http(s)://host:port of the server")
    attach.add_argument("--org", help="organization")
    attach.add_argument("--user", help="admin user (may POST jobs)")
    attach.add_argument("--user-key", help="that user's private key (PEM)")
    attach.add_argument("--node-key", help="the nodes' shared private key (PEM)")
    attach.add_argument("--server-pid", type=int, help="server pid on this machine, for CPU/RSS")
    return parser


def add_limit_ratios(figures: Figures, nodes: int) -> None:
    """The transport limit for `nodes` (bench/transport_limit.py), measured now that the server
    and the swarm are stopped, and every job's wall and server CPU as ratios to it."""
    jobs = sorted(
        {key.split("_", 1)[0] for key in figures.values if re.fullmatch(r"job\d+_complete_s", key)},
        key=lambda job: int(job[3:]),
    )
    if not jobs:
        return
    limit = measure_limit(nodes)
    figures.values["limit_wall_s"] = round(limit.wall_s, 3)
    figures.values["limit_router_cpu_s"] = round(limit.router_cpu_s, 3)
    figures.note(
        "transport limit (raw pyzmq, same N)",
        f"wall {limit.wall_s:.3f} s, ROUTER CPU {limit.router_cpu_s:.3f} s",
    )
    for job in jobs:
        wall = figures.values.get(f"{job}_complete_s")
        cpu = figures.values.get(f"{job}_server_cpu_s")
        ratios = {  # None where a figure is missing or too small to divide by
            "wall": None if wall is None or not limit.wall_s else round(wall / limit.wall_s, 2),
            "cpu": None
            if cpu is None or not limit.router_cpu_s
            else round(cpu / limit.router_cpu_s, 2),
        }
        figures.values[f"{job}_limit_ratios"] = ratios
        figures.note(
            f"job {job[3:]}: wall / limit, server CPU / limit CPU",
            f"{ratios['wall']}×, {ratios['cpu']}×",
        )


def main() -> int:
    args = build_parser().parse_args()
    if not 0 <= args.v2_fraction <= 1:
        raise SystemExit("--v2-fraction must be between 0 and 1")
    needed = 3 * args.nodes + 512
    soft = raise_fd_limit(needed)
    if soft < needed:
        print(
            f"warning: open-file limit {soft} < {needed} needed for {args.nodes} nodes; "
            "raise the hard limit (ulimit -Hn / limits.conf) first",
            file=sys.stderr,
        )
    figures = Figures()
    server: LocalServer | None = None
    started = time.monotonic()
    try:
        if args.server_url and args.restart:
            raise SystemExit("--restart needs the local server (no --server-url)")
        if args.server_url:
            missing = [o for o in ("org", "user", "user_key", "node_key") if not getattr(args, o)]
            if missing:
                raise SystemExit(
                    f"--server-url needs --{', --'.join(m.replace('_', '-') for m in missing)}"
                )
            target = Target(
                args.server_url.rstrip("/"),
                args.org,
                args.user,
                Path(args.user_key).read_bytes(),
                Path(args.node_key).read_bytes(),
                args.server_pid,
            )
        else:
            extra: dict[str, dict[str, Any]] = {}
            if args.idle_read_interval is not None:
                extra["zeromq"] = {"idle_read_interval": args.idle_read_interval}
            server = LocalServer(
                args.heartbeat_interval, keep_dir=args.keep, fixed_ports=args.restart, extra=extra
            )
            t = time.monotonic()
            target = server.prepare([*node_names(args.prefix, args.nodes), probe_name(args.prefix)])
            figures.add(
                "import_s",
                round(time.monotonic() - t, 2),
                f"init + client import of {args.nodes} nodes",
                f"{time.monotonic() - t:.2f} s",
            )
            server.start(target)
        trio.run(run, args, target, figures, server)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # trio nurseries wrap a Ctrl-C in an exception group; anything else is a real error.
        if isinstance(exc, BaseExceptionGroup) and (
            exc.split(KeyboardInterrupt)[1] is not None or exc.subgroup(KeyboardInterrupt) is None
        ):
            raise
        figures.values["interrupted"] = "SIGINT"
        print("interrupted: stopping", file=sys.stderr)
    finally:
        if server is not None:
            if args.keep:
                print(f"server dir kept: {server.base}", file=sys.stderr)
            server.stop()
    if not args.no_limit and "interrupted" not in figures.values:
        add_limit_ratios(figures, args.nodes)
    title = (
        f"pushjobs swarm — {args.nodes} nodes ({figures.values.get('v2_nodes', 0)} on 2.0), "
        f"heartbeat interval {args.heartbeat_interval:g} s, CURVE on, {os.cpu_count()} CPUs, "
        f"{time.monotonic() - started:.0f} s total"
    )
    figures.print(title)
    if args.json:
        Path(args.json).write_text(json.dumps(figures.values, indent=2, default=str) + "\n")
    return {"SIGINT": 130, None: 0}.get(figures.values.get("interrupted"), 143)


if __name__ == "__main__":
    sys.exit(main())

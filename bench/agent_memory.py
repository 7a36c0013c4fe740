"""Idle memory of one real `pushjobs-agent` connected to a real (private) server.

Starts a `LocalServer` (bench/swarm_server.py) with one node, then one agent
(`python -m pushjobs.agent.main`, info logging to a file); waits until the agent has logged
`connected:` and then stayed idle for `--idle` seconds, and prints its VmRSS / VmHWM
(`/proc/<pid>/status`), PSS (`/proc/<pid>/smaps_rollup`), RSS split by mapping (the shared
libraries against the anonymous heap) and, from a second run under tracemalloc, the modules
the agent imported (count, largest packages) and its live Python allocations by package. For
comparison it also measures the floor: an interpreter that only imports the agent's libraries
and idles in trio.
Prints figures; asserts nothing. Every process is stopped by its pid; temp dirs are removed.

    python bench/agent_memory.py [--idle 5] [--no-imports] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarm_server import LocalServer

NODE = "memnode"
FLOOR_CODE = (
    "import sys, zmq, trio, msgpack, cryptography.hazmat.primitives.asymmetric.rsa\n"
    "ctx = zmq.Context(); s = ctx.socket(zmq.DEALER)\n"
    "print('ready', flush=True)\n"
    "trio.run(trio.sleep, 1e9)\n"
)
BARE_CODE = "import time; print('ready', flush=True); time.sleep(1e9)\n"
# Runs the agent as `python -m pushjobs.agent.main` would, plus a SIGUSR2 handler (the agent
# does not use that signal) that writes sys.modules and, under tracemalloc, the live Python
# allocations by file to $AGENT_MEMORY_DUMP. Bench-side only: the product has no such hook.
PROFILE_CODE = """
import os, runpy, signal, sys, tracemalloc
def dump(signum, frame):
    path = os.environ["AGENT_MEMORY_DUMP"]
    with open(path + ".part", "w") as out:
        for name in sorted(sys.modules):
            print("module", name, file=out)
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            print("traced", current, peak, file=out)
            for stat in tracemalloc.take_snapshot().statistics("filename"):
                print("file", stat.size, stat.count, stat.traceback[0].filename, file=out)
    os.rename(path + ".part", path)
signal.signal(signal.SIGUSR2, dump)
sys.argv[0] = "pushjobs-agent"
runpy.run_module("pushjobs.agent.main", run_name="__main__", alter_sys=True)
"""


NOTE = ("asyncio", "email", "http.client", "ssl", "json", "tomllib", "subprocess", "pathlib")


@dataclass
class Memory:
    rss_kb: int
    hwm_kb: int
    pss_kb: int
    threads: int
    by_mapping: list[tuple[str, int]]  # (mapping, RSS kB), largest first


def read_memory(pid: int) -> Memory:
    """VmRSS, VmHWM, threads from status; Pss from smaps_rollup; RSS per mapping from smaps."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()[0] if value.split() else ""
    pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    mappings: collections.Counter[str] = collections.Counter()
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            path = fields[5] if len(fields) > 5 else "[anon]"
            name = os.path.basename(path) if path.startswith("/") else path
            if name.startswith("libzmq") or name.startswith("_zmq") or name.startswith("libsodium"):
                name = "libzmq+pyzmq"
            elif name.startswith("_rust.abi3") or "libssl" in name or "libcrypto" in name:
                name = f"{name} (OpenSSL)"
            elif name.startswith("python3") or name.startswith("libpython"):
                name = "python"
        elif fields and fields[0] == "Rss:":
            mappings[name] += int(fields[1])
    return Memory(
        int(status["VmRSS"]),
        int(status["VmHWM"]),
        pss,
        int(status["Threads"]),
        mappings.most_common(),
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_for_line(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"no {text!r} in {path} within {timeout} s")


def run_agent(
    server: LocalServer, key_pem: bytes, url: str, idle: float, profile: bool
) -> tuple[Memory, str, str]:
    """(memory once idle, agent log, profile dump) of one agent run; the agent is stopped after.
    With `profile` the agent runs under tracemalloc (PROFILE_CODE) and the dump is filled."""
    work = Path(tempfile.mkdtemp(prefix="agent-", dir=server.base))
    key = work / "client.pem"
    key.write_bytes(key_pem)
    key.chmod(0o600)
    log_file = work / "agent.log"
    config = work / "agent.toml"
    config.write_text(
        f'server_url = "{url}/organizations/bench"\n'
        f'node_name = "{NODE}"\n'
        f'client_key = "{key}"\n'
        f'file_dir = "{work / "files"}"\n'
        f'lock_file = "{work / "chef-client.pid"}"\n'
        f'log_file = "{log_file}"\n'
        'log_level = "info"\n'
        '\n[whitelist]\n"true" = "true"\n'
    )
    dump = work / "dump.txt"
    env = dict(os.environ)
    if profile:
        cmd = [sys.executable, "-c", PROFILE_CODE, "-c", str(config)]
        env.update(PYTHONTRACEMALLOC="1", AGENT_MEMORY_DUMP=str(dump))
    else:
        cmd = [sys.executable, "-m", "pushjobs.agent.main", "-c", str(config)]
    with open(work / "stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=work, env=env)
    try:
        wait_for_line(log_file, "connected:", proc, 60)
        time.sleep(idle)
        memory = read_memory(proc.pid)
        if profile:
            os.kill(proc.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 60
            while not dump.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        log = log_file.read_text(errors="replace")
    finally:
        stop(proc)
    return memory, log, dump.read_text() if dump.exists() else ""


def run_floor(code: str) -> Memory:
    """Memory of `python -c code` once it printed `ready` (plus a second to settle)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(1.0)
        return read_memory(proc.pid)
    finally:
        stop(proc)


def package_of(filename: str) -> str:
    """`trio`, `pushjobs.agent`, `json` ... for a module's file (site-packages or stdlib)."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "python3.11"):
        if anchor in parts:
            rest = parts[parts.index(anchor) + 1 :]
            if rest and rest[0] != "site-packages":
                return rest[0].removesuffix(".py")
    if "agent" in parts or "protocol" in parts:
        return "pushjobs." + ("agent" if "agent" in parts else "protocol")
    return filename


def print_memory(title: str, memory: Memory, mappings: int = 0) -> None:
    print(
        f"{title}: VmRSS {memory.rss_kb / 1024:.1f} MiB, PSS {memory.pss_kb / 1024:.1f} MiB, "
        f"VmHWM {memory.hwm_kb / 1024:.1f} MiB, {memory.threads} threads"
    )
    for name, kb in memory.by_mapping[:mappings]:
        print(f"    {kb / 1024:6.1f} MiB  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle after connecting")
    parser.add_argument("--no-imports", action="store_true", help="skip the tracemalloc run")
    parser.add_argument("--top", type=int, default=12, help="rows in the package tables")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = parser.parse_args()
    figures: dict[str, float] = {}

    server = LocalServer(heartbeat_interval=2.0, keep_dir=args.keep, prefix="pushjobs-agentmem-")
    try:
        target = server.prepare([NODE])
        server.start(target)
        memory, log, _ = run_agent(server, target.node_key_pem, target.http_url, args.idle, False)
        if "WARNING" in log or "ERROR" in log:
            print("agent log has warnings/errors:\n" + log, file=sys.stderr)
        print_memory(f"agent, idle {args.idle:g} s after connecting", memory, mappings=8)
        floor = run_floor(FLOOR_CODE)
        print_memory("floor: python + zmq, trio, msgpack, cryptography", floor)
        bare = run_floor(BARE_CODE)
        print_memory("floor: bare python", bare)
        figures.update(
            agent_rss_mib=round(memory.rss_kb / 1024, 1),
            agent_pss_mib=round(memory.pss_kb / 1024, 1),
            floor_rss_mib=round(floor.rss_kb / 1024, 1),
            bare_rss_mib=round(bare.rss_kb / 1024, 1),
        )
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        if not args.no_imports:
            _, _, dump = run_agent(server, target.node_key_pem, target.http_url, args.idle, True)
            modules = [line.split()[1] for line in dump.splitlines() if line.startswith("module ")]
            packages = collections.Counter(name.split(".")[0] for name in modules)
            print(f"modules in sys.modules when idle (second run, tracemalloc): {len(modules)}")
            print("  largest packages by module count:")
            for name, count in packages.most_common(args.top):
                print(f"    {count:4d}  {name}")
            seen = set(modules)
            print("  of note: " + ", ".join(f"{m} {'yes' if m in seen else 'no'}" for m in NOTE))
            by_package: collections.Counter[str] = collections.Counter()
            for line in dump.splitlines():
                if line.startswith("traced "):
                    current = int(line.split()[1])
                    print(f"  Python allocations live when idle: {current / 1024 / 1024:.1f} MiB")
                elif line.startswith("file "):
                    _, size_text, _, filename = line.split(" ", 3)
                    by_package[package_of(filename)] += int(size_text)
            print("  largest by package (tracemalloc, where the allocating code lives):")
            for name, size in by_package.most_common(args.top):
                print(f"    {size / 1024:8.0f} KiB  {name}")
    finally:
        server.stop()  # removes the temp dir unless --keep
        if args.keep:
            print(f"kept {server.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a wake-up costs on this machine: the same small piece of Python work timed back to back,
and in bursts after the thread slept, as an idle server's reader does for each batch of
heartbeats.

The work is a stand-in for one inbound message (dict look-ups in a 5,000-entry table, a JSON
decode, a SHA-256): it does not change, so any difference is the machine's — caches and
branch predictors refilled, CPU frequency, on a VM the vCPU descheduled while it halted.
Per configuration it prints the thread CPU of the first call of a burst, the mean of the rest,
and (for single calls) the thread CPU of the sleep and wake itself.

    python bench/wakeup_cost.py [--json FILE]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

TABLE = {f"node{i}": i for i in range(5000)}
PAYLOAD = json.dumps(
    {"type": "heartbeat", "node": "n1", "org": "acme", "sequence": 5, "job_state": "idle"}
).encode()
# (calls per burst, sleep between bursts in s); 0 = back to back
SHAPES = ((1000, 0.0), (1, 0.0007), (4, 0.007), (27, 0.05), (200, 0.05))


def work(k: int) -> int:
    total = 0
    for j in range(20):
        total += TABLE.get(f"node{(k * 31 + j) % 5000}", 0)
    json.loads(PAYLOAD)
    hashlib.sha256(PAYLOAD).digest()
    return total


def timing_overhead_ns(samples: int = 20000) -> float:
    """Thread CPU of one timed iteration with no work (two clock reads and the bookkeeping)."""
    started = time.thread_time_ns()
    busy = 0
    for _ in range(samples):
        a = time.thread_time_ns()
        busy += time.thread_time_ns() - a
    return (time.thread_time_ns() - started - busy) / samples


def measure(burst: int, pause: float, overhead: float, calls: int = 3000) -> dict[str, Any]:
    bursts = max(calls // burst, 20)
    first = rest = outside = 0
    for b in range(bursts):
        started = time.thread_time_ns()
        busy = 0
        for i in range(burst):
            a = time.thread_time_ns()
            work(b * burst + i)
            spent = time.thread_time_ns() - a
            busy += spent
            if i == 0:
                first += spent
            else:
                rest += spent
        if pause:
            time.sleep(pause)
        outside += time.thread_time_ns() - started - busy - burst * overhead
    rest_calls = bursts * (burst - 1)
    return {
        "burst": burst,
        "pause_ms": pause * 1e3,
        "first_us": round(first / bursts / 1e3, 1),
        "rest_us": round(rest / rest_calls / 1e3, 1) if rest_calls else None,
        # Clean only with one call a burst (little bookkeeping beside the sleep).
        "wake_us": round(max(outside, 0) / bursts / 1e3, 1) if burst == 1 and pause else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = parser.parse_args()
    rows = []
    overhead = timing_overhead_ns()
    print(
        "thread CPU of the same work, µs: first call of a burst / the others / the sleep and wake"
    )
    for burst, pause in SHAPES:
        row = measure(burst, pause, overhead)
        rows.append(row)
        rest = "–" if row["rest_us"] is None else f"{row['rest_us']:.1f}"
        wake = "–" if row["wake_us"] is None else f"{row['wake_us']:.1f}"
        shape = "back to back" if not pause else f"{burst} calls, then sleep {pause * 1e3:g} ms"
        print(f"  {shape:32s} {row['first_us']:7.1f} / {rest:>6s} / {wake:>6s}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

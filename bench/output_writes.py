"""Bytes written to the store while one node streams captured output.

Replays one node streaming `--kib` KiB of stdout (the agent's 768 KiB head by default) in
`--chunk`-byte `output` chunks over `--seconds` seconds of simulated time, with the server's
output flush every 0.5 s, into a real `SqliteStore` in a temp dir, two ways:

- whole: every flush upserts the whole record (`save_outputs(record.to_record())`, the
  behaviour before output storage became append-only);
- append: every flush sends only what was added (`append_outputs(record.take_delta())`).

Prints, per way: flushes, output bytes passed to the store, bytes SQLite wrote to its files
(`wchar` of /proc/self/io, Linux) and the time spent in store calls. Asserts nothing about
the figures (it only checks that both ways store the same bytes).

    python bench/output_writes.py [--kib 768] [--seconds 12 60 300] [--chunk 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pushjobs.server.jobs.manager import OUTPUT_FLUSH_INTERVAL
from pushjobs.server.jobs.output import NodeOutput
from pushjobs.server.store.records import Job
from pushjobs.server.store.sqlite import SqliteStore

CAP = 1_048_576  # default `limits.max_output_bytes`; the agent's head is 3/4 of it


def _written_by_process() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _store(directory: str) -> tuple[SqliteStore, str]:
    store = SqliteStore(Path(directory) / "pushjobs.db")
    org = store.create_org("bench")
    job = Job(
        id="ab" * 16,
        org_id=org.id,
        org_name="bench",
        command="stream",
        status="running",
        quorum=1,
        run_timeout=3600,
        requestor_name="bench",
        requestor_type="user",
        created_at=time.time(),
        updated_at=time.time(),
        capture=True,
    )
    store.create_job(job, ["node1"])
    return store, job.id


def run(way: str, total: int, seconds: float, chunk: int) -> dict[str, float]:
    """Replay the stream one way; returns the figures."""
    flushes = max(1, round(seconds / OUTPUT_FLUSH_INTERVAL))
    per_flush = -(-total // flushes)
    with tempfile.TemporaryDirectory(prefix="pj-output-bench-") as directory:
        store, job_id = _store(directory)
        record = NodeOutput(job_id, "node1", CAP)
        payload = bytes(range(256)) * (chunk // 256 + 1)
        sent = passed = 0
        spent = 0.0
        io_before = _written_by_process()
        for index in range(flushes + 1):
            end = min(total, sent + per_flush)
            while sent < end:
                size = min(chunk, end - sent)
                record.add_chunk("stdout", sent, payload[:size])
                sent += size
            if index == flushes:
                record.set_v3_totals(total, 0)
                record.close()
            started = time.perf_counter()
            if way == "whole":
                whole = record.to_record()
                store.save_outputs([whole])
                passed += len(whole.stdout) + len(whole.stderr)
            else:
                delta, written = record.take_delta()
                store.append_outputs([delta])
                written()
                passed += len(delta.stdout) + len(delta.stderr)
            spent += time.perf_counter() - started
        io_after = _written_by_process()
        stored = store.get_output(job_id, "node1")
        if stored is None or stored.stdout != bytes(record.stdout.data):
            raise RuntimeError(f"{way}: the stored output differs from the record")
        store.close()
    return {
        "flushes": flushes + 1,
        "passed": passed,
        "written": -1 if io_before is None or io_after is None else io_after - io_before,
        "seconds": spent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kib", type=int, default=768, help="KiB streamed (default 768)")
    parser.add_argument(
        "--seconds", type=float, nargs="+", default=[12, 60, 300], help="stream durations"
    )
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per output chunk")
    args = parser.parse_args()
    total = args.kib * 1024
    mib = 1024 * 1024
    print(f"one node streaming {args.kib} KiB, flush every {OUTPUT_FLUSH_INTERVAL} s")
    header = ("duration", "way", "flushes", "to store", "SQLite wrote", "store time")
    print("{:>9} {:>7} {:>8} {:>12} {:>13} {:>11}".format(*header))
    for seconds in args.seconds:
        for way in ("whole", "append"):
            f = run(way, total, seconds, args.chunk)
            wrote = "n/a" if f["written"] < 0 else f"{f['written'] / mib:.2f} MiB"
            print(
                f"{seconds:>8g}s {way:>7} {f['flushes']:>8} {f['passed'] / mib:>8.2f} MiB "
                f"{wrote:>13} {f['seconds'] * 1000:>8.0f} ms"
            )


if __name__ == "__main__":
    main()

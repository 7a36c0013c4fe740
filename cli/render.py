"""Human output: the job object (cli.md §3.6), tables (§5, §6) and output headers. Pure."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pushjobs.cli.follow import ERROR_NODE_STATUSES, status_order_key
from pushjobs.cli.jobspec import resolve_errors
from pushjobs.protocol.vocabulary import JobStatus, NodeStatus

JOB_KEYS = ("id", "command", "status", "run_timeout", "created_at", "updated_at")
# Audit keys (present in every job of a current server) do not widen the key column, so the
# layout of §3.6 stays as it was: `requested_by:` is then followed by a single space.
AUDIT_KEYS = ("requested_by", "aborted_by")
OPTION_KEYS = ("user", "dir", "env", "capture_output", "file_specified", "file")
LIMIT_KEYS = ("max_concurrency", "max_errors")
ORDERED_KEYS = (*JOB_KEYS, *AUDIT_KEYS, *OPTION_KEYS, *LIMIT_KEYS)
COMMAND_WIDTH = 40
SKIPPED_SHOWN = 10  # node names listed in the `stopped` note; the `nodes` block has them all

# rich styles of node and job statuses (progress display, tables, on a colour terminal)
STATUS_STYLES: dict[str, str] = {
    NodeStatus.SUCCEEDED: "green",
    JobStatus.COMPLETE: "green",
    NodeStatus.FAILED: "red",
    NodeStatus.CRASHED: "red",
    NodeStatus.TIMED_OUT: "red",
    JobStatus.QUORUM_FAILED: "red",
    NodeStatus.ABORTED: "yellow",
    NodeStatus.SKIPPED: "yellow",
    JobStatus.STOPPED: "yellow",
    NodeStatus.NACKED: "magenta",
    NodeStatus.UNAVAILABLE: "magenta",
    NodeStatus.WAS_READY: "magenta",
    NodeStatus.RUNNING: "cyan",
    NodeStatus.READY: "blue",
    JobStatus.VOTING: "blue",
}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _block(label: str, mapping: dict[str, Any], width: int) -> list[str]:
    """`label:` then one `  key: value` line per value, continuation lines aligned."""
    lines = [f"{label}:" if mapping else f"{label + ':':<{width}}{{}}"]
    if not mapping:
        return lines
    keys = sorted(mapping)
    inner = max(len(k) for k in keys) + 2
    for key in keys:
        values = mapping[key]
        if not isinstance(values, list):
            values = [values]
        values = values or [""]
        head = f"  {key + ':':<{inner}}"
        lines.append(head + _scalar(values[0]))
        lines.extend(" " * len(head) + _scalar(v) for v in values[1:])
    return lines


def node_summary(nodes: Any) -> str:
    """`3 nodes: 2 succeeded, 1 failed` from a job object's `nodes`."""
    counts: Counter[str] = Counter()
    if isinstance(nodes, dict):
        for status, names in nodes.items():
            counts[status] += len(names) if isinstance(names, list) else 0
    total = sum(counts.values())
    noun = "node" if total == 1 else "nodes"
    parts = [
        f"{n} {s}" for s, n in sorted(counts.items(), key=lambda sn: status_order_key(sn[0])) if n
    ]
    return f"{total} {noun}: {', '.join(parts)}" if parts else f"{total} {noun}"


def format_job(job: dict[str, Any]) -> str:
    """The job object as aligned `key: value` lines, nodes grouped by status, and a summary line."""
    keys = [k for k in ORDERED_KEYS if k in job]
    keys += sorted(k for k in job if k not in ORDERED_KEYS and k != "nodes")
    width = max([len(k) + 2 for k in [*keys, "nodes"] if k not in AUDIT_KEYS] + [13])
    lines = []
    for key in keys:
        value = job[key]
        if isinstance(value, dict):
            lines.extend(_block(key, value, width))
        else:
            lines.append(f"{key + ':':<{width - 1}} {_scalar(value)}")
    nodes = job.get("nodes")
    if isinstance(nodes, dict):
        # node statuses alphabetically, as knife lists them
        lines.extend(_block("nodes", {k: v for k, v in nodes.items() if v}, width))
        lines.append(node_summary(nodes))
    return "\n".join(lines) + "\n"


def stopped_note(job: dict[str, Any]) -> str | None:
    """For a `stopped` job: why it stopped and which nodes were skipped (cli.md §3.6)."""
    if job.get("status") != JobStatus.STOPPED:
        return None
    nodes = job.get("nodes")
    lists = (
        {s: v for s, v in nodes.items() if isinstance(v, list)} if isinstance(nodes, dict) else {}
    )
    total = sum(len(v) for v in lists.values())
    errors = sum(len(v) for s, v in lists.items() if s in ERROR_NODE_STATUSES)
    skipped = sorted(lists.get(NodeStatus.SKIPPED, []))
    budget = resolve_errors(job.get("max_errors"), total)
    why = f"{errors} {'node' if errors == 1 else 'nodes'} failed"
    if budget is not None:
        why += f", {budget} allowed (max_errors {_scalar(job.get('max_errors'))})"
    if not skipped:
        return f"Stopped: {why}; no node was skipped."
    shown = ", ".join(skipped[:SKIPPED_SHOWN])
    if len(skipped) > SKIPPED_SHOWN:
        shown += f", … ({len(skipped) - SKIPPED_SHOWN} more)"
    noun = "node" if len(skipped) == 1 else "nodes"
    return f"Stopped: {why}; {len(skipped)} {noun} skipped: {shown}"


def cut(text: str, width: int = COMMAND_WIDTH) -> str:
    """`text` cut to `width` characters, ending in `…` when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def jobs_table(jobs: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of `job list`."""
    header = ["ID", "STATUS", "COMMAND", "CREATED", "RUN_TIMEOUT"]
    rows = []
    for job in jobs:
        if not isinstance(job, dict):
            continue
        rows.append(
            [
                _cell(job.get("id")),
                _cell(job.get("status")),
                cut(_cell(job.get("command")).replace("\n", " ")),
                _cell(job.get("created_at")),
                _cell(job.get("run_timeout")),
            ]
        )
    return header, rows


def job_nodes_table(nodes: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of `job status --nodes`."""
    header = [
        "NODE",
        "STATUS",
        "EXIT",
        "SIGNAL",
        "STARTED",
        "FINISHED",
        "STDOUT",
        "STDERR",
        "TRUNCATED",
    ]
    rows = []
    for n in nodes:
        if not isinstance(n, dict):
            continue
        truncated = n.get("truncated")
        rows.append(
            [
                _cell(n.get("node_name")),
                _cell(n.get("status")),
                _cell(n.get("exit_status")),
                _cell(n.get("signal")),
                _cell(n.get("started_at")),
                _cell(n.get("finished_at")),
                _cell(n.get("stdout_bytes")),
                _cell(n.get("stderr_bytes")),
                "yes" if truncated else ("no" if truncated is False else "-"),
            ]
        )
    return header, rows


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns separated by two spaces, left-aligned, no trailing spaces."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def rich_table(header: list[str], rows: list[list[str]]) -> Any:
    """The rich table of `print_table`: cells are `Text`, so `[...]` in data is never markup."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for name in header:
        table.add_column(Text(name), no_wrap=True, overflow="ignore")
    status = header.index("STATUS") if "STATUS" in header else -1
    for row in rows:
        table.add_row(
            *(
                Text(cell, style=STATUS_STYLES.get(cell, "") if i == status else "")
                for i, cell in enumerate(row)
            )
        )
    return table


def status_counts_text(counts: Sequence[tuple[str, int]]) -> Any:
    """`succeeded 2 · failed 1` as a rich `Text`, each status in its colour."""
    from rich.text import Text

    text = Text()
    for i, (status, n) in enumerate(counts):
        if i:
            text.append(" · ")
        text.append(f"{status} {n}", style=STATUS_STYLES.get(status, ""))
    return text


def output_header(
    node: str, channel: str, status: str | None = None, exit_status: Any = None
) -> str:
    """`==> web3 stdout (failed, exit 2) <==`; the parenthesis only when a status is given."""
    detail = ""
    if status:
        detail = f" ({status}" + (f", exit {exit_status}" if exit_status is not None else "") + ")"
    return f"==> {node} {channel}{detail} <=="

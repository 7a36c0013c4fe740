"""`job start`, `job watch`, `job list`, `job status`, `job abort` (cli.md §3–§6, §8)."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

from pushjobs.cli import exitcodes
from pushjobs.cli.app import App
from pushjobs.cli.client import HttpError, SignedClient, segment
from pushjobs.cli.display import Display, EventsDisplay, PlainDisplay, RichDisplay
from pushjobs.cli.errors import RequestError, UsageError
from pushjobs.cli.follow import JobProgress
from pushjobs.cli.interrupt import GatedDisplay, honour_sigint, run_in_worker
from pushjobs.cli.jobquery import list_query, more_hint
from pushjobs.cli.jobspec import (
    NO_NODES,
    build_job_body,
    parse_env,
    parse_limit,
    parse_quorum,
    read_job_file,
    read_nodes_file,
    selector_quorum,
    unique,
    where_selector,
)
from pushjobs.cli.render import (
    format_job,
    job_nodes_table,
    jobs_table,
    output_header,
    stopped_note,
)
from pushjobs.cli.search import search_nodes
from pushjobs.cli.stream import GatedSink, JsonSink, Sink, StreamThread, TextSink
from pushjobs.protocol.vocabulary import FINAL_JOB_STATUSES, NodeStatus, OutputChannel

FAILED_NODE_STATUSES = (
    NodeStatus.FAILED,
    NodeStatus.CRASHED,
    NodeStatus.TIMED_OUT,
    NodeStatus.ABORTED,
)
RAN_NODE_STATUSES = (NodeStatus.SUCCEEDED, *FAILED_NODE_STATUSES)
_FINISHED_409 = re.compile(r"with status '([^']*)'")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C once the job id is known: the job continues on the server.

    A KeyboardInterrupt, so that no `except Exception` on the way up can swallow it.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def job_id_from_uri(uri: str) -> str:
    """knife's rule: the job id is the last 32 characters of the `uri`."""
    return uri.rstrip("/")[-32:]


def _job_rel(job_id: str) -> str:
    return f"jobs/{segment(job_id)}"


def streaming(app: App) -> bool:
    return bool(getattr(app.args, "stream", False))


def make_display(app: App) -> Display:
    """The progress display for `--events`, `--json`, a terminal, or plain lines.

    With `--stream` stdout carries the output lines, so the plain lines go to stderr.
    """
    if app.args.events:
        return EventsDisplay(app.stdout)
    if app.json:
        return Display()
    if app.stderr_is_terminal():
        no_color = bool(app.args.no_color or app.environ.get("NO_COLOR"))
        return RichDisplay(no_color=no_color)
    return PlainDisplay(app.stderr if streaming(app) else app.stdout)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def make_sink(app: App, display: Display) -> Sink:
    """Where `--stream` prints: JSON lines, or prefixed lines (coloured on a terminal).

    When the rich progress bar and the lines share a terminal, the lines are printed through
    the bar's console, above the bar, as rich does for `print` during a live display.
    """
    if app.json:
        return JsonSink(app.stdout)
    app.stdout.flush()
    if isinstance(display, RichDisplay) and _isatty(app.stdout):
        return TextSink(app.stdout_bytes, display.console)
    if app.color:
        from rich.console import Console

        return TextSink(app.stdout_bytes, Console(file=app.stdout, highlight=False))
    return TextSink(app.stdout_bytes)


def check_stream_options(app: App) -> None:
    """`--stream` prints the output itself: these options would print it twice or not at all."""
    a = app.args
    if not streaming(app):
        return
    for option, given in (
        ("--nowait", getattr(a, "nowait", False)),
        ("--events", a.events),
        ("--show-output", a.show_output),
    ):
        if given:
            raise UsageError(f"--stream cannot be used with {option}")


# ---------------------------------------------------------------- job start


def collect_nodes(app: App) -> list[str]:
    """§3.2: positional nodes + --nodes-file, or a Chef Server search; duplicates removed."""
    a = app.args
    if a.search:
        if a.nodes or a.nodes_file:
            app.warn("--search given: node arguments and --nodes-file are ignored")
        names = search_nodes(app.client(), app.settings().chef_server_url, a.search)
    else:
        names = list(a.nodes)
        for path in a.nodes_file or []:
            names.extend(read_nodes_file(path, app.stdin))
    return unique(names)


def cmd_job_start(app: App) -> int:
    """`job start` (§3.4): validate, build the body, POST, then follow unless --nowait."""
    a = app.args
    if a.command is None:
        raise UsageError("No job specified.", usage=a.usage)
    if a.poll_interval <= 0:
        raise UsageError("--poll-interval must be a positive number of seconds")
    if a.timeout is not None and a.timeout < 0:
        raise UsageError("--timeout must be a whole number of seconds (0 or more)")
    check_stream_options(app)
    honour_sigint()
    # Check every local input before touching the network.
    parse_quorum(a.quorum, 0)
    max_concurrency = (
        None if a.max_concurrency is None else parse_limit(a.max_concurrency, "--max-concurrency")
    )
    max_errors = None if a.max_errors is None else parse_limit(a.max_errors, "--max-errors")
    env = parse_env(a.with_env) if a.with_env is not None else {}
    file = read_job_file(a.file) if a.file is not None else None
    selector = where_selector(a.where)
    nodes = collect_nodes(app)
    if not nodes and selector is None:
        raise UsageError(NO_NODES)
    body = build_job_body(
        command=a.command,
        nodes=nodes,
        quorum=parse_quorum(a.quorum, len(nodes))
        if selector is None
        else selector_quorum(a.quorum),
        capture=bool(a.capture or a.show_output or a.stream),
        env=env,
        run_timeout=a.timeout,
        file=file,
        user=a.as_user,
        dir=a.in_dir,
        max_concurrency=max_concurrency,
        max_errors=max_errors,
        selector=selector,
    )
    client = app.client()
    response, doc = client.post_json("jobs", body)
    job_id: str | None = None
    try:
        uri = doc.get("uri") if isinstance(doc, dict) else None
        if not isinstance(uri, str) or not uri:
            uri = response.headers.get("location", "")
        if not uri:
            raise RequestError("the server created the job but returned no uri")
        job_id = job_id_from_uri(uri)
        if a.events:
            if a.nowait:
                print_event(app, "created", {"id": job_id, "uri": uri})
                return exitcodes.OK
        elif not app.json or a.nowait:
            if app.json:
                app.print_json({"id": job_id, "uri": uri})
            elif a.stream:
                app.note(f"Started.  Job ID: {job_id}")  # stdout is for the output lines
            else:
                app.print(f"Started.  Job ID: {job_id}")
            if a.nowait:
                return exitcodes.OK
        if selector is not None:  # the server resolved the selector: its job has the nodes
            nodes = job_node_names(get_job(client, job_id))
        progress = JobProgress(job_id, nodes)
        progress.max_concurrency, progress.max_errors = max_concurrency, max_errors
        return follow_and_finish(app, client, progress)
    except KeyboardInterrupt as e:
        # From here on every Ctrl-C names the job (even one right after `Started.`).
        if job_id is None or isinstance(e, Interrupted):
            raise
        raise Interrupted(job_id) from None


# ---------------------------------------------------------------- following and final output


def follow_and_finish(app: App, client: SignedClient, progress: JobProgress) -> int:
    """§3.4 steps 6–7: follow, print the final job (and output), return the exit code."""
    from pushjobs.cli.watch import follow_job

    a = app.args
    inner = make_display(app)
    display = GatedDisplay(inner)
    sink = GatedSink(make_sink(app, inner)) if streaming(app) else None

    def work() -> tuple[dict[str, Any], dict[str, dict[str, Any]] | None, str | None]:
        streamer = None if sink is None else StreamThread(client, progress.job_id, sink).start()
        job = follow_job(client, progress, display, poll=a.poll, poll_interval=a.poll_interval)
        warning = None if streamer is None else streamer.wait()
        return job, fetch_outputs(client, job, a.show_output) if a.show_output else None, warning

    try:
        job, outputs, warning = run_in_worker(work)
    except KeyboardInterrupt:
        if sink is not None:
            sink.shut()
        display.shut(progress)
        raise Interrupted(progress.job_id) from None
    if warning:
        app.warn(warning)
    return report(app, job, outputs)


def stream_finished(app: App, client: SignedClient, job_id: str) -> None:
    """`job watch --stream` of a finished job: the stored output, replayed by the feed."""
    sink = GatedSink(make_sink(app, Display()))
    try:
        warning = run_in_worker(lambda: StreamThread(client, job_id, sink).start().wait())
    except KeyboardInterrupt:
        sink.shut()
        raise Interrupted(job_id) from None
    if warning:
        app.warn(warning)


def finish(app: App, client: SignedClient, job: dict[str, Any]) -> int:
    """Print a finished job (and its output) and return the exit code of §10."""
    a = app.args
    outputs = None
    if a.show_output:
        outputs = run_in_worker(lambda: fetch_outputs(client, job, a.show_output))
    return report(app, job, outputs)


def report(app: App, job: dict[str, Any], outputs: dict[str, dict[str, Any]] | None) -> int:
    """Print the final job (§3.6) and any output; return the exit code of §10."""
    if app.args.events:
        # JSON lines only: one line per output channel, then the job itself as the last line
        for node, parts in (outputs or {}).items():
            for channel, data in parts["channels"].items():
                if data is not None:
                    print_event(app, "output", {"node": node, "channel": channel, **_blob(data)})
        print_event(app, "job", job)
    elif app.json and streaming(app):
        # stdout carries JSON lines: the final job object is one more line
        app.print(json.dumps({"event": "job", **job}, ensure_ascii=False, separators=(",", ":")))
    elif app.json:
        if outputs is None:
            app.print_json(job)
        else:
            app.print_json(
                {
                    "job": job,
                    "output": {
                        node: {ch: _text(data) for ch, data in parts["channels"].items()}
                        for node, parts in outputs.items()
                    },
                }
            )
    else:
        app.print(format_job(job))
        note = stopped_note(job)
        if note:
            app.print(note)
        if outputs is not None:
            print_outputs(app, outputs)
    return exitcodes.job_exit_code(job, app.knife)


def print_event(app: App, name: str, data: Any) -> None:
    """One `--events` line of our own: `{"event": name, "data": data}`."""
    line = json.dumps({"event": name, "data": data}, ensure_ascii=False, separators=(",", ":"))
    app.print(line)


def _blob(data: bytes) -> dict[str, str]:
    """`{"text": ...}` for valid UTF-8, else `{"base64": ...}`."""
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def select_output_nodes(job: dict[str, Any], which: str) -> list[tuple[str, str]]:
    """(node, status) pairs for `--show-output failed|all`, sorted by node."""
    statuses = FAILED_NODE_STATUSES if which == "failed" else RAN_NODE_STATUSES
    nodes = job.get("nodes") if isinstance(job.get("nodes"), dict) else {}
    picked = [
        (name, status)
        for status, names in nodes.items()
        if status in statuses and isinstance(names, list)
        for name in names
    ]
    return sorted(picked)


def fetch_outputs(
    client: SignedClient, job: dict[str, Any], which: str
) -> dict[str, dict[str, Any]]:
    """Captured output of the selected nodes: {node: {status, exit, channels: {ch: bytes|None}}}."""
    job_id = str(job.get("id", ""))
    exits: dict[str, Any] = {}
    selected = select_output_nodes(job, which)
    if selected:
        try:
            rows = client.get_json(f"{_job_rel(job_id)}/nodes")
            exits = {r.get("node_name"): r.get("exit_status") for r in rows if isinstance(r, dict)}
        except (RequestError, AttributeError, TypeError):
            exits = {}  # older server without the per-node extension: no exit codes
    result: dict[str, dict[str, Any]] = {}
    for node, status in selected:
        channels: dict[str, bytes | None] = {}
        for channel in OutputChannel:
            try:
                channels[channel] = client.get_bytes(
                    f"{_job_rel(job_id)}/output/{segment(node)}/{channel}"
                )
            except HttpError as e:
                if e.status != 404:
                    raise
                channels[channel] = None
        result[node] = {"status": status, "exit": exits.get(node), "channels": channels}
    return result


def print_outputs(app: App, outputs: dict[str, dict[str, Any]]) -> None:
    """The `--show-output` sections (§3.6)."""
    out = app.stdout
    for node, parts in outputs.items():
        channels = parts["channels"]
        if all(v is None for v in channels.values()):
            app.print(output_header(node, OutputChannel.STDOUT, parts["status"], parts["exit"]))
            app.print("(no output captured)")
            continue
        for channel, data in channels.items():
            if channel == OutputChannel.STDOUT:
                app.print(output_header(node, channel, parts["status"], parts["exit"]))
            else:
                app.print(output_header(node, channel))
            if data is None:
                app.print("(no output captured)")
                continue
            out.flush()
            app.stdout_bytes.write(data)
            if data and not data.endswith(b"\n"):
                app.stdout_bytes.write(b"\n")
            app.stdout_bytes.flush()


# ---------------------------------------------------------------- job watch


def job_node_names(job: dict[str, Any]) -> list[str]:
    """Every node of a job object (`nodes` maps statuses to names), sorted."""
    groups = job.get("nodes")
    if not isinstance(groups, dict):
        return []
    return sorted({n for names in groups.values() if isinstance(names, list) for n in names})


def get_job(client: SignedClient, job_id: str, include_file: bool = False) -> dict[str, Any]:
    """`GET pushy/jobs/<id>` as a JSON object."""
    job = client.get_json(_job_rel(job_id), {"include_file": "true"} if include_file else None)
    if not isinstance(job, dict):
        raise RequestError(f"unexpected answer for job {job_id}: not a JSON object")
    return job


def cmd_job_watch(app: App) -> int:
    """`job watch` (§4): follow an existing job; a finished one is printed at once."""
    a = app.args
    if a.poll_interval <= 0:
        raise UsageError("--poll-interval must be a positive number of seconds")
    check_stream_options(app)
    honour_sigint()
    client = app.client()
    try:
        job = run_in_worker(lambda: get_job(client, a.job_id))
        if a.stream and not job.get("capture_output"):
            app.warn(f"job {a.job_id} does not capture output: --stream has nothing to show")
            a.stream = False
        if job.get("status") in FINAL_JOB_STATUSES:
            if a.stream:
                stream_finished(app, client, a.job_id)
            return finish(app, client, job)
        progress = JobProgress(str(job.get("id") or a.job_id))
        progress.apply_job(job)
        return follow_and_finish(app, client, progress)
    except KeyboardInterrupt as e:
        raise e if isinstance(e, Interrupted) else Interrupted(a.job_id) from None


# ---------------------------------------------------------------- job list / status / abort


def cmd_job_list(app: App) -> int:
    """`job list` (§5): filters, newest first, at most `--limit` (50) with a hint for more."""
    a = app.args
    if a.limit < 0:
        raise UsageError("--limit must be 0 (all jobs) or more")
    params = list_query(
        now=datetime.now(UTC),
        status=a.status,
        nodes=a.node,
        requested_by=a.requested_by,
        since=a.since,
        until=a.until,
        command=a.command,
        limit=a.limit,
        offset=a.offset,
    )
    response, jobs = app.client().get_json_response("jobs", params or None)
    if not isinstance(jobs, list):
        raise RequestError("unexpected answer for the job list: not a JSON array")
    if app.json:
        app.print_json(jobs)
    else:
        app.print_table(*jobs_table(jobs))
    hint = more_hint(response.headers.get("link"))
    if hint:
        app.note(hint)
    return exitcodes.OK


def cmd_job_status(app: App) -> int:
    """`job status` (§6): exit 0 whatever the job's outcome."""
    a = app.args
    client = app.client()
    job = get_job(client, a.job_id, a.include_file)
    nodes = None
    if a.nodes:
        nodes = client.get_json(f"{_job_rel(a.job_id)}/nodes")
        if not isinstance(nodes, list):
            raise RequestError("unexpected answer for the job's nodes: not a JSON array")
    if app.json:
        app.print_json(job if nodes is None else {"job": job, "nodes": nodes})
        return exitcodes.OK
    app.print(format_job(job))
    note = stopped_note(job)
    if note:
        app.print(note)
    if nodes is not None:
        app.print()
        app.print_table(*job_nodes_table(nodes))
    return exitcodes.OK


def cmd_job_abort(app: App) -> int:
    """`job abort` (§8)."""
    a = app.args
    client = app.client()
    try:
        _, job = client.post_json(f"{_job_rel(a.job_id)}/abort", None)
    except HttpError as e:
        if e.status == 409:
            m = _FINISHED_409.search(" ".join(e.texts))
            status = m.group(1) if m else _status_of(client, a.job_id)
            raise RequestError(
                f"job {a.job_id} has already finished with status {status}"
            ) from None
        raise
    if app.json:
        app.print_json(job)
    else:
        app.print(f"Aborted.  Job ID: {a.job_id}")
        if isinstance(job, dict):
            app.print(format_job(job))
    return exitcodes.OK


def _status_of(client: SignedClient, job_id: str) -> str:
    try:
        return str(get_job(client, job_id).get("status", "unknown"))
    except RequestError:
        return "unknown"

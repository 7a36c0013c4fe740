"""`job output` (cli.md §7): stored output of one or more nodes, or live output over SSE.

`--all --follow` reads the per-job output feed (one stream for every node, `cli/stream.py`);
`--all` alone prints the stored output of every node of the job.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from pushjobs.cli import exitcodes
from pushjobs.cli.app import App
from pushjobs.cli.client import HttpError, SignedClient, segment
from pushjobs.cli.errors import RequestError, UsageError
from pushjobs.cli.interrupt import run_in_worker
from pushjobs.cli.reopen import NotEventStream, StreamFailed, reopened_events
from pushjobs.cli.sse import SseEvent
from pushjobs.cli.stream import ChannelFilter, GatedSink, JsonSink, Sink, TextSink, stream_output
from pushjobs.protocol.vocabulary import OutputChannel

CHANNELS: dict[str, tuple[OutputChannel, ...]] = {
    "stdout": (OutputChannel.STDOUT,),
    "stderr": (OutputChannel.STDERR,),
    "both": tuple(OutputChannel),
}
CHANNEL_ERROR = "Invalid Format please enter stdout, stderr or both"
NO_OUTPUT = (
    "no output for {node}: the job did not capture output, the node did not run the command, "
    "or nothing has arrived yet"
)
NO_JOB_OUTPUT = "no output for job {job}: the job did not capture output, or no node has run yet"


def _is_job_missing(e: HttpError) -> bool:
    return e.status == 404 and any(t.startswith("job '") for t in e.texts)


def cmd_job_output(app: App) -> int:
    """`job output` (§7): stored bytes, or live streams with --follow."""
    a = app.args
    channels = CHANNELS.get(a.channel or ("both" if a.all else "stdout"))
    if channels is None:
        raise UsageError(CHANNEL_ERROR)
    if a.all and a.nodes:
        raise UsageError("--all cannot be used with node names")
    if not a.all and not a.nodes:
        raise UsageError("name at least one node, or use --all", usage=a.usage)
    nodes = list(dict.fromkeys(a.nodes))
    client = app.client()
    if a.all:
        if a.follow:
            return follow_job_output(app, client, a.job_id, channels)
        return print_all_outputs(app, client, a.job_id, channels)
    if a.follow:
        return follow_outputs(app, client, a.job_id, nodes, channels)
    single = len(nodes) == 1 and len(channels) == 1
    missing = False
    out = app.stdout_bytes
    for node in nodes:
        for channel in channels:
            rel = f"jobs/{segment(a.job_id)}/output/{segment(node)}/{channel}"
            try:
                data = client.get_bytes(rel)
            except HttpError as e:
                if e.status != 404 or _is_job_missing(e):
                    raise
                app.note(NO_OUTPUT.format(node=node))
                missing = True
                break  # the other channel has no record either
            if not single:
                out.write(f"==> {node} {channel} <==\n".encode())
            out.write(data)
            if not single and data and not data.endswith(b"\n"):
                out.write(b"\n")
            out.flush()
    return exitcodes.ERROR if missing else exitcodes.OK


def print_all_outputs(
    app: App, client: SignedClient, job_id: str, channels: tuple[str, ...]
) -> int:
    """`--all` without `--follow`: the stored output of every node of the job, by name."""
    job = client.get_json(f"jobs/{segment(job_id)}")
    nodes = job.get("nodes") if isinstance(job, dict) else None
    if not isinstance(nodes, dict):
        raise RequestError(f"unexpected answer for job {job_id}: no nodes")
    names = sorted({n for v in nodes.values() if isinstance(v, list) for n in v})
    out = app.stdout_bytes
    printed = False
    for node in names:
        for channel in channels:
            try:
                data = client.get_bytes(f"jobs/{segment(job_id)}/output/{segment(node)}/{channel}")
            except HttpError as e:
                if e.status != 404 or _is_job_missing(e):
                    raise
                break  # this node has no output record (it did not run)
            out.write(f"==> {node} {channel} <==\n".encode())
            out.write(data)
            if data and not data.endswith(b"\n"):
                out.write(b"\n")
            out.flush()
            printed = True
    if not printed:
        app.note(NO_JOB_OUTPUT.format(job=job_id))
        return exitcodes.ERROR
    return exitcodes.OK


def follow_job_output(
    app: App, client: SignedClient, job_id: str, channels: tuple[str, ...]
) -> int:
    """`--all --follow`: every node's lines from the per-job output feed until the job ends."""
    inner: Sink
    if app.json:
        inner = JsonSink(app.stdout)
    elif app.color:
        from rich.console import Console

        inner = TextSink(app.stdout_bytes, Console(file=app.stdout, highlight=False))
    else:
        inner = TextSink(app.stdout_bytes)
    sink = GatedSink(ChannelFilter(inner, channels))
    try:
        run_in_worker(lambda: stream_output(client, job_id, sink))
    except KeyboardInterrupt:
        sink.shut()
        raise
    except StreamFailed as e:
        raise RequestError(f"the output feed failed: {e.reason}") from None
    except NotEventStream as e:
        raise RequestError(
            f"the server has no output feed for job {job_id} (it answered {e.content_type!r})"
        ) from None
    return exitcodes.OK


class LineWriter:
    """Writes chunks of several streams to one output, each line prefixed, whole lines at a time."""

    def __init__(self, out: BinaryIO, prefix: bytes) -> None:
        self.out = out
        self.prefix = prefix
        self.partial = b""

    def write(self, data: bytes, lock: threading.Lock) -> None:
        buf = self.partial + data
        lines = buf.split(b"\n")
        self.partial = lines.pop()
        if lines:
            with lock:
                self.out.write(b"".join(self.prefix + line + b"\n" for line in lines))
                self.out.flush()

    def flush(self, lock: threading.Lock) -> None:
        if self.partial:
            with lock:
                self.out.write(self.prefix + self.partial + b"\n")
                self.out.flush()
            self.partial = b""


class RawWriter:
    """A single followed stream: bytes written unchanged."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, data: bytes, lock: threading.Lock) -> None:
        with lock:
            self.out.write(data)
            self.out.flush()

    def flush(self, lock: threading.Lock) -> None:
        pass


def chunk_bytes(ev: SseEvent) -> tuple[int | None, bytes]:
    """The (offset, bytes) of an `output` event (`http-api.md` §7.12); base64 chunks decoded."""
    data = ev.json()
    if not isinstance(data, dict):
        return None, b""
    text = data.get("data")
    if not isinstance(text, str):
        return None, b""
    if data.get("encoding") == "base64":
        try:
            raw = base64.b64decode(text)
        except ValueError:
            raw = b""
    else:
        raw = text.encode("utf-8")
    offset = data.get("offset")
    return (offset if isinstance(offset, int) else None), raw


def follow_channel(
    client: SignedClient,
    url: str,
    write: Callable[[bytes], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Stream one channel until `end`, reopening a dropped stream from the last offset."""
    position = 0  # bytes written so far, for skipping repeats after a reopen
    events = reopened_events(
        client,
        url,
        what="output stream",
        ended="the server ended the stream before its end event",
        resume_from=lambda ev: ev.event == "output" and ev.id is not None and ev.id.isdigit(),
        sleep=sleep,
    )
    try:
        for ev in events:
            if ev.event == "end":
                return
            if ev.event != "output":
                continue
            offset, data = chunk_bytes(ev)
            if offset is not None and offset < position:
                data = data[position - offset :]
            if data:
                write(data)
                position += len(data)
    except StreamFailed as e:
        raise RequestError(f"live output stream failed: {e.reason}") from None
    finally:
        events.close()


def follow_outputs(
    app: App, client: SignedClient, job_id: str, nodes: list[str], channels: tuple[str, ...]
) -> int:
    """Follow every (node, channel) concurrently: one stream raw, several line-prefixed."""
    lock = threading.Lock()
    out = app.stdout_bytes
    single = len(nodes) == 1 and len(channels) == 1
    results: dict[tuple[str, str], BaseException | None] = {}

    def run(node: str, channel: str) -> None:
        url = client.push_url(f"jobs/{segment(job_id)}/output/{segment(node)}/{channel}")
        if single:
            writer: LineWriter | RawWriter = RawWriter(out)
        else:
            label = node if channel == OutputChannel.STDOUT else f"{node} [stderr]"
            writer = LineWriter(out, f"{label}: ".encode())
        try:
            follow_channel(client, url, lambda data: writer.write(data, lock))
            results[(node, channel)] = None
        except BaseException as e:  # reported by the main thread
            results[(node, channel)] = e
        finally:
            writer.flush(lock)

    threads = [
        threading.Thread(target=run, args=(node, ch), daemon=True, name=f"output-{node}-{ch}")
        for node in nodes
        for ch in channels
    ]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # short joins keep Ctrl-C responsive
    status = exitcodes.OK
    reported: set[str] = set()
    for (node, _channel), err in sorted(results.items()):
        if err is None:
            continue
        if isinstance(err, HttpError) and err.status == 404 and not _is_job_missing(err):
            if node not in reported:
                app.note(NO_OUTPUT.format(node=node))
                reported.add(node)
            status = exitcodes.ERROR
        elif isinstance(err, RequestError):
            raise err
        else:
            raise RequestError(f"following output of {node} failed: {err}")
    return status

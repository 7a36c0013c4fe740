"""Progress displays while following a job (cli.md §3.5): rich bar, plain lines, JSON events."""

from __future__ import annotations

import json
from typing import Any, TextIO

from pushjobs.cli.follow import JobProgress
from pushjobs.cli.sse import SseEvent


class Display:
    """Silent display (`--json`); the base of the others."""

    def event(self, ev: SseEvent) -> None:
        """Called for every feed event, before the progress is updated."""

    def update(self, progress: JobProgress) -> None:
        """Called after every change of the progress."""

    def close(self, progress: JobProgress) -> None:
        """Called once when following ends (normally or not)."""


class PlainDisplay(Display):
    """Knife-style lines on stdout, each printed only when it differs from the previous one."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: str | None = None

    def update(self, progress: JobProgress) -> None:
        line = progress.plain_line()
        if line is not None and line != self.last:
            self.out.write(line + "\n")
            self.out.flush()
            self.last = line


class EventsDisplay(Display):
    """Every feed event as one JSON line: `{"event": ..., "id": ..., "data": {...}}`."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def event(self, ev: SseEvent) -> None:
        line = {"event": ev.event, "id": ev.id, "data": ev.json()}
        self.out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.out.flush()


class RichDisplay(Display):
    """A rich progress bar on stderr: phase, bar, done/total, per-status node counts."""

    def __init__(self, no_color: bool, file: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        if file is None:
            self.console = Console(stderr=True, no_color=no_color, highlight=False)
        else:
            self.console = Console(
                file=file, no_color=no_color, highlight=False, force_terminal=True, width=120
            )
        # markup=False: phase and status names come from the server, `[...]` stays literal
        self.progress = Progress(
            TextColumn("{task.fields[phase]:<13}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}", markup=False),
            console=self.console,
            transient=False,
        )
        self.task: Any = None

    def update(self, progress: JobProgress) -> None:
        fields = {"phase": progress.phase, "counts": progress.counts_label()}
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(
                "job", total=progress.total or None, completed=progress.completed(), **fields
            )
        else:
            self.progress.update(
                self.task, total=progress.total or None, completed=progress.completed(), **fields
            )

    def close(self, progress: JobProgress) -> None:
        if self.task is not None:
            self.update(progress)
            self.progress.stop()

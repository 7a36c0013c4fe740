"""Progress displays while following a job (cli.md §3.5): rich bar, plain lines, JSON events."""

from __future__ import annotations

import json
from typing import Any, TextIO

from pushjobs.cli.follow import JobProgress
from pushjobs.cli.render import STATUS_STYLES, status_counts_text
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


def field_column(name: str) -> Any:
    """A progress column showing the rich `Text` kept in a task field (styled, never markup)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class FieldColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            value = task.fields.get(name)
            return value if isinstance(value, Text) else Text(str(value or ""))

    return FieldColumn()


def progress_with_footer(*columns: Any, **options: Any) -> Any:
    """A rich `Progress` that draws the `footer` Text (the limits line) below its bar."""
    from rich.progress import Progress
    from rich.text import Text

    class FooterProgress(Progress):
        footer = Text()

        def get_renderables(self) -> Any:
            yield self.make_tasks_table(self.tasks)
            if self.footer:
                yield self.footer

    return FooterProgress(*columns, **options)


class RichDisplay(Display):
    """A rich progress bar on stderr: phase, bar, done/total, per-status node counts; below it
    the limit and the error budget when the job has them."""

    def __init__(self, no_color: bool, file: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn

        if file is None:
            self.console = Console(stderr=True, no_color=no_color, highlight=False)
        else:
            self.console = Console(
                file=file, no_color=no_color, highlight=False, force_terminal=True, width=120
            )
        # markup=False: phase and status names come from the server, `[...]` stays literal
        self.progress = progress_with_footer(
            field_column("phase"),
            BarColumn(),
            MofNCompleteColumn(),
            field_column("counts"),
            console=self.console,
            transient=False,
        )
        self.task: Any = None

    def update(self, progress: JobProgress) -> None:
        from rich.text import Text

        limits = progress.limits_label()
        self.progress.footer = Text(f"{'':<13} {limits}" if limits else "", style="bold")
        fields = {
            "phase": Text(f"{progress.phase:<13}", style=STATUS_STYLES.get(progress.phase, "")),
            "counts": status_counts_text(progress.counts()),
        }
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

"""What one retention pass does (docs/operations.md §2). Pure: no I/O, no clock.

A pass has up to two steps — delete old finished jobs (`[retention] jobs`), then delete the
captured output of old finished jobs (`[retention] output`) — each run in batches of `limit`
rows until a batch comes back short. `RetentionPass` hands out the next batch, takes what it
removed and, at the end, the log lines saying what went.
"""

from __future__ import annotations

from dataclasses import dataclass

from pushjobs.server.durations import format_duration

BATCH_LIMIT = 500  # rows per transaction: short enough never to hold the store for long
BATCH_PAUSE = 0.05  # seconds between batches, so other store calls get their turn
FIRST_DELAY = 60.0  # seconds after start of the first pass (at most the interval)

JOBS = "jobs"
OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The `[retention]` settings, in seconds; 0 keeps everything."""

    jobs: float
    output: float
    interval: float

    @property
    def enabled(self) -> bool:
        return self.jobs > 0 or self.output > 0

    @property
    def first_delay(self) -> float:
        return min(FIRST_DELAY, self.interval)


@dataclass(frozen=True, slots=True)
class Batch:
    """Delete up to `limit` of `kind` (JOBS or OUTPUT) of finished jobs created before `cutoff`
    (epoch seconds)."""

    kind: str
    cutoff: float
    limit: int


class RetentionPass:
    """One pass at wall-clock time `now`: its batches in order, and what they removed."""

    def __init__(self, policy: RetentionPolicy, now: float, limit: int = BATCH_LIMIT) -> None:
        self.policy = policy
        self.limit = limit
        self._steps = [
            (kind, age) for kind, age in ((JOBS, policy.jobs), (OUTPUT, policy.output)) if age > 0
        ]
        self._cutoffs = {kind: now - age for kind, age in self._steps}
        self.removed = {kind: 0 for kind, _ in self._steps}

    def next_batch(self) -> Batch | None:
        """The next batch to run, or None when the pass is done."""
        if not self._steps:
            return None
        kind, _ = self._steps[0]
        return Batch(kind, self._cutoffs[kind], self.limit)

    def batch_done(self, removed: int) -> None:
        """The current batch removed `removed` rows; a short batch ends its step."""
        kind, _ = self._steps[0]
        self.removed[kind] += removed
        if removed < self.limit:
            self._steps.pop(0)

    def abandon(self) -> None:
        """The store failed: stop this pass (the next one retries)."""
        self._steps.clear()

    def report(self) -> list[str]:
        """What the pass removed, one line per step that removed something."""
        lines = []
        jobs = self.removed.get(JOBS, 0)
        if jobs:
            lines.append(
                f"retention: removed {jobs:,} {'job' if jobs == 1 else 'jobs'} older than "
                f"{format_duration(self.policy.jobs)} (and their nodes, events, output)"
            )
        outputs = self.removed.get(OUTPUT, 0)
        if outputs:
            lines.append(
                f"retention: removed the output of {outputs:,} "
                f"{'job' if outputs == 1 else 'jobs'} older than "
                f"{format_duration(self.policy.output)}"
            )
        return lines

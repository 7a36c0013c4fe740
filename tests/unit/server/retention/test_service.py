"""The retention task around the pure pass: batches against a store, errors survived."""

from __future__ import annotations

import logging

import pytest

from pushjobs.server.retention.plan import RetentionPolicy
from pushjobs.server.retention.service import RetentionService
from pushjobs.server.store.interfaces import StoreUnavailableError

NOW = 1_700_000_000.0


class Rows:
    """An in-memory stand-in for the store's two batch methods."""

    def __init__(self, jobs: int, outputs: int, fail: bool = False) -> None:
        self.jobs = jobs
        self.outputs = outputs
        self.fail = fail
        self.calls: list[tuple[str, float, int]] = []

    async def prune_jobs_batch(self, older_than: float, limit: int) -> int:
        self.calls.append(("jobs", older_than, limit))
        if self.fail:
            raise StoreUnavailableError("PostgreSQL is unreachable")
        taken = min(limit, self.jobs)
        self.jobs -= taken
        return taken

    async def prune_outputs_batch(self, older_than: float, limit: int) -> int:
        self.calls.append(("output", older_than, limit))
        taken = min(limit, self.outputs)
        self.outputs -= taken
        return taken


async def test_a_pass_empties_both_kinds_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    rows = Rows(jobs=1200, outputs=3)
    service = RetentionService(
        RetentionPolicy(jobs=7200, output=60, interval=3600), rows, wall_clock=lambda: NOW
    )
    with caplog.at_level(logging.INFO, "pushjobs.server.retention"):
        await service.prune_once()
    assert (rows.jobs, rows.outputs) == (0, 0)
    assert rows.calls == [
        ("jobs", NOW - 7200, 500),
        ("jobs", NOW - 7200, 500),
        ("jobs", NOW - 7200, 500),
        ("output", NOW - 60, 500),
    ]
    assert caplog.messages == [
        "retention: removed 1,200 jobs older than 2h (and their nodes, events, output)",
        "retention: removed the output of 3 jobs older than 1m",
    ]


async def test_a_store_failure_ends_the_pass_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = Rows(jobs=10, outputs=10, fail=True)
    service = RetentionService(RetentionPolicy(jobs=60, output=60, interval=60), rows)
    with caplog.at_level(logging.WARNING, "pushjobs.server.retention"):
        await service.prune_once()
    assert [c[0] for c in rows.calls] == ["jobs"]
    assert "retried in the next pass: PostgreSQL is unreachable" in caplog.text


async def test_disabled_returns_at_once() -> None:
    rows = Rows(jobs=10, outputs=10)
    await RetentionService(RetentionPolicy(jobs=0, output=0, interval=60), rows).run()
    assert rows.calls == []

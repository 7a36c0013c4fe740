"""The pure retention pass: its steps, batches and report."""

from __future__ import annotations

from pushjobs.server.retention.plan import (
    FIRST_DELAY,
    JOBS,
    OUTPUT,
    Batch,
    RetentionPass,
    RetentionPolicy,
)

NOW = 1_700_000_000.0
DAY = 86400.0


def run(work: RetentionPass, removals: list[int]) -> list[Batch]:
    """Feed `removals` to the pass batch by batch; return the batches it asked for."""
    asked = []
    for removed in removals:
        batch = work.next_batch()
        assert batch is not None
        asked.append(batch)
        work.batch_done(removed)
    return asked


def test_jobs_then_output_in_batches_until_a_short_one() -> None:
    work = RetentionPass(RetentionPolicy(jobs=90 * DAY, output=30 * DAY, interval=3600), NOW, 10)
    asked = run(work, [10, 10, 3, 10, 0])
    assert asked == [
        Batch(JOBS, NOW - 90 * DAY, 10),
        Batch(JOBS, NOW - 90 * DAY, 10),
        Batch(JOBS, NOW - 90 * DAY, 10),
        Batch(OUTPUT, NOW - 30 * DAY, 10),
        Batch(OUTPUT, NOW - 30 * DAY, 10),
    ]
    assert work.next_batch() is None
    assert work.removed == {JOBS: 23, OUTPUT: 10}
    assert work.report() == [
        "retention: removed 23 jobs older than 90d (and their nodes, events, output)",
        "retention: removed the output of 10 jobs older than 30d",
    ]


def test_zero_keeps_that_kind() -> None:
    work = RetentionPass(RetentionPolicy(jobs=0, output=3600, interval=60), NOW, 500)
    assert run(work, [1]) == [Batch(OUTPUT, NOW - 3600, 500)]
    assert work.next_batch() is None
    assert work.report() == ["retention: removed the output of 1 job older than 1h"]


def test_disabled_policy_does_nothing() -> None:
    policy = RetentionPolicy(jobs=0, output=0, interval=3600)
    assert not policy.enabled
    work = RetentionPass(policy, NOW)
    assert work.next_batch() is None and work.report() == []


def test_big_counts_have_thousands_separators() -> None:
    work = RetentionPass(RetentionPolicy(jobs=90 * DAY, output=0, interval=3600), NOW, 1000)
    run(work, [1000, 234])
    assert work.report() == [
        "retention: removed 1,234 jobs older than 90d (and their nodes, events, output)"
    ]


def test_abandon_ends_the_pass() -> None:
    work = RetentionPass(RetentionPolicy(jobs=60, output=60, interval=60), NOW, 5)
    run(work, [5])
    work.abandon()
    assert work.next_batch() is None
    assert work.removed == {JOBS: 5, OUTPUT: 0}


def test_first_pass_soon_after_start() -> None:
    assert RetentionPolicy(jobs=60, output=0, interval=3600).first_delay == FIRST_DELAY
    assert RetentionPolicy(jobs=60, output=0, interval=1).first_delay == 1

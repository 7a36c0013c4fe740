"""JobState with `max_concurrency` / `max_errors` (lifecycle.md §12): refill order, per-node
timeouts, the error budget, abort during a batch, quorum 0 with a limit."""

from __future__ import annotations

import pytest

from pushjobs.server.jobs.state import JobState, NodeDeadline, RehabRequest, SendCommand
from pushjobs.server.jobs.validation import resolve_limit

from .test_state import T0, events, job_changes, rehabs, sends


def rollout(nodes, *, limit=None, errors=None, quorum=None, run_timeout=60, idle=None):
    """A job over `nodes` with every idle node committed: it is running (or ended)."""
    nodes = list(nodes)
    job = JobState(
        "j1",
        nodes,
        len(nodes) if quorum is None else quorum,
        run_timeout,
        {"command": "x"},
        max_concurrency=limit,
        max_errors=errors,
    )
    job.start(T0, set(nodes) if idle is None else set(idle))
    out = []
    for name in nodes:
        if idle is None or name in idle:
            out = job.message(name, "ack_commit", T0)
    return job, out


def runs(outputs):
    return [node for node, msg in sends(outputs) if msg == "run"]


def deadlines(outputs):
    return [(o.node, o.delay) for o in outputs if isinstance(o, NodeDeadline)]


def finish(job, node, how="succeeded", t=T0 + 1):
    job.message(node, "ack_run", t)
    return job.message(node, how, t, exit_status=0 if how == "succeeded" else 1)


def test_run_goes_to_the_first_limit_nodes_in_job_order() -> None:
    job, out = rollout(["n5", "n1", "n4", "n2", "n3"], limit=2)
    assert job.status == "running"
    assert runs(out) == ["n5", "n1"]
    assert deadlines(out) == [("n5", 60.0), ("n1", 60.0)]
    assert job.node_status("n4") == "ready"  # waiting, still committed on the agent


def test_each_final_node_refills_the_next_waiting_one() -> None:
    job, _ = rollout(["a", "b", "c", "d"], limit=2)
    job.message("a", "ack_run", T0)
    assert runs(job.message("b", "ack_run", T0)) == []  # running, not final: no refill
    assert runs(job.message("a", "succeeded", T0 + 1, exit_status=0)) == ["c"]
    assert runs(job.message("b", "failed", T0 + 1, exit_status=1)) == ["d"]
    finish(job, "c")
    out = finish(job, "d")
    assert job.status == "complete"  # no budget: failures do not stop the job
    assert job_changes(out) == ["complete"]


def test_never_more_than_the_limit_in_flight_counting_from_run() -> None:
    job, out = rollout([f"n{i}" for i in range(10)], limit=3)
    in_flight = set(runs(out))
    peak = len(in_flight)
    for i in range(10):
        name = f"n{i}"
        if name not in in_flight:
            continue
        job.message(name, "ack_run", T0)
        new = runs(job.message(name, "succeeded", T0, exit_status=0))
        in_flight.discard(name)
        in_flight.update(new)
        peak = max(peak, len(in_flight))
        for later in new:  # finish the newly started ones in turn
            assert later not in {f"n{j}" for j in range(i + 1)}
    while in_flight:
        name = sorted(in_flight)[0]
        job.message(name, "ack_run", T0)
        in_flight.discard(name)
        in_flight.update(runs(job.message(name, "succeeded", T0, exit_status=0)))
        peak = max(peak, len(in_flight))
    assert peak == 3
    assert job.status == "complete"
    assert job.counts["succeeded"] == 10


def test_a_waiting_node_that_goes_down_is_skipped_over_by_the_refill() -> None:
    job, _ = rollout(["a", "b", "c"], limit=1)
    out = job.node_down("b", T0)  # waiting node's agent went away
    assert job.node_status("b") == "crashed"
    assert runs(out) == []  # a is still in flight
    assert runs(finish(job, "a")) == ["c"]


def test_per_node_timeout_counts_from_that_nodes_run_and_the_job_goes_on() -> None:
    job, out = rollout(["a", "b"], limit=1, run_timeout=30)
    assert deadlines(out) == [("a", 30.0)]
    job.message("a", "ack_run", T0)
    out = job.node_run_timeout("a", T0 + 30)
    assert job.node_status("a") == "timed_out"
    assert rehabs(out) == [("a", True)]
    assert ("run_complete", "a", "timed_out") in events(out)
    assert runs(out) == ["b"] and deadlines(out) == [("b", 30.0)]
    assert job.status == "running"  # no job-wide timeout with a limit
    assert job.node_run_timeout("a", T0 + 31) == []  # a stale timer does nothing
    out = finish(job, "b", t=T0 + 40)
    assert job.status == "complete"


def test_a_node_deadline_after_the_node_finished_does_nothing() -> None:
    job, _ = rollout(["a", "b"], limit=1)
    finish(job, "a")
    assert job.node_run_timeout("a", T0 + 100) == []
    assert job.node_status("a") == "succeeded"


def test_without_a_limit_there_are_no_node_deadlines_and_the_job_timer_applies() -> None:
    job, out = rollout(["a", "b"])
    assert runs(out) == ["a", "b"] and deadlines(out) == []
    job.run_timer(T0 + 60)
    assert job.status == "timed_out"


def test_run_timeout_zero_with_a_limit_times_out_the_job_at_once() -> None:
    job, _ = rollout(["a", "b"], limit=1, run_timeout=0)
    assert job.status == "timed_out"
    assert job.node_status("a") == job.node_status("b") == "timed_out"


def test_budget_exceeded_skips_the_waiting_nodes_in_order_and_stops_the_job() -> None:
    job, _ = rollout(["a", "b", "c", "d", "e"], limit=2, errors=1)
    job.message("a", "ack_run", T0)
    job.message("b", "ack_run", T0)
    out = job.message("a", "failed", T0 + 1, exit_status=1)
    assert runs(out) == ["c"]  # one error is within the budget
    out = job.message("b", "failed", T0 + 2, exit_status=1)
    assert events(out) == [
        ("run_complete", "b", "failure"),
        ("budget_exhausted",),
        ("run_skipped", "d"),
        ("run_skipped", "e"),
    ]
    budget = next(o for o in out if getattr(o, "name", None) == "budget_exhausted")
    assert budget.data == {"errors": 2, "max_errors": 1}
    assert runs(out) == []
    assert rehabs(out) == [("d", True), ("e", True)]
    assert job.node_status("d") == job.node_status("e") == "skipped"
    assert job.status == "running"  # c was sent run before: it finishes normally
    out = finish(job, "c")
    assert job.node_status("c") == "succeeded"
    assert job.status == "stopped"
    assert events(out)[-1] == ("job_complete", "stopped")


def test_budget_exceeded_while_nodes_still_run_lets_them_finish() -> None:
    job, _ = rollout(["a", "b", "c", "d"], limit=3, errors=0)
    for name in "abc":
        job.message(name, "ack_run", T0)
    out = job.message("a", "nack_run", T0)  # nack counts: the node is `failed`
    assert job.node_status("a") == "failed"
    assert ("run_skipped", "d") in events(out)
    assert job.node_status("b") == "running" and job.node_status("c") == "running"
    job.message("b", "succeeded", T0 + 1, exit_status=0)
    assert job.status == "running"
    job.message("c", "failed", T0 + 1, exit_status=2)
    assert job.status == "stopped"
    assert job.counts["skipped"] == 1


def test_crashes_and_timeouts_count_as_errors() -> None:
    job, _ = rollout(["a", "b", "c", "d"], limit=2, errors=1, run_timeout=10)
    job.message("a", "ack_run", T0)
    job.node_down("a", T0)  # crashed
    job.message("b", "ack_run", T0)
    out = job.node_run_timeout("b", T0 + 10)  # timed_out: the second error
    assert ("budget_exhausted",) in events(out)
    # c was started when a crashed; d waits and is skipped
    assert job.node_status("d") == "skipped"
    assert job.node_status("c") == "ready"


def test_budget_without_a_limit_stops_the_job_but_skips_nobody() -> None:
    job, out = rollout(["a", "b", "c"], errors=0)
    assert runs(out) == ["a", "b", "c"]
    for name in "abc":
        job.message(name, "ack_run", T0)
    job.message("a", "failed", T0, exit_status=1)
    job.message("b", "succeeded", T0, exit_status=0)
    out = job.message("c", "succeeded", T0, exit_status=0)
    assert job.status == "stopped"
    assert job.counts["skipped"] == 0


def test_budget_not_exceeded_ends_complete() -> None:
    job, _ = rollout(["a", "b"], limit=1, errors=1)
    finish(job, "a", "failed")
    finish(job, "b", "failed")  # 2 > 1, but nothing was left to skip
    assert job.status == "stopped"
    job, _ = rollout(["a", "b"], limit=1, errors=2)
    finish(job, "a", "failed")
    finish(job, "b", "failed")
    assert job.status == "complete"


def test_abort_during_a_batch_aborts_waiting_and_running_nodes() -> None:
    job, _ = rollout(["a", "b", "c"], limit=1)
    job.message("a", "ack_run", T0)
    out = job.abort(T0 + 1, "alice")
    assert job.status == "aborted"
    assert {job.node_status(n) for n in "abc"} == {"aborted"}
    assert runs(out) == []
    assert events(out)[-1] == ("job_complete", "aborted")
    complete = next(o for o in out if getattr(o, "name", None) == "job_complete")
    assert complete.data == {"status": "aborted", "aborted_by": "alice"}
    assert sorted(rehabs(out)) == [("a", True), ("b", True), ("c", True)]


def test_quorum_zero_with_a_limit_and_no_ready_node_completes() -> None:
    job, out = rollout(["a", "b"], limit=1, quorum=0, idle=set())
    assert job.status == "complete"
    assert runs(out) == []


def test_quorum_zero_with_a_limit_runs_the_ready_ones_in_turn() -> None:
    job, out = rollout(["a", "b", "c"], limit=1, quorum=0, idle={"b", "c"})
    assert job.status == "running"
    assert runs(out) == ["b"]
    assert runs(finish(job, "b")) == ["c"]


def test_quorum_failed_with_a_limit_sends_no_run() -> None:
    job, out = rollout(["a", "b"], limit=1, quorum=2, idle={"a"})
    assert job.status == "quorum_failed"
    assert not any(isinstance(o, SendCommand) and o.msg_type == "run" for o in out)
    assert rehabs(out) == [("a", True)]
    assert not any(isinstance(o, RehabRequest) and o.node == "b" and o.silent for o in out)


@pytest.mark.parametrize(
    ("value", "count", "up", "expected"),
    [
        ("10%", 25, True, 3),  # 2.5 → 3
        ("10%", 25, False, 2),  # 2.5 → 2
        ("1%", 5, True, 1),  # never 0 for a concurrency
        ("0%", 5, False, 0),
        ("100%", 7, True, 7),
        ("33%", 3, False, 0),  # 0.99 → 0
        ("34%", 3, False, 1),
        (4, 10, True, 4),
    ],
)
def test_percentages_round_up_for_concurrency_and_down_for_errors(value, count, up, expected):
    assert resolve_limit(value, count, round_up=up) == expected


def test_refill_is_not_linear_in_the_node_count_per_completion() -> None:
    """5,000 nodes, limit 500: every completion refills with a bounded amount of work."""
    nodes = [f"n{i:05d}" for i in range(5000)]
    job, out = rollout(nodes, limit=500)
    started = runs(out)
    assert len(started) == 500
    total_runs = len(started)
    pending = list(started)
    while pending:
        name = pending.pop()
        job.message(name, "ack_run", T0)
        new = runs(job.message(name, "succeeded", T0, exit_status=0))
        assert len(new) <= 1
        total_runs += len(new)
        pending.extend(new)
    assert total_runs == 5000
    assert job.status == "complete"

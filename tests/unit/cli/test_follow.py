"""Node states derived from job-feed events, plain progress lines and displays (cli.md §3.5)."""

import io
import json
import re

import pytest

from pushjobs.cli.display import EventsDisplay, PlainDisplay, RichDisplay
from pushjobs.cli.follow import JobProgress
from pushjobs.cli.sse import SseEvent


def run_events(progress: JobProgress, events: list[tuple[str, dict]]) -> list[str]:
    out = io.StringIO()
    display = PlainDisplay(out)
    for name, data in events:
        progress.apply_event(name, data)
        display.update(progress)
    return out.getvalue().splitlines()


def test_success_stream() -> None:
    p = JobProgress("j", ["a", "b"])
    lines = run_events(
        p,
        [
            ("start", {"node_count": 2}),
            ("quorum_vote", {"node": "a", "status": "success"}),
            ("quorum_vote", {"node": "b", "status": "success"}),
            ("quorum_succeeded", {}),
            ("run_start", {"node": "a"}),
            ("run_start", {"node": "b"}),
            ("run_complete", {"node": "a", "status": "success"}),
            ("run_complete", {"node": "b", "status": "failure"}),
            ("job_complete", {"status": "complete"}),
        ],
    )
    assert lines == [
        "Voting.",
        "Running (2/2 in progress) ...",
        "Running (1/2 in progress) ...",
        "Running (0/2 in progress) ...",
        "Complete.",
    ]
    assert p.nodes == {"a": "succeeded", "b": "failed"}
    assert p.finished and p.completed() == 2


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("success", "ready"),
        ("failure", "nacked"),
        ("down", "unavailable"),
        ("voting_timeout", "unavailable"),
        ("lost_availibility", "unavailable"),
        ("client_died_while_voting", "unavailable"),
        ("unexpected_commit", "new"),  # no change
    ],
)
def test_vote_states(status: str, state: str) -> None:
    p = JobProgress("j", ["a"])
    p.apply_event("start", {})
    p.apply_event("quorum_vote", {"node": "a", "status": status})
    assert p.nodes["a"] == state


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("success", "succeeded"),
        ("failure", "failed"),
        ("run_nacked", "failed"),
        ("run_nacked_while_running", "failed"),
        ("crashed", "crashed"),
        ("client_died_while_running", "crashed"),
    ],
)
def test_run_complete_states(status: str, state: str) -> None:
    p = JobProgress("j", ["a"])
    p.apply_event("run_start", {"node": "a"})
    assert p.nodes["a"] == "running"
    p.apply_event("run_complete", {"node": "a", "status": status})
    assert p.nodes["a"] == state


def test_quorum_failed_stream() -> None:
    p = JobProgress("j", ["a", "b"])
    lines = run_events(
        p,
        [
            ("start", {"node_count": 2}),
            ("quorum_vote", {"node": "a", "status": "down"}),
            ("rehab", {"node": "a"}),
            ("quorum_vote", {"node": "b", "status": "success"}),
            ("job_complete", {"status": "quorum_failed"}),
        ],
    )
    assert lines == ["Voting.", "Quorum_failed."]
    assert p.nodes == {"a": "unavailable", "b": "was_ready"}


def test_timed_out_and_aborted_finish_in_flight_nodes() -> None:
    p = JobProgress("j", ["a", "b", "c"])
    for name, data in [
        ("start", {}),
        ("quorum_vote", {"node": "a", "status": "success"}),
        ("quorum_vote", {"node": "b", "status": "success"}),
        ("quorum_vote", {"node": "c", "status": "failure"}),
        ("quorum_succeeded", {}),
        ("run_start", {"node": "a"}),
        ("job_complete", {"status": "timed_out"}),
    ]:
        p.apply_event(name, data)
    assert p.nodes == {"a": "timed_out", "b": "timed_out", "c": "nacked"}
    assert p.plain_line() == "Timed_out."
    q = JobProgress("j", ["a", "b"])
    q.apply_event("start", {})
    q.apply_event("quorum_vote", {"node": "a", "status": "success"})
    q.apply_event("job_complete", {"status": "aborted"})
    assert q.nodes == {"a": "aborted", "b": "aborted"}
    assert q.plain_line() == "Aborted."


def test_crashed_line() -> None:
    p = JobProgress("j", ["a"])
    p.apply_event("job_complete", {"status": "crashed"})
    assert p.plain_line() == "Crashed."


def test_summary_event_replaces_state() -> None:
    p = JobProgress("j", ["a", "b"])
    p.apply_event(
        "summary",
        {"id": "j", "status": "complete", "nodes": {"succeeded": ["a"], "failed": ["b"]}},
    )
    assert p.finished and p.nodes == {"a": "succeeded", "b": "failed"}
    assert p.plain_line() == "Complete."


def test_polled_job_objects() -> None:
    p = JobProgress("j", ["a", "b", "c"])
    out = io.StringIO()
    d = PlainDisplay(out)
    for job in [
        {"status": "voting", "nodes": {"new": ["a", "b", "c"]}},
        {"status": "voting", "nodes": {"new": ["a"], "ready": ["b", "c"]}},
        {"status": "running", "nodes": {"running": ["a", "b"], "nacked": ["c"]}},
        {"status": "running", "nodes": {"running": ["a", "b"], "nacked": ["c"]}},
        {"status": "complete", "nodes": {"succeeded": ["a", "b"], "nacked": ["c"]}},
    ]:
        p.apply_job(job)
        d.update(p)
    assert out.getvalue().splitlines() == [
        "Voting.",
        "Running (2/3 in progress) ...",
        "Complete.",
    ]


def test_unknown_nodes_are_added_and_total_uses_node_count() -> None:
    p = JobProgress("j")
    p.apply_event("start", {"node_count": 3})
    assert p.total == 3
    p.apply_event("quorum_vote", {"node": "x", "status": "success"})
    assert p.nodes == {"x": "ready"}


def test_garbage_events_change_nothing() -> None:
    p = JobProgress("j", ["a"])
    p.apply_event("quorum_vote", "not an object")
    p.apply_event("run_complete", {"node": 5, "status": "success"})
    p.apply_event("something_new", {"node": "a"})
    assert p.nodes == {"a": "new"} and p.phase == "new"
    assert p.plain_line() is None


def test_counts_label_order() -> None:
    p = JobProgress("j", ["a", "b", "c", "d"])
    p.apply_job(
        {"status": "running", "nodes": {"running": ["a"], "succeeded": ["b", "c"], "failed": ["d"]}}
    )
    assert p.counts_label() == "succeeded 2 · failed 1 · running 1"
    assert p.completed() == 3 and p.in_progress() == 1


def test_events_display_json_lines() -> None:
    out = io.StringIO()
    d = EventsDisplay(out)
    d.event(SseEvent("start", '{"command":"x"}', "job-1"))
    d.event(SseEvent("job_complete", '{"status":"complete"}', "job-2"))
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines == [
        {"event": "start", "id": "job-1", "data": {"command": "x"}},
        {"event": "job_complete", "id": "job-2", "data": {"status": "complete"}},
    ]


def test_rich_display_shows_phase_counts_and_done_total() -> None:
    out = io.StringIO()
    d = RichDisplay(no_color=True, file=out)
    p = JobProgress("j", ["a", "b", "c"])
    p.apply_event("start", {})
    d.update(p)
    p.apply_job({"status": "running", "nodes": {"succeeded": ["a"], "running": ["b", "c"]}})
    d.update(p)
    p.apply_job({"status": "complete", "nodes": {"succeeded": ["a", "b"], "failed": ["c"]}})
    d.close(p)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    last = [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-1]
    assert last.startswith("complete")
    assert "3/3" in last and last.endswith("succeeded 2 · failed 1")


# ---------------------------------------------------------------- rollout limits (cli.md §3.5)


def rollout(progress: JobProgress, events: list[tuple[str, dict]]) -> list[str]:
    return run_events(progress, events)


def test_limit_and_budget_in_the_plain_lines() -> None:
    p = JobProgress("j", ["a", "b", "c", "d"])
    lines = rollout(
        p,
        [
            ("start", {"node_count": 4, "max_concurrency": 2, "max_errors": "25%"}),
            *[("quorum_vote", {"node": n, "status": "success"}) for n in "abcd"],
            ("quorum_succeeded", {}),
            ("run_start", {"node": "a"}),
            ("run_start", {"node": "b"}),
            ("run_complete", {"node": "a", "status": "failure"}),
            ("run_start", {"node": "c"}),
            ("run_complete", {"node": "c", "status": "timed_out"}),  # its own deadline
            ("budget_exhausted", {"errors": 2, "max_errors": 1}),
            ("run_skipped", {"node": "d"}),
            ("run_complete", {"node": "b", "status": "success"}),
            ("job_complete", {"status": "stopped"}),
        ],
    )
    assert lines == [
        "Voting.",
        "Running (4/4 in progress) ... running 0/4 (limit 2) · failed 0 of 1 allowed",
        "Running (4/4 in progress) ... running 1/4 (limit 2) · failed 0 of 1 allowed",
        "Running (4/4 in progress) ... running 2/4 (limit 2) · failed 0 of 1 allowed",
        "Running (3/4 in progress) ... running 1/4 (limit 2) · failed 1 of 1 allowed",
        "Running (3/4 in progress) ... running 2/4 (limit 2) · failed 1 of 1 allowed",
        "Running (2/4 in progress) ... running 1/4 (limit 2) · failed 2 of 1 allowed",
        "Running (2/4 in progress) ... running 1/4 (limit 2) · failed 2 of 1 allowed (stopping)",
        "Running (1/4 in progress) ... running 1/4 (limit 2) · failed 2 of 1 allowed (stopping)",
        "Running (0/4 in progress) ... running 0/4 (limit 2) · failed 2 of 1 allowed (stopping)",
        "Stopped.",
    ]
    assert p.nodes == {"a": "failed", "b": "succeeded", "c": "timed_out", "d": "skipped"}
    assert p.limit == 2 and p.budget == 1 and p.completed() == 4


def test_percent_limits_resolve_against_the_node_count() -> None:
    p = JobProgress("j")
    p.apply_event("start", {"node_count": 400, "max_concurrency": "10%", "max_errors": "1%"})
    p.apply_event("quorum_succeeded", {})
    assert (p.limit, p.budget) == (40, 4)
    assert p.limits_label() == "running 0/400 (limit 40) · failed 0 of 4 allowed"
    q = JobProgress("j")
    q.apply_event("start", {"node_count": 15, "max_concurrency": "10%", "max_errors": "10%"})
    assert (q.limit, q.budget) == (2, 1)  # 1.5 up, 1.5 down


def test_no_limits_no_label_and_one_limit_alone() -> None:
    p = JobProgress("j", ["a"])
    p.apply_event("start", {"node_count": 1})
    assert p.limits_label() == ""
    p.apply_event("quorum_succeeded", {})
    assert p.plain_line() == "Running (1/1 in progress) ..."
    p.apply_job({"status": "running", "max_errors": 0, "nodes": {"running": ["a"]}})
    assert p.limits_label() == "failed 0 of 0 allowed"
    p.max_errors, p.max_concurrency = None, 1
    assert p.limits_label() == "running 1/1 (limit 1)"


def test_polled_stopped_job_and_stopped_end_state() -> None:
    p = JobProgress("j", ["a", "b", "c"])
    p.apply_job(
        {
            "status": "running",
            "max_concurrency": 1,
            "nodes": {"running": ["a"], "ready": ["b", "c"]},
        }
    )
    assert p.limits_label() == "running 1/3 (limit 1)"
    # job_complete(stopped) without the run_skipped events: waiting nodes are skipped
    p.apply_event("run_complete", {"node": "a", "status": "failure"})
    p.apply_event("job_complete", {"status": "stopped"})
    assert p.nodes == {"a": "failed", "b": "skipped", "c": "skipped"}
    assert p.plain_line() == "Stopped."
    q = JobProgress("j", ["a"])
    q.apply_job({"status": "stopped", "max_errors": 0, "nodes": {"failed": ["a"]}})
    assert q.budget_exhausted and q.finished


def test_skipped_counts_in_display_order() -> None:
    p = JobProgress("j", ["a", "b", "c"])
    p.apply_job(
        {"status": "stopped", "nodes": {"skipped": ["a"], "failed": ["b"], "succeeded": ["c"]}}
    )
    assert p.counts_label() == "succeeded 1 · failed 1 · skipped 1"


def test_rich_display_shows_the_limits() -> None:
    out = io.StringIO()
    d = RichDisplay(no_color=True, file=out)
    p = JobProgress("j", ["a", "b", "c"])
    p.apply_event("start", {"node_count": 3, "max_concurrency": 1, "max_errors": 0})
    p.apply_job({"status": "running", "nodes": {"running": ["a"], "ready": ["b", "c"]}})
    d.update(p)
    d.close(p)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    *_, bar, footer = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    assert bar.rstrip().endswith("0/3 running 1 · ready 2")
    assert footer.rstrip() == " " * 14 + "running 1/3 (limit 1) · failed 0 of 0 allowed"


def test_rich_display_colours_statuses() -> None:
    out = io.StringIO()
    d = RichDisplay(no_color=False, file=out)
    p = JobProgress("j", ["a", "b"])
    p.apply_job({"status": "stopped", "nodes": {"succeeded": ["a"], "skipped": ["b"]}})
    d.update(p)
    d.close(p)
    raw = out.getvalue()
    assert "\x1b[32msucceeded 1" in raw  # green
    assert "\x1b[33mskipped 1" in raw  # yellow, as aborted
    assert "\x1b[33mstopped" in raw

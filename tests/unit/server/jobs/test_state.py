"""JobState: lifecycle.md §5.1/§5.2 tables, quorum edges, timers, abort, crash, §6.3 streams."""

from __future__ import annotations

import pytest

from pushjobs.server.jobs.state import (
    Event,
    JobChanged,
    JobState,
    NodeChanged,
    RehabRequest,
    SendCommand,
)

T0 = 1_700_000_000.0


def make_job(nodes=("A",), quorum=None, run_timeout=60):
    nodes = list(nodes)
    return JobState(
        "j1", nodes, len(nodes) if quorum is None else quorum, run_timeout, {"command": "x"}
    )


def started(nodes=("A",), quorum=None, run_timeout=60, idle=None):
    job = make_job(nodes, quorum, run_timeout)
    out = job.start(T0, set(nodes) if idle is None else set(idle))
    return job, out


def events(outputs):
    """Events as compact tuples: (name,) or (name, node) or (name, node, status)."""
    result = []
    for o in outputs:
        if isinstance(o, Event):
            parts = [o.name]
            if "node" in o.data:
                parts.append(o.data["node"])
            if "status" in o.data:
                parts.append(o.data["status"])
            result.append(tuple(parts))
    return result


def rehabs(outputs):
    return [(o.node, o.silent) for o in outputs if isinstance(o, RehabRequest)]


def sends(outputs):
    return [(o.node, o.msg_type) for o in outputs if isinstance(o, SendCommand)]


def job_changes(outputs):
    return [o.status for o in outputs if isinstance(o, JobChanged)]


def voting_with(statuses: dict[str, str]):
    """A voting job over nodes A (the subject) + K (keeps voting open), A set to a status."""
    job, _ = started(("A", "K"), quorum=1)
    a = statuses["A"]
    if a == "ready":
        job.message("A", "ack_commit", T0)
    elif a == "nacked":
        job.message("A", "nack_commit", T0)
    elif a == "unavailable":
        job.node_down("A", T0)
    assert job.node_status("A") == a
    assert job.status == "voting"
    return job


def running_with(a: str):
    """A running job over A (subject) + K (running, keeps the job open), A set to a status."""
    job, _ = started(("A", "K"), quorum=1)
    job.message("A", "ack_commit", T0)
    job.message("K", "ack_commit", T0)
    assert job.status == "running"
    job.message("K", "ack_run", T0)
    if a == "running":
        job.message("A", "ack_run", T0)
    elif a == "succeeded":
        job.message("A", "ack_run", T0)
        job.message("A", "succeeded", T0)
    elif a == "crashed":
        job.node_down("A", T0)
    assert job.node_status("A") == a
    assert job.status == "running"
    return job


# ---- start -------------------------------------------------------------------------


def test_start_emits_start_voting_and_commits():
    job, out = started(("A", "B"))
    assert events(out) == [("start",)]
    assert job_changes(out) == ["voting"]
    assert sends(out) == [("A", "commit"), ("B", "commit")]
    assert out[0] == Event("start", {"command": "x"})
    assert job.status == "voting"


def test_start_offline_node_is_down_and_no_commit():
    job, out = started(("A", "B"), idle={"A"})
    assert sends(out) == [("A", "commit")]
    assert events(out) == [("start",), ("quorum_vote", "B", "down"), ("rehab", "B")]
    assert rehabs(out) == [("B", False)]
    assert job.node_status("B") == "unavailable"
    assert job.status == "voting"


def test_start_replaced_node_is_down_without_commit_or_rehab_request():
    # B's node state ended (agent restarted) while the job was being stored: its new state is
    # idle but not part of the job, so it gets neither the commit nor an abort.
    job = make_job(("A", "B"), quorum=1)
    out = job.start(T0, {"A", "B"}, {"B"})
    assert sends(out) == [("A", "commit")]
    assert events(out) == [("start",), ("quorum_vote", "B", "down"), ("rehab", "B")]
    assert rehabs(out) == []
    assert job.node_status("B") == "unavailable"
    assert job.status == "voting"
    out = job.message("A", "ack_commit", T0 + 1)
    assert sends(out) == [("A", "run")]
    assert job.nodes_by_status() == {"ready": ["A"], "unavailable": ["B"]}


def test_start_replaced_only_node_fails_quorum_at_once():
    job = make_job(("A",))
    out = job.start(T0, {"A"}, {"A"})
    assert sends(out) == [] and rehabs(out) == []
    assert job.status == "quorum_failed"
    assert job.nodes_by_status() == {"unavailable": ["A"]}


def test_all_offline_start_quorum_failed_at_once():
    job, out = started(("A", "B"), idle=set())
    assert sends(out) == []
    assert events(out) == [
        ("start",),
        ("quorum_vote", "A", "down"),
        ("rehab", "A"),
        ("quorum_vote", "B", "down"),
        ("rehab", "B"),
        ("job_complete", "quorum_failed"),
    ]
    assert job.status == "quorum_failed"
    assert job_changes(out) == ["voting", "quorum_failed"]
    assert job.finished


def test_start_twice_is_ignored():
    job, _ = started()
    assert job.start(T0, {"A"}) == []


# ---- §5.1 voting table -------------------------------------------------------------

VOTING_ROWS = [
    # (node status, input, new node status, events, rehab requests)
    ("new", "ack_commit", "ready", [("quorum_vote", "A", "success")], []),
    ("ready", "ack_commit", "ready", [("quorum_vote", "A", "unexpected_commit")], []),
    (
        "nacked",
        "ack_commit",
        "nacked",
        [("rehab", "A"), ("quorum_vote", "A", "client_died_while_voting")],
        [("A", False)],
    ),
    (
        "unavailable",
        "ack_commit",
        "unavailable",
        [("rehab", "A"), ("quorum_vote", "A", "client_died_while_voting")],
        [("A", False)],
    ),
    ("new", "nack_commit", "nacked", [("quorum_vote", "A", "failure")], []),
    (
        "ready",
        "nack_commit",
        "unavailable",
        [("rehab", "A"), ("quorum_vote", "A", "lost_availibility")],
        [("A", False)],
    ),
    (
        "nacked",
        "nack_commit",
        "nacked",
        [("rehab", "A"), ("quorum_vote", "A", "client_died_while_voting")],
        [("A", False)],
    ),
    (
        "unavailable",
        "nack_commit",
        "unavailable",
        [("rehab", "A"), ("quorum_vote", "A", "client_died_while_voting")],
        [("A", False)],
    ),
    ("new", "aborted", "unavailable", [("rehab", "A")], [("A", False)]),
    ("ready", "aborted", "unavailable", [("rehab", "A")], [("A", False)]),
    ("nacked", "aborted", "nacked", [], []),
    ("unavailable", "aborted", "unavailable", [], []),
]
for _other in ("ack_run", "nack_run", "succeeded", "failed"):
    VOTING_ROWS += [
        ("new", _other, "unavailable", [("rehab", "A")], [("A", False)]),
        ("ready", _other, "unavailable", [("rehab", "A")], [("A", False)]),
        ("nacked", _other, "nacked", [("rehab", "A")], [("A", False)]),
        ("unavailable", _other, "unavailable", [("rehab", "A")], [("A", False)]),
    ]


@pytest.mark.parametrize(("before", "msg", "after", "evs", "rehab"), VOTING_ROWS)
def test_voting_table(before, msg, after, evs, rehab):
    job = voting_with({"A": before})
    out = job.message("A", msg, T0 + 1)
    assert job.node_status("A") == after
    assert events(out) == evs
    assert rehabs(out) == rehab
    assert job.status == "voting"
    assert sends(out) == []
    if after != before:
        assert NodeChanged("A") in out
        if after in ("unavailable", "nacked"):
            assert job.nodes["A"].finished_at == T0 + 1
    else:
        assert not any(isinstance(o, NodeChanged) for o in out)


@pytest.mark.parametrize("before", ["new", "ready"])
def test_voting_down_non_final(before):
    job = voting_with({"A": before})
    out = job.node_down("A", T0 + 1)
    assert job.node_status("A") == "unavailable"
    # down: the vote comes before the rehab event
    assert events(out) == [("quorum_vote", "A", "down"), ("rehab", "A")]
    assert rehabs(out) == [("A", False)]


@pytest.mark.parametrize("before", ["nacked", "unavailable"])
def test_voting_down_final_does_nothing(before):
    job = voting_with({"A": before})
    assert job.node_down("A", T0 + 1) == []
    assert job.node_status("A") == before


def test_voting_timer_new_nodes_silent_rehab():
    job, _ = started(("A", "B", "C"), quorum=1)
    job.message("A", "ack_commit", T0)
    job.message("C", "nack_commit", T0)
    out = job.voting_timeout(T0 + 60)
    assert events(out) == [
        ("quorum_vote", "B", "voting_timeout"),
        ("quorum_succeeded",),
    ]
    assert rehabs(out) == [("B", True)]
    assert job.node_status("B") == "unavailable"
    assert job.node_status("A") == "ready"
    assert job.node_status("C") == "nacked"
    assert sends(out) == [("A", "run")]
    assert job.status == "running"


def test_voting_timer_outside_voting_is_ignored():
    job, _ = started()
    job.message("A", "ack_commit", T0)
    assert job.status == "running"
    assert job.voting_timeout(T0 + 60) == []


def test_voting_waits_for_all_nodes_even_with_quorum():
    job, _ = started(("A", "B"), quorum=1)
    out = job.message("A", "ack_commit", T0)
    assert events(out) == [("quorum_vote", "A", "success")]
    assert job.status == "voting"
    out = job.message("B", "ack_commit", T0)
    assert events(out) == [("quorum_vote", "B", "success"), ("quorum_succeeded",)]
    assert sends(out) == [("A", "run"), ("B", "run")]
    assert job_changes(out) == ["running"]


def test_message_from_non_member_is_ignored():
    job, _ = started(("A",))
    assert job.message("Z", "ack_commit", T0) == []
    assert job.node_down("Z", T0) == []


# ---- quorum edges ------------------------------------------------------------------


def test_quorum_zero_no_ready_goes_running_then_complete():
    job, _ = started(("A",), quorum=0)
    out = job.message("A", "nack_commit", T0)
    assert events(out) == [
        ("quorum_vote", "A", "failure"),
        ("quorum_succeeded",),
        ("job_complete", "complete"),
    ]
    assert job_changes(out) == ["running", "complete"]
    assert sends(out) == []


def test_quorum_zero_all_offline_completes():
    job, out = started(("A",), quorum=0, idle=set())
    assert events(out)[-2:] == [("quorum_succeeded",), ("job_complete", "complete")]
    assert job.status == "complete"


def test_quorum_above_node_count_fails():
    job, _ = started(("A", "B"), quorum=3)
    job.message("A", "ack_commit", T0)
    out = job.message("B", "ack_commit", T0)
    assert events(out) == [("quorum_vote", "B", "success"), ("job_complete", "quorum_failed")]
    assert rehabs(out) == [("A", True), ("B", True)]
    assert job.node_status("A") == "was_ready"
    assert job.node_status("B") == "was_ready"
    assert job.status == "quorum_failed"


def test_quorum_exactly_met():
    job, _ = started(("A", "B", "C"), quorum=2)
    job.message("A", "ack_commit", T0)
    job.message("B", "nack_commit", T0)
    out = job.message("C", "ack_commit", T0)
    assert ("quorum_succeeded",) in events(out)
    assert sends(out) == [("A", "run"), ("C", "run")]


# ---- §5.2 running table ------------------------------------------------------------

RUNNING_ROWS = [
    # (node status, input, new node status, events, rehab requests)
    ("ready", "ack_run", "running", [("run_start", "A")], []),
    ("running", "ack_run", "running", [], []),
    (
        "succeeded",
        "ack_run",
        "succeeded",
        [("run_complete", "A", "client_died_while_running"), ("rehab", "A")],
        [("A", False)],
    ),
    (
        "crashed",
        "ack_run",
        "crashed",
        [("run_complete", "A", "client_died_while_running"), ("rehab", "A")],
        [("A", False)],
    ),
    (
        "ready",
        "nack_run",
        "failed",
        [("rehab", "A"), ("run_complete", "A", "run_nacked")],
        [("A", False)],
    ),
    (
        "running",
        "nack_run",
        "failed",
        [("rehab", "A"), ("run_complete", "A", "run_nacked_while_running")],
        [("A", False)],
    ),
    (
        "ready",
        "succeeded",
        "crashed",
        [("rehab", "A"), ("run_complete", "A", "crashed")],
        [("A", False)],
    ),
    ("running", "succeeded", "succeeded", [("run_complete", "A", "success")], []),
    (
        "ready",
        "failed",
        "crashed",
        [("rehab", "A"), ("run_complete", "A", "crashed")],
        [("A", False)],
    ),
    ("running", "failed", "failed", [("run_complete", "A", "failure")], []),
    (
        "ready",
        "aborted",
        "crashed",
        [("rehab", "A"), ("run_complete", "A", "crashed")],
        [("A", False)],
    ),
    (
        "running",
        "aborted",
        "crashed",
        [("rehab", "A"), ("run_complete", "A", "crashed")],
        [("A", False)],
    ),
    ("succeeded", "aborted", "succeeded", [], []),
    ("crashed", "aborted", "crashed", [], []),
]
for _msg in ("nack_run", "succeeded", "failed", "ack_commit", "nack_commit"):
    for _final in ("succeeded", "crashed"):
        RUNNING_ROWS.append(
            (
                _final,
                _msg,
                _final,
                [("rehab", "A"), ("run_complete", "A", "client_died_while_running")],
                [("A", False)],
            )
        )
for _msg in ("ack_commit", "nack_commit"):
    for _open in ("ready", "running"):
        RUNNING_ROWS.append(
            (
                _open,
                _msg,
                "crashed",
                [("rehab", "A"), ("run_complete", "A", "crashed")],
                [("A", False)],
            )
        )


@pytest.mark.parametrize(("before", "msg", "after", "evs", "rehab"), RUNNING_ROWS)
def test_running_table(before, msg, after, evs, rehab):
    job = running_with(before)
    out = job.message("A", msg, T0 + 5)
    assert job.node_status("A") == after
    assert events(out) == evs
    assert rehabs(out) == rehab
    assert job.status == "running"  # K keeps the job open
    if after != before:
        assert NodeChanged("A") in out


@pytest.mark.parametrize("before", ["ready", "running"])
def test_running_down_non_final(before):
    job = running_with(before)
    out = job.node_down("A", T0 + 5)
    assert job.node_status("A") == "crashed"
    assert events(out) == [("rehab", "A"), ("run_complete", "A", "crashed")]
    assert rehabs(out) == [("A", False)]
    assert job.nodes["A"].finished_at == T0 + 5


@pytest.mark.parametrize("before", ["succeeded", "crashed"])
def test_running_down_final_does_nothing(before):
    job = running_with(before)
    assert job.node_down("A", T0 + 5) == []


def test_ack_run_sets_started_at_and_results_set_exit_status():
    job = running_with("ready")
    job.message("A", "ack_run", T0 + 2)
    assert job.nodes["A"].started_at == T0 + 2
    job.message("A", "failed", T0 + 3, exit_status=None, signal="SIGKILL")
    node = job.nodes["A"]
    assert (node.status, node.exit_status, node.signal, node.finished_at) == (
        "failed",
        None,
        "SIGKILL",
        T0 + 3,
    )


def test_run_timer_times_out_ready_and_running_silently():
    job, _ = started(("A", "B", "C"))
    for n in "ABC":
        job.message(n, "ack_commit", T0)
    job.message("A", "ack_run", T0)
    job.message("B", "ack_run", T0)
    job.message("B", "succeeded", T0)
    out = job.run_timer(T0 + 60)
    assert events(out) == [("job_complete", "timed_out")]
    assert rehabs(out) == [("A", True), ("C", True)]
    assert job.node_status("A") == "timed_out"
    assert job.node_status("C") == "timed_out"
    assert job.node_status("B") == "succeeded"
    assert job.status == "timed_out"
    assert job.run_timer(T0 + 61) == []


def test_run_timeout_zero_times_out_right_after_quorum():
    job, _ = started(("A",), run_timeout=0)
    out = job.message("A", "ack_commit", T0)
    assert events(out) == [
        ("quorum_vote", "A", "success"),
        ("quorum_succeeded",),
        ("job_complete", "timed_out"),
    ]
    assert sends(out) == [("A", "run")]
    assert rehabs(out) == [("A", True)]
    assert job_changes(out) == ["running", "timed_out"]


def test_running_ends_complete_when_no_node_open():
    job, _ = started(("A", "B"))
    job.message("A", "ack_commit", T0)
    job.message("B", "ack_commit", T0)
    job.message("A", "ack_run", T0)
    job.message("B", "ack_run", T0)
    job.message("A", "succeeded", T0)
    out = job.message("B", "failed", T0 + 9)
    assert events(out) == [("run_complete", "B", "failure"), ("job_complete", "complete")]
    assert job_changes(out) == ["complete"]
    assert job.updated_at == T0 + 9
    assert job.nodes_by_status() == {"succeeded": ["A"], "failed": ["B"]}


# ---- abort / crash / finished ------------------------------------------------------


def test_abort_while_voting():
    job, _ = started(("A", "B", "C"))
    job.message("A", "ack_commit", T0)
    job.message("C", "nack_commit", T0)
    out = job.abort(T0 + 1)
    assert events(out) == [("job_complete", "aborted")]
    assert rehabs(out) == [("A", True), ("B", True)]
    assert job.nodes_by_status() == {"aborted": ["A", "B"], "nacked": ["C"]}
    assert job.status == "aborted"
    assert job_changes(out) == ["aborted"]
    assert job.nodes["A"].finished_at == T0 + 1


def test_abort_while_running():
    job, _ = started(("A", "B", "C"))
    for n in "ABC":
        job.message(n, "ack_commit", T0)
    job.message("A", "ack_run", T0)
    job.message("B", "ack_run", T0)
    job.message("B", "succeeded", T0)
    out = job.abort(T0 + 1)
    assert events(out) == [("job_complete", "aborted")]
    assert rehabs(out) == [("A", True), ("C", True)]
    assert job.nodes_by_status() == {"aborted": ["A", "C"], "succeeded": ["B"]}


def test_abort_before_start():
    job = make_job(("A",))
    out = job.abort(T0)
    assert events(out) == [("job_complete", "aborted")]
    assert job.node_status("A") == "aborted"


def test_abort_finished_job_does_nothing():
    job, _ = started(("A",), idle=set())
    assert job.finished
    assert job.abort(T0) == []


def test_crash_marks_open_nodes_and_rehabs_all():
    job, _ = started(("A", "B"), quorum=1)
    job.message("A", "ack_commit", T0)
    job.message("B", "nack_commit", T0)
    job.message("A", "ack_run", T0)
    out = job.crash(T0 + 3)
    assert events(out) == [("job_complete", "crashed")]
    assert rehabs(out) == [("A", True), ("B", True)]
    assert job.nodes_by_status() == {"crashed": ["A"], "nacked": ["B"]}
    assert job.status == "crashed"


def test_crash_without_rehab_for_shutdown():
    job, _ = started(("A",))
    out = job.crash(T0, rehab=False)
    assert rehabs(out) == []
    assert events(out) == [("job_complete", "crashed")]


def test_finished_job_ignores_every_input():
    job, _ = started(("A",), idle=set())
    assert job.message("A", "ack_commit", T0) == []
    assert job.message("A", "aborted", T0) == []
    assert job.node_down("A", T0) == []
    assert job.voting_timeout(T0) == []
    assert job.run_timer(T0) == []
    assert job.crash(T0) == []


# ---- §6.3 typical streams ----------------------------------------------------------


def full_stream(job, first, *steps):
    evs = events(first)
    for step in steps:
        evs += events(step(job))
    return evs


def test_stream_one_offline_node():
    _job, out = started(("A",), idle=set())
    assert events(out) == [
        ("start",),
        ("quorum_vote", "A", "down"),
        ("rehab", "A"),
        ("job_complete", "quorum_failed"),
    ]


def test_stream_success():
    job, out = started(("A", "B"))
    evs = full_stream(
        job,
        out,
        lambda j: j.message("A", "ack_commit", T0),
        lambda j: j.message("B", "ack_commit", T0),
        lambda j: j.message("A", "ack_run", T0),
        lambda j: j.message("B", "ack_run", T0),
        lambda j: j.message("A", "succeeded", T0),
        lambda j: j.message("B", "succeeded", T0),
    )
    assert evs == [
        ("start",),
        ("quorum_vote", "A", "success"),
        ("quorum_vote", "B", "success"),
        ("quorum_succeeded",),
        ("run_start", "A"),
        ("run_start", "B"),
        ("run_complete", "A", "success"),
        ("run_complete", "B", "success"),
        ("job_complete", "complete"),
    ]


def test_stream_command_fails():
    job, out = started(("A",))
    evs = full_stream(
        job,
        out,
        lambda j: j.message("A", "ack_commit", T0),
        lambda j: j.message("A", "ack_run", T0),
        lambda j: j.message("A", "failed", T0, exit_status=3),
    )
    assert evs[-2:] == [("run_complete", "A", "failure"), ("job_complete", "complete")]
    assert job.nodes["A"].exit_status == 3


def test_stream_node_refuses_commit():
    job, out = started(("A",))
    evs = full_stream(job, out, lambda j: j.message("A", "nack_commit", T0))
    assert evs == [("start",), ("quorum_vote", "A", "failure"), ("job_complete", "quorum_failed")]


def test_stream_node_never_answers_commit():
    job, out = started(("A",))
    evs = full_stream(job, out, lambda j: j.voting_timeout(T0 + 60))
    assert evs == [
        ("start",),
        ("quorum_vote", "A", "voting_timeout"),
        ("job_complete", "quorum_failed"),
    ]


def test_stream_node_refuses_run():
    job, out = started(("A",))
    evs = full_stream(
        job,
        out,
        lambda j: j.message("A", "ack_commit", T0),
        lambda j: j.message("A", "nack_run", T0),
    )
    assert evs == [
        ("start",),
        ("quorum_vote", "A", "success"),
        ("quorum_succeeded",),
        ("rehab", "A"),
        ("run_complete", "A", "run_nacked"),
        ("job_complete", "complete"),
    ]


def test_stream_node_never_acknowledges_run():
    job, out = started(("A",))
    evs = full_stream(
        job, out, lambda j: j.message("A", "ack_commit", T0), lambda j: j.run_timer(T0 + 60)
    )
    assert evs == [
        ("start",),
        ("quorum_vote", "A", "success"),
        ("quorum_succeeded",),
        ("job_complete", "timed_out"),
    ]


def test_stream_ack_run_then_nack_run():
    job, out = started(("A",))
    evs = full_stream(
        job,
        out,
        lambda j: j.message("A", "ack_commit", T0),
        lambda j: j.message("A", "ack_run", T0),
        lambda j: j.message("A", "nack_run", T0),
    )
    assert evs[2:] == [
        ("quorum_succeeded",),
        ("run_start", "A"),
        ("rehab", "A"),
        ("run_complete", "A", "run_nacked_while_running"),
        ("job_complete", "complete"),
    ]


def test_stream_two_nodes_quorum_two_a_nacks_run_while_voting():
    job, out = started(("A", "B"), quorum=2)
    evs = full_stream(
        job,
        out,
        lambda j: j.message("A", "ack_commit", T0),
        lambda j: j.message("A", "nack_run", T0),
        lambda j: j.message("B", "ack_commit", T0),
    )
    assert evs == [
        ("start",),
        ("quorum_vote", "A", "success"),
        ("rehab", "A"),
        ("quorum_vote", "B", "success"),
        ("job_complete", "quorum_failed"),
    ]
    assert job.nodes_by_status() == {"unavailable": ["A"], "was_ready": ["B"]}


def test_stream_two_nodes_quorum_one_a_nacks():
    job, out = started(("A", "B"), quorum=1)
    evs = full_stream(
        job,
        out,
        lambda j: j.message("A", "nack_commit", T0),
        lambda j: j.message("B", "ack_commit", T0),
        lambda j: j.message("B", "ack_run", T0),
        lambda j: j.message("B", "succeeded", T0),
    )
    assert evs == [
        ("start",),
        ("quorum_vote", "A", "failure"),
        ("quorum_vote", "B", "success"),
        ("quorum_succeeded",),
        ("run_start", "B"),
        ("run_complete", "B", "success"),
        ("job_complete", "complete"),
    ]


def test_stream_aborted_while_running():
    job, out = started(("A", "B"))
    evs = full_stream(
        job,
        out,
        lambda j: j.message("A", "ack_commit", T0),
        lambda j: j.message("B", "ack_commit", T0),
        lambda j: j.message("A", "ack_run", T0),
        lambda j: j.message("B", "ack_run", T0),
        lambda j: j.abort(T0),
    )
    assert evs[-3:] == [("run_start", "A"), ("run_start", "B"), ("job_complete", "aborted")]


def test_many_nodes_counts_stay_consistent():
    names = [f"n{i:04d}" for i in range(2000)]
    job, _ = started(names, quorum=1500)
    for i, n in enumerate(names):
        job.message(n, "ack_commit" if i % 4 else "nack_commit", T0)
    assert job.status == "running"
    for n in names:
        job.message(n, "ack_run", T0)
        job.message(n, "succeeded", T0)
    assert job.status == "complete"
    by = job.nodes_by_status()
    assert len(by["succeeded"]) == 1500 and len(by["nacked"]) == 500

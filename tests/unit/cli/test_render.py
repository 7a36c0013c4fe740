"""Human rendering of jobs and tables, and exit codes (cli.md §3.6, §5, §6, §10)."""

import pytest

from pushjobs.cli.exitcodes import error_exit_code, job_exit_code
from pushjobs.cli.render import (
    cut,
    format_job,
    format_table,
    job_nodes_table,
    jobs_table,
    node_summary,
    output_header,
    rich_table,
    stopped_note,
)

JOB = {
    "id": "a2b87f87052d213c0703eadb21bdf20e",
    "command": "chef-client",
    "status": "complete",
    "run_timeout": 3600,
    "created_at": "Tue, 04 Sep 2012 23:01:02 GMT",
    "updated_at": "Tue, 04 Sep 2012 23:17:56 GMT",
    "nodes": {"succeeded": ["web1", "web2"], "failed": ["web3"]},
}


def test_spec_example() -> None:
    assert format_job(JOB) == (
        "id:          a2b87f87052d213c0703eadb21bdf20e\n"
        "command:     chef-client\n"
        "status:      complete\n"
        "run_timeout: 3600\n"
        "created_at:  Tue, 04 Sep 2012 23:01:02 GMT\n"
        "updated_at:  Tue, 04 Sep 2012 23:17:56 GMT\n"
        "nodes:\n"
        "  failed:    web3\n"
        "  succeeded: web1\n"
        "             web2\n"
        "3 nodes: 2 succeeded, 1 failed\n"
    )


def test_option_keys_shown_when_present() -> None:
    job = dict(
        JOB,
        user="rebecca",
        dir="/home/rebecca",
        env={"FOO": "bears"},
        capture_output=True,
        file_specified=True,
        nodes={"succeeded": ["n1"]},
    )
    text = format_job(job)
    lines = text.splitlines()
    assert lines[0] == "id:             a2b87f87052d213c0703eadb21bdf20e"
    assert "user:           rebecca" in lines
    assert "dir:            /home/rebecca" in lines
    assert "env:" in lines and "  FOO: bears" in lines
    assert "capture_output: true" in lines
    assert "file_specified: true" in lines
    assert lines[-1] == "1 node: 1 succeeded"
    assert lines.index("user:           rebecca") < lines.index("nodes:")


def test_empty_values() -> None:
    text = format_job(dict(JOB, user="", env={}))
    assert 'user:        ""' in text
    assert "env:         {}" in text


def test_node_summary_orders_outcomes() -> None:
    assert node_summary({"unavailable": ["a"], "succeeded": ["b"], "crashed": ["c", "d"]}) == (
        "4 nodes: 1 succeeded, 2 crashed, 1 unavailable"
    )
    assert node_summary({}) == "0 nodes"


def test_cut_command() -> None:
    assert cut("x" * 40) == "x" * 40
    assert cut("x" * 41) == "x" * 39 + "…"
    assert len(cut("y" * 100)) == 40


def test_jobs_table() -> None:
    header, rows = jobs_table([{**JOB, "command": "c" * 50}])
    assert header == ["ID", "STATUS", "COMMAND", "CREATED", "RUN_TIMEOUT"]
    assert rows == [[JOB["id"], "complete", "c" * 39 + "…", JOB["created_at"], "3600"]]
    text = format_table(header, rows)
    first, second = text.splitlines()
    assert first.startswith("ID") and not first.endswith(" ")
    assert first.index("STATUS") == second.index("complete")


def test_job_nodes_table() -> None:
    header, rows = job_nodes_table(
        [
            {
                "node_name": "web1",
                "status": "failed",
                "exit_status": 2,
                "signal": None,
                "started_at": "s",
                "finished_at": None,
                "stdout_bytes": 10,
                "stderr_bytes": 0,
                "truncated": True,
            }
        ]
    )
    assert header[0] == "NODE" and header[-1] == "TRUNCATED"
    assert rows == [["web1", "failed", "2", "-", "s", "-", "10", "0", "yes"]]


def test_output_header() -> None:
    assert output_header("web3", "stdout", "failed", 2) == "==> web3 stdout (failed, exit 2) <=="
    assert output_header("web3", "stdout", "crashed") == "==> web3 stdout (crashed) <=="
    assert output_header("web3", "stderr") == "==> web3 stderr <=="


@pytest.mark.parametrize(
    ("status", "nodes", "code", "knife"),
    [
        ("complete", {"succeeded": ["a", "b"]}, 0, 0),
        ("complete", {"succeeded": ["a"], "failed": ["b"]}, 1, 1),
        ("complete", {"succeeded": ["a"], "nacked": ["b"]}, 1, 0),
        ("complete", {"succeeded": ["a"], "unavailable": ["b"]}, 1, 0),
        ("complete", {"succeeded": ["a"], "crashed": ["b"]}, 1, 1),
        ("complete", {"was_ready": ["a"]}, 1, 1),
        ("quorum_failed", {"nacked": ["a"]}, 2, 1),
        ("quorum_failed", {"unavailable": ["a"], "was_ready": ["b"]}, 2, 1),
        ("timed_out", {"timed_out": ["a"]}, 1, 1),
        ("timed_out", {"succeeded": ["a"]}, 1, 1),
        ("aborted", {"aborted": ["a"]}, 1, 1),
        ("crashed", {"crashed": ["a"]}, 1, 1),
        ("stopped", {"failed": ["a"], "skipped": ["b"]}, 1, 1),
        ("stopped", {"succeeded": ["a"], "failed": ["b"]}, 1, 1),  # nothing left to skip
        ("complete", {"succeeded": ["a"], "failed": []}, 0, 0),  # empty buckets do not count
    ],
)
def test_job_exit_codes(status: str, nodes: dict, code: int, knife: int) -> None:
    job = {"status": status, "nodes": nodes}
    assert job_exit_code(job) == code
    assert job_exit_code(job, knife_compatible=True) == knife


def test_error_exit_codes() -> None:
    assert error_exit_code(is_usage=True) == 3
    assert error_exit_code(is_usage=False) == 3
    assert error_exit_code(is_usage=True, knife_compatible=True) == 1
    assert error_exit_code(is_usage=False, knife_compatible=True) == 100


def _rich_text(renderable: object) -> str:
    import io

    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=200, no_color=True, highlight=False).print(renderable)
    return out.getvalue()


def test_rich_table_prints_markup_literally() -> None:
    header, rows = jobs_table(
        [{"id": "1", "status": "new", "command": "cmd [/x]"}, {"command": "[bold]b[/bold]"}]
    )
    text = _rich_text(rich_table(header, rows))
    assert "cmd [/x]" in text and "[bold]b[/bold]" in text
    assert _rich_text(rich_table(["[/H]"], [["[red"]])).split() == ["[/H]", "[red"]


def test_rich_progress_prints_server_status_literally() -> None:
    import io
    import re

    from pushjobs.cli.display import RichDisplay
    from pushjobs.cli.follow import JobProgress

    out = io.StringIO()
    d = RichDisplay(no_color=True, file=out)
    p = JobProgress("j", ["a"])
    p.apply_job({"status": "[/x]", "nodes": {"[bold]odd[/bold]": ["a"]}})
    d.update(p)
    d.close(p)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "[/x]" in text and "[bold]odd[/bold] 1" in text


# ---------------------------------------------------------------- audit and rollout keys


def test_audit_keys_keep_the_spec_layout() -> None:
    """`requested_by` (in every job of a current server) does not widen the key column."""
    text = format_job(dict(JOB, requested_by="rebecca", aborted_by="bob"))
    lines = text.splitlines()
    assert lines[:8] == [
        "id:          a2b87f87052d213c0703eadb21bdf20e",
        "command:     chef-client",
        "status:      complete",
        "run_timeout: 3600",
        "created_at:  Tue, 04 Sep 2012 23:01:02 GMT",
        "updated_at:  Tue, 04 Sep 2012 23:17:56 GMT",
        "requested_by: rebecca",
        "aborted_by:  bob",
    ]


def test_limits_shown_as_given_after_the_options() -> None:
    job = dict(JOB, requested_by="r", user="u", max_concurrency="10%", max_errors=2)
    lines = format_job(job).splitlines()
    assert lines[0] == "id:              a2b87f87052d213c0703eadb21bdf20e"
    keys = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert keys[6:10] == ["requested_by", "user", "max_concurrency", "max_errors"]
    assert "max_concurrency: 10%" in lines and "max_errors:      2" in lines


def test_stopped_note_names_the_skipped_nodes() -> None:
    job = {
        "status": "stopped",
        "max_errors": 1,
        "nodes": {"failed": ["b", "a"], "succeeded": ["c"], "skipped": ["e", "d"]},
    }
    assert stopped_note(job) == (
        "Stopped: 2 nodes failed, 1 allowed (max_errors 1); 2 nodes skipped: d, e"
    )
    job = {"status": "stopped", "max_errors": "10%", "nodes": {"timed_out": ["a"]}}
    assert (
        stopped_note(job)
        == "Stopped: 1 node failed, 0 allowed (max_errors 10%); no node was skipped."
    )
    many = {"status": "stopped", "max_errors": 0, "nodes": {"crashed": ["x"],
            "skipped": [f"n{i:02}" for i in range(12)]}}  # fmt: skip
    assert stopped_note(many) == (
        "Stopped: 1 node failed, 0 allowed (max_errors 0); 12 nodes skipped: "
        "n00, n01, n02, n03, n04, n05, n06, n07, n08, n09, … (2 more)"
    )
    assert stopped_note(JOB) is None


def test_rich_table_colours_the_status_column() -> None:
    import io

    from rich.console import Console

    out = io.StringIO()
    header, rows = jobs_table([dict(JOB, status="stopped"), dict(JOB, status="complete")])
    Console(file=out, width=200, force_terminal=True, color_system="standard").print(
        rich_table(header, rows)
    )
    assert "\x1b[33mstopped" in out.getvalue() and "\x1b[32mcomplete" in out.getvalue()

"""The per-job output feed's resume rules (http-api.md §7.13), without a server."""

from __future__ import annotations

from pushjobs.server.http.output_feed import (
    Resume,
    first_byte,
    output_event,
    parse_resume,
    resume_in_log,
)
from pushjobs.server.jobs.live import OutputArrival, OutputEnd

LOG = [
    OutputArrival("web:1", "stdout", 0, 10),
    OutputArrival("db", "stdout", 0, 4),
    OutputArrival("web:1", "stdout", 10, 20),
    OutputEnd("db", "stdout"),
    OutputEnd("db", "stderr"),
]


def test_ids_split_at_the_last_two_colons() -> None:
    assert parse_resume("web:1:stdout:12") == Resume("web:1", "stdout", 12)
    assert parse_resume("db:stderr:end") == Resume("db", "stderr", None)
    for bad in (None, "", "job_complete", "db:stdin:3", "db:stdout:x", ":stdout:3", "7", "db:3"):
        assert parse_resume(bad) is None, bad


def test_resume_inside_an_arrival_clips_it() -> None:
    assert resume_in_log(LOG, Resume("web:1", "stdout", 15)) == (2, 15)
    assert resume_in_log(LOG, Resume("web:1", "stdout", 3)) == (0, 3)


def test_resume_at_the_end_of_an_arrival_goes_on_after_it() -> None:
    assert resume_in_log(LOG, Resume("web:1", "stdout", 10)) == (1, None)
    assert resume_in_log(LOG, Resume("db", "stdout", 4)) == (2, None)
    assert resume_in_log(LOG, Resume("db", "stdout", None)) == (4, None)


def test_ids_not_in_the_log() -> None:
    assert resume_in_log(LOG, Resume("web:1", "stdout", 21)) is None
    assert resume_in_log(LOG, Resume("web:1", "stderr", None)) is None
    assert resume_in_log(LOG, Resume("other", "stdout", 1)) is None


def test_first_byte_skips_only_the_named_channel() -> None:
    resume = Resume("db", "stdout", 3)
    assert (first_byte(resume, "db", "stdout"), first_byte(resume, "db", "stderr")) == (3, 0)
    assert first_byte(Resume("db", "stdout", None), "db", "stdout") is None
    assert first_byte(None, "db", "stdout") == 0


def test_output_event_ids_and_encodings() -> None:
    text = output_event("n", "stdout", 5, "é\n".encode(), "T").decode()
    assert text.startswith("event: output\nid: n:stdout:8\n")
    assert '"encoding":"text","data":"é\\n"' in text
    binary = output_event("n", "stderr", 0, b"\xff", "T").decode()
    assert "id: n:stderr:1\n" in binary and '"encoding":"base64","data":"/w=="' in binary

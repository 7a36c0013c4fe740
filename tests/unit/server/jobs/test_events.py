"""SSE event format, timestamps, job and org event logs (http-api.md §7.9, §8)."""

from __future__ import annotations

import itertools
import json

from pushjobs.protocol.timestamps import format_sse_time
from pushjobs.server.jobs.events import (
    KEEPALIVE,
    JobEventLog,
    OrgFeedLog,
    SseClock,
    format_micros,
    format_sse,
    start_event_data,
)
from pushjobs.server.store.records import JobSpec


class FixedClock:
    """A clock that returns the values it is given (to provoke collisions)."""

    def __init__(self, *values):
        self.values = list(values)

    def now(self):
        return self.values.pop(0)


def parse(wire: bytes):
    text = wire.decode("utf-8")
    assert text.endswith("\n\n")
    lines = text[:-2].split("\n")
    assert [line.split(": ", 1)[0] for line in lines] == ["event", "id", "data"]
    return lines[0][7:], lines[1][4:], json.loads(lines[2][6:])


def test_format_sse_exact_bytes():
    wire = format_sse("start", "job-1", {"timestamp": "T", "command": "échô", "quorum": 1})
    assert (
        wire
        == (
            'event: start\nid: job-1\ndata: {"timestamp":"T","command":"échô","quorum":1}\n\n'
        ).encode()
    )
    assert KEEPALIVE == b":keepalive\n"


def test_format_micros_matches_protocol_format():
    assert format_micros(1_346_799_662_123_456) == "2012-09-04 23:01:02.123456Z"
    assert format_micros(1_346_799_662_000_000) == format_sse_time(1_346_799_662.0)
    assert format_micros(0) == "1970-01-01 00:00:00.000000Z"


def test_sse_clock_strictly_increasing_even_when_clock_repeats():
    clock = SseClock(FixedClock(100.0, 100.0, 99.0, 100.0000004, 100.0000049))
    stamps = [clock.stamp()[1] for _ in range(5)]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 5
    assert stamps[0] == "1970-01-01 00:01:40.000000Z"
    assert stamps[1] == "1970-01-01 00:01:40.000001Z"


def test_sse_clock_with_real_strict_clock():
    from pushjobs.protocol.timestamps import StrictClock

    clock = SseClock(StrictClock())
    stamps = [clock.stamp() for _ in range(2000)]
    texts = [s[1] for s in stamps]
    assert all(a < b for a, b in itertools.pairwise(texts))
    assert all(a[0] < b[0] for a, b in itertools.pairwise(stamps))


def test_job_log_ids_and_replay():
    clock = SseClock(FixedClock(*[1000.0 + i for i in range(5)]))
    log = JobEventLog()
    e1 = log.record("start", {"command": "x"}, clock.stamp())
    e2 = log.record("quorum_vote", {"node": "a", "status": "success"}, clock.stamp())
    e3 = log.record("job_complete", {"status": "complete"}, clock.stamp())
    assert [e.id for e in log.events] == ["job-1", "job-2", "job-3"]
    name, eid, data = parse(e2.wire)
    assert (name, eid) == ("quorum_vote", "job-2")
    assert data == {"timestamp": format_micros(1_001_000_000), "node": "a", "status": "success"}
    assert next(iter(data)) == "timestamp"
    assert log.replay_start(None) == 0
    assert log.replay_start("job-2") == 2
    assert log.replay_start("job-99") == 0
    assert log.replay_start("org-1") == 0
    assert log.since(2) == [e3]
    assert log.since(0) == [e1, e2, e3]
    assert log.since(3) == []


def test_org_feed_replay_rules():
    feed = OrgFeedLog(expiration=60)
    clock = SseClock(FixedClock(1000.0, 1001.0, 1020.0, 1021.0, 1022.0, 1070.5, 1071.0))
    a = feed.record("start", {"job": "j1"}, clock.stamp())
    b = feed.record("job_complete", {"job": "j1", "status": "complete"}, clock.stamp())
    c = feed.record("start", {"job": "j2"}, clock.stamp())
    assert [a.id, b.id, c.id] == ["org-1", "org-2", "org-3"]

    # absent Last-Event-ID: nothing, stream continues after the current sequence
    events, seq = feed.replay(None, clock.stamp())
    assert events == [] and seq == 3
    # a retained id: the events after it
    events, seq = feed.replay("org-1", clock.stamp())
    assert events == [b, c] and seq == 3
    # later: org-1 (t=1000) and org-2 (t=1001) expired at now=1070.5
    events, seq = feed.replay("org-1", clock.stamp())
    assert [e.id for e in events] == ["start_id", "org-3"]
    start = events[0]
    assert start.id == "start_id" and start.name == "start_of_history"
    _, _, data = parse(start.wire)
    assert data == {"timestamp": format_micros(1_010_500_000)}
    assert events[1] is c
    # unknown id: start_of_history then everything retained
    events, _ = feed.replay("bogus", clock.stamp())
    assert [e.name for e in events] == ["start_of_history", "start"]
    assert feed.since(2) == [c]
    assert feed.since(3) == []


def test_org_feed_since_after_pruning():
    feed = OrgFeedLog(expiration=10)
    clock = SseClock(FixedClock(0.0, 5.0, 20.0))
    feed.record("start", {"job": "a"}, clock.stamp())
    feed.record("start", {"job": "b"}, clock.stamp())
    c = feed.record("start", {"job": "c"}, clock.stamp())
    assert feed.since(0) == [c]
    assert feed.since(1) == [c]


def test_start_event_data():
    spec = JobSpec(command="ls", nodes=["a", "b"], quorum=1, run_timeout=30)
    assert start_event_data(spec, "alice") == {
        "command": "ls",
        "run_timeout": 30,
        "quorum": 1,
        "node_count": 2,
        "user": "alice",
        "requested_by": "alice",
        "capture": False,
    }
    spec = JobSpec(
        command="ls",
        nodes=["a"],
        quorum=1,
        run_timeout=30,
        user="",
        dir="/d",
        env={},
        file="raw:x",
        capture=True,
    )
    data = start_event_data(spec, "bob")
    assert data["job_user"] == "" and data["dir"] == "/d" and data["env"] == {}
    assert data["file_specified"] is True and data["capture"] is True
    assert "file" not in data


def test_start_event_data_names_the_limits_as_given():
    spec = JobSpec(
        command="ls", nodes=["a"], quorum=1, run_timeout=30, max_concurrency="10%", max_errors=2
    )
    data = start_event_data(spec, "bob")
    assert data["requested_by"] == "bob" == data["user"]
    assert data["max_concurrency"] == "10%" and data["max_errors"] == 2

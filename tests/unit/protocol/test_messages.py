"""Message model: field order, optional fields, validation errors (wire-protocol.md §13–§15)."""

from __future__ import annotations

from typing import Any

import pytest

from pushjobs.protocol.errors import MessageError, ProtocolError
from pushjobs.protocol.messages import (
    Abort,
    Aborted,
    AgentHeartbeat,
    Commit,
    Failed,
    NackCommit,
    Output,
    Run,
    ServerHeartbeat,
    Succeeded,
    parse_agent_message,
    parse_server_message,
)

TS = "Fri, 27 Nov 2026 05:56:29 GMT"


def agent_fields(**extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "node": "node1",
        "client": "node1host",
        "protocol_version": "2.0",
        "org": "testorg",
        "type": "heartbeat",
        "sequence": 1,
        "timestamp": TS,
        "incarnation_id": "2e76526c-ff32-403c-9469-346ad4b21d98",
        "job_state": "idle",
        "job_id": None,
    }
    d.update(extra)
    return d


def test_type_names() -> None:
    assert ServerHeartbeat.TYPE == "heartbeat" and AgentHeartbeat.TYPE == "heartbeat"
    assert Abort.TYPE == "abort" and Commit.TYPE == "commit" and Run.TYPE == "run"
    assert NackCommit.TYPE == "nack_commit" and Output.TYPE == "output"
    assert Succeeded.TYPE == "succeeded" and Failed.TYPE == "failed"
    assert Aborted.TYPE == "aborted"


def test_agent_wire_order_is_the_ruby_clients() -> None:
    hb = AgentHeartbeat(
        "idle",
        node="n",
        client="c",
        protocol_version="2.0",
        org="o",
        sequence=1,
        timestamp=TS,
        incarnation_id="i",
    )
    assert list(hb.to_dict()) == [
        "node",
        "client",
        "protocol_version",
        "org",
        "type",
        "sequence",
        "timestamp",
        "incarnation_id",
        "job_state",
        "job_id",
    ]
    assert hb.to_dict()["job_id"] is None
    res = Succeeded(
        node="n",
        client="c",
        protocol_version="2.0",
        org="o",
        sequence=2,
        timestamp=TS,
        incarnation_id="i",
        job_id="j",
        stdout="out",
        stderr="",
    )
    assert list(res.to_dict())[-3:] == ["job_id", "stdout", "stderr"]
    assert res.to_dict()["stderr"] == ""


def test_none_optionals_omitted_except_job_id() -> None:
    msg = Aborted(node="n", org="o", timestamp=TS, incarnation_id="i")
    assert msg.to_dict() == {
        "node": "n",
        "org": "o",
        "type": "aborted",
        "timestamp": TS,
        "incarnation_id": "i",
        "job_id": None,
    }
    failed_2 = Failed(node="n", org="o", timestamp=TS, incarnation_id="i", protocol_version="2.0")
    assert "exit_status" not in failed_2.to_dict() and "signal" not in failed_2.to_dict()


def test_3_0_results_always_carry_exit_status_and_signal() -> None:
    killed = Failed(
        node="n",
        org="o",
        timestamp=TS,
        incarnation_id="i",
        protocol_version="3.0",
        sequence=9,
        job_id="j",
        signal="SIGKILL",
    )
    d = killed.to_dict()
    assert d["exit_status"] is None and d["signal"] == "SIGKILL"
    assert list(d)[-3:] == ["job_id", "exit_status", "signal"]
    ok = Succeeded(
        node="n",
        org="o",
        timestamp=TS,
        incarnation_id="i",
        protocol_version="3.0",
        sequence=9,
        job_id="j",
        exit_status=0,
        stdout_bytes=3,
        stderr_bytes=0,
    )
    assert list(ok.to_dict())[-5:] == [
        "job_id",
        "exit_status",
        "signal",
        "stdout_bytes",
        "stderr_bytes",
    ]
    assert ok.to_dict()["signal"] is None


def test_server_wire_orders() -> None:
    hb = ServerHeartbeat("push1", "inc", sequence=0, timestamp=TS)
    assert list(hb.to_dict()) == ["sequence", "timestamp", "server", "type", "incarnation_id"]
    commit = Commit(
        "j",
        "srv",
        "cmd",
        False,
        user="u",
        dir="/d",
        env={"A": "1"},
        file="raw:x",
        run_timeout=60,
        sequence=1,
        timestamp=TS,
    )
    assert list(commit.to_dict()) == [
        "sequence",
        "timestamp",
        "type",
        "job_id",
        "server",
        "command",
        "user",
        "dir",
        "env",
        "file",
        "capture",
        "run_timeout",
    ]
    minimal = Commit("j", "srv", "cmd", False, sequence=1, timestamp=TS).to_dict()
    assert minimal["capture"] is False  # always present
    assert "user" not in minimal and "run_timeout" not in minimal


def test_commit_without_capture_means_false() -> None:
    d = {"sequence": 4, "timestamp": TS, "type": "commit", "job_id": "j", "server": "s"}
    d["command"] = "rm -rf /"
    assert parse_server_message(d) == Commit("j", "s", "rm -rf /", False, sequence=4, timestamp=TS)


def test_unknown_fields_ignored() -> None:
    msg = parse_agent_message(agent_fields(extra="x", nested={"a": [1]}), "2.0")
    assert isinstance(msg, AgentHeartbeat)
    assert "extra" not in msg.to_dict()


def test_missing_job_id_is_null() -> None:
    d = agent_fields()
    del d["job_id"]
    assert parse_agent_message(d, "2.0").job_id is None
    assert parse_agent_message(d, "3.0").job_id is None


def test_2_0_sequence_optional_3_0_required() -> None:
    d = agent_fields()
    del d["sequence"]
    assert parse_agent_message(d, "2.0").sequence is None
    with pytest.raises(MessageError, match="missing field 'sequence'"):
        parse_agent_message(d, "3.0")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"type": "bogus"}, "unknown message type 'bogus'"),
        ({"type": 5}, "field 'type' must be str"),
        ({"type": None}, "field 'type' must be str"),
        ({"node": None}, "field 'node' must be str"),
        ({"node": 1}, "field 'node' must be str"),
        ({"org": ["a"]}, "field 'org' must be str"),
        ({"timestamp": 1.5}, "field 'timestamp' must be str"),
        ({"incarnation_id": {}}, "field 'incarnation_id' must be str"),
        ({"sequence": "1"}, "field 'sequence' must be int"),
        ({"sequence": True}, "field 'sequence' must be int"),
        ({"sequence": 1.0}, "field 'sequence' must be int"),
        ({"sequence": 2**63}, "field 'sequence' is out of range"),
        ({"sequence": -(2**63) - 1}, "field 'sequence' is out of range"),
        ({"job_id": 5}, "field 'job_id' must be str"),
        ({"client": 5}, "field 'client' must be str"),
        ({"job_state": None}, "field 'job_state' must be str"),
    ],
)
def test_type_errors(change: dict[str, Any], error: str) -> None:
    with pytest.raises(MessageError, match=error):
        parse_agent_message(agent_fields(**change), "2.0")


@pytest.mark.parametrize("name", ["node", "org", "type", "timestamp", "incarnation_id"])
def test_missing_required(name: str) -> None:
    d = agent_fields()
    del d[name]
    with pytest.raises(MessageError, match=f"missing field '{name}'"):
        parse_agent_message(d, "2.0")


def test_heartbeat_needs_job_state() -> None:
    d = agent_fields()
    del d["job_state"]
    with pytest.raises(MessageError, match="missing field 'job_state'"):
        parse_agent_message(d, "2.0")


def output_fields(**extra: Any) -> dict[str, Any]:
    fields = {"type": "output", "job_id": "j", "channel": "stdout", "offset": 0, "data": b"x"}
    return agent_fields(**(fields | extra)) | {"protocol_version": "3.0"}


def test_output_validation() -> None:
    assert parse_agent_message(output_fields(), "3.0").data == b"x"
    with pytest.raises(MessageError, match=r"requires protocol 3\.0"):
        parse_agent_message(output_fields(), "2.0")
    bad = [
        ({"channel": "stdin"}, "channel"),
        ({"offset": -1}, "offset"),
        ({"offset": "0"}, "offset"),
        ({"data": b""}, "data"),
        ({"data": b"x" * 32769}, "data"),
        ({"data": "text"}, "data"),
        ({"omitted_bytes": 0}, "omitted_bytes"),
        ({"omitted_bytes": "1"}, "omitted_bytes"),
    ]
    for change, field in bad:
        with pytest.raises(MessageError, match=field):
            parse_agent_message(output_fields() | change, "3.0")
    assert parse_agent_message(output_fields(data=b"x" * 32768), "3.0")


def test_result_field_types() -> None:
    base = agent_fields(type="failed", job_id="j")
    for change in (
        {"exit_status": "2"},
        {"signal": 9},
        {"stdout_bytes": -1},
        {"stderr_bytes": 1.0},
        {"stdout": b"x"},
    ):
        with pytest.raises(MessageError):
            parse_agent_message(base | change, "3.0")


def test_server_message_validation() -> None:
    ok = {"sequence": 1, "timestamp": TS, "type": "run", "job_id": "j"}
    assert parse_server_message(ok) == Run("j", sequence=1, timestamp=TS)
    for change, error in [
        ({"type": "nope"}, "unknown message type 'nope'"),
        ({"sequence": None}, "field 'sequence' must be int"),
        ({"sequence": False}, "field 'sequence' must be int"),
        ({"timestamp": 0}, "field 'timestamp' must be str"),
        ({"job_id": None}, "field 'job_id' must be str"),
    ]:
        with pytest.raises(MessageError, match=error):
            parse_server_message(ok | change)
    no_seq = dict(ok)
    del no_seq["sequence"]
    with pytest.raises(MessageError, match="missing field 'sequence'"):
        parse_server_message(no_seq)
    commit = {"sequence": 1, "timestamp": TS, "type": "commit", "job_id": "j", "server": "s"}
    commit["command"] = "c"
    for change in (
        {"env": {"A": 1}},
        {"env": ["A"]},
        {"capture": "yes"},
        {"run_timeout": "5"},
        {"user": 1},
    ):
        with pytest.raises(MessageError):
            parse_server_message(commit | change)


def test_from_dict_checks_type() -> None:
    with pytest.raises(MessageError):
        Run.from_dict({"sequence": 1, "timestamp": TS, "type": "abort", "job_id": "j"})


def test_errors_are_protocol_errors() -> None:
    assert issubclass(MessageError, ProtocolError)
    with pytest.raises(ProtocolError):
        parse_agent_message({}, "2.0")


def test_messages_are_frozen() -> None:
    msg = Run("j", sequence=1, timestamp=TS)
    with pytest.raises(AttributeError):
        msg.job_id = "other"  # type: ignore[misc]

"""Label sets (protocol/labels.py) and the heartbeat's `labels` field (wire-protocol.md §15.1)."""

from __future__ import annotations

from typing import Any

import pytest

from pushjobs.protocol.errors import MessageError
from pushjobs.protocol.labels import MAX_LABELS, label_problem, merge_builtins
from pushjobs.protocol.messages import AgentHeartbeat, parse_agent_message

TS = "Fri, 27 Nov 2026 05:56:29 GMT"


def beat(**extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "node": "web1",
        "client": "web1",
        "protocol_version": "3.0",
        "org": "acme",
        "type": "heartbeat",
        "sequence": 3,
        "timestamp": TS,
        "incarnation_id": "inc",
        "job_state": "idle",
        "job_id": None,
    }
    fields.update(extra)
    return fields


@pytest.mark.parametrize(
    "labels",
    [{}, {"role": "web"}, {"a": ""}, {"k8s.io/zone": "x y"}, {f"k{i}": "v" for i in range(64)}],
)
def test_valid_label_sets(labels: dict[str, str]) -> None:
    assert label_problem(labels) is None


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (["role"], "labels must be a map"),
        ({f"k{i}": "v" for i in range(MAX_LABELS + 1)}, "more than 64 labels (65)"),
        ({"Role": "web"}, "label key 'Role' must be"),
        ({"role-": "web"}, "label key 'role-' must be"),
        ({"": "web"}, "label key '' must be"),
        ({"k" * 64: "v"}, "longer than 63 characters"),
        ({1: "web"}, "label keys must be strings"),
        ({"role": 1}, "label 'role' must be a string"),
        ({"role": "v" * 254}, "longer than 253 characters"),
        ({"role": "a\nb"}, "non-printable"),
    ],
)
def test_invalid_label_sets(labels: Any, problem: str) -> None:
    found = label_problem(labels)
    assert found is not None and problem in found


def test_builtins_win() -> None:
    assert merge_builtins({"role": "web", "os": "mine"}, {"os": "linux"}) == {
        "role": "web",
        "os": "linux",
    }


def test_heartbeat_with_labels_round_trips_and_puts_them_last() -> None:
    msg = AgentHeartbeat(
        job_state="idle",
        labels={"role": "web"},
        node="web1",
        org="acme",
        timestamp=TS,
        incarnation_id="inc",
        sequence=3,
        protocol_version="3.0",
    )
    wire = msg.to_dict()
    assert list(wire)[-3:] == ["job_state", "job_id", "labels"]
    assert parse_agent_message(wire, "3.0") == msg


def test_heartbeat_without_labels_has_no_field() -> None:
    msg = AgentHeartbeat(
        job_state="idle", node="web1", org="acme", timestamp=TS, incarnation_id="inc"
    )
    assert "labels" not in msg.to_dict()
    assert parse_agent_message(beat(), "3.0").labels is None


def test_heartbeat_with_bad_labels_is_refused() -> None:
    with pytest.raises(MessageError, match="field 'labels': label 'role' must be a string"):
        parse_agent_message(beat(labels={"role": 5}), "3.0")

"""`pushjobs.protocol.compat` behaves like the standard library's 3.11 names on every version.

scripts/test.sh also runs this module under Python 3.9 and 3.13: there `StrEnum` and
`dataclass` are the stand-ins. `_dataclass39` is tested directly too, on whatever runs this.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, ClassVar

import msgpack
import pytest

from pushjobs.protocol import _dataclass39
from pushjobs.protocol.compat import KW_ONLY, StrEnum
from pushjobs.protocol.vocabulary import JobStatus, MessageType


class Colour(StrEnum):
    RED = "red"
    DARK_BLUE = "dark-blue"


def test_str_enum_members_are_their_values() -> None:
    assert str(Colour.DARK_BLUE) == "dark-blue"
    assert f"{Colour.DARK_BLUE}" == "dark-blue"
    assert f"[{Colour.RED:>5}]" == "[  red]"
    assert format(Colour.RED) == "red" and repr(str(Colour.RED)) == "'red'"
    assert Colour.RED == "red" and "red" == Colour.RED  # noqa: SIM300 (both sides)
    assert Colour("dark-blue") is Colour.DARK_BLUE
    assert {"red": 1}[Colour.RED] == 1 and hash(Colour.RED) == hash("red")
    assert isinstance(Colour.RED, str)
    assert sorted([Colour.RED, "blue"]) == ["blue", "red"]


def test_str_enum_members_encode_as_plain_strings() -> None:
    assert json.dumps({"type": MessageType.HEARTBEAT}) == '{"type": "heartbeat"}'
    assert msgpack.unpackb(msgpack.packb(JobStatus.COMPLETE)) == "complete"
    assert JobStatus("complete") is JobStatus.COMPLETE
    with pytest.raises(ValueError):
        JobStatus("done")


# The shapes protocol/messages.py uses: a keyword-only base (by `kw_only=True` or a `KW_ONLY`
# marker) and subclasses adding positional fields without defaults.


def shapes(dataclass: Any) -> tuple[type, type, type]:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Base:
        node: str
        job_id: str | None = None

        TYPE: ClassVar[str] = "base"

    @dataclass(frozen=True, slots=True)
    class Child(Base):
        state: str
        extra: list[str] = dataclasses.field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class Marked:
        _: KW_ONLY  # resolved by name: the stand-in's or the standard library's
        sequence: int

    return Base, Child, Marked


@pytest.fixture(
    params=[
        pytest.param(dataclasses.dataclass, id="stdlib")
        if sys.version_info >= (3, 10)
        else pytest.param(None, marks=pytest.mark.skip("no KW_ONLY before 3.10"), id="stdlib"),
        pytest.param(_dataclass39.dataclass, id="stand-in"),
    ]
)
def made(request: pytest.FixtureRequest) -> tuple[type, type, type]:
    return shapes(request.param)


def test_keyword_only_fields_follow_the_positional_ones(made: tuple[type, type, type]) -> None:
    base, child, marked = made
    c = child("running", node="n1")
    assert (c.state, c.node, c.job_id, c.extra) == ("running", "n1", None, [])
    assert c == child(state="running", node="n1", job_id=None)
    assert child("x", ["a"], node="n").extra == ["a"]
    assert child("x", node="n").TYPE == "base"
    with pytest.raises(TypeError):
        child("running", "n1")  # the base's fields are keyword-only
    with pytest.raises(TypeError):
        child(node="n1")  # `state` is required
    with pytest.raises(TypeError):
        base("n1")
    assert base(node="n1") == base(node="n1", job_id=None)
    with pytest.raises(TypeError):
        marked(1)
    assert marked(sequence=1).sequence == 1
    assert [f.name for f in dataclasses.fields(marked)] == ["sequence"]


def test_made_classes_stay_frozen_dataclasses(made: tuple[type, type, type]) -> None:
    _, child, _ = made
    c = child("running", node="n1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.state = "idle"
    assert dataclasses.replace(c, job_id="j1") == child("running", node="n1", job_id="j1")
    assert dataclasses.asdict(c) == {"node": "n1", "job_id": None, "state": "running", "extra": []}
    assert "state='running'" in repr(c)


def test_stand_in_runs_post_init_and_fills_init_false_fields() -> None:
    @_dataclass39.dataclass(kw_only=True)
    class Config:
        name: str
        size: int = 1
        label: str = dataclasses.field(init=False)

        def __post_init__(self) -> None:
            self.label = f"{self.name}:{self.size}"

    assert Config(name="a").label == "a:1"
    assert Config(name="a", size=2).label == "a:2"

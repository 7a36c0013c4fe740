"""Label selectors (protocol/selector.py): the grammar, its errors, and matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushjobs.protocol.selector import (
    SELECTOR_LIMIT,
    Op,
    Requirement,
    Selector,
    SelectorError,
    parse_selector,
)

WEB = {"role": "web", "dc": "fra1"}
DB = {"role": "db", "dc": "fra2", "tier": "gold"}
BARE: dict[str, str] = {}


@pytest.mark.parametrize(
    ("text", "requirements"),
    [
        ("role=web", [Requirement("role", Op.EQUALS, frozenset({"web"}))]),
        ("role==web", [Requirement("role", Op.EQUALS, frozenset({"web"}))]),
        ("role!=web", [Requirement("role", Op.NOT_EQUALS, frozenset({"web"}))]),
        ("dc in (fra1,fra2)", [Requirement("dc", Op.IN, frozenset({"fra1", "fra2"}))]),
        ("dc notin ( fra1 , fra2 )", [Requirement("dc", Op.NOT_IN, frozenset({"fra1", "fra2"}))]),
        ("tier", [Requirement("tier", Op.EXISTS)]),
        ("!tier", [Requirement("tier", Op.NOT_EXISTS)]),
        ("role=", [Requirement("role", Op.EQUALS, frozenset({""}))]),
        (
            " role = web , !tier ",
            [
                Requirement("role", Op.EQUALS, frozenset({"web"})),
                Requirement("tier", Op.NOT_EXISTS),
            ],
        ),
        ("in=x", [Requirement("in", Op.EQUALS, frozenset({"x"}))]),
        ("k8s.io/zone=a_b-c.d", [Requirement("k8s.io/zone", Op.EQUALS, frozenset({"a_b-c.d"}))]),
    ],
)
def test_parses(text: str, requirements: list[Requirement]) -> None:
    assert parse_selector(text) == Selector(tuple(requirements))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("=web", "expected a label key, found '='"),
        ("role=web,", "expected a label key at the end"),
        ("role=web,,dc=x", "expected a label key, found ','"),
        ("Role=web", "label key 'Role' must be lower-case letters"),
        ("-role=web", "label key '-role' must be"),
        ("role=a=b", "expected ',' between requirements, found '='"),
        ("role web", "expected '=', '==', '!=', 'in' or 'notin' after 'role', found 'web'"),
        ("role in web", "expected '(' after 'role' in"),
        ("role in (a", "missing ')'"),
        ("role in (a b)", "expected ',' or ')' in the values of 'role', found 'b'"),
        ("role in ()", "the value set of 'role in' must not be empty"),
        ("role notin (,)", "the value set of 'role notin' must not be empty"),
        ("role=(", "expected a value for 'role', found '('"),
        ("!", "expected a label key at the end"),
        ("!role=web", "expected ',' between requirements, found '='"),
        ("a" * 64 + "=x", "longer than 63 characters"),
        ("role=" + "v" * 254, "label 'role' is longer than 253 characters"),
        ("role=\x07", "non-printable"),
    ],
)
def test_errors_name_the_selector_and_the_reason(text: str, reason: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert str(info.value).startswith(f"invalid selector {text!r}: ")
    assert reason in info.value.reason


def test_a_huge_selector_is_refused_without_parsing() -> None:
    with pytest.raises(SelectorError, match=f"longer than {SELECTOR_LIMIT}"):
        parse_selector("a," * SELECTOR_LIMIT)


@pytest.mark.parametrize(
    ("text", "web", "db", "bare"),
    [
        ("role=web", True, False, False),
        ("role!=web", False, True, True),  # != also matches nodes without the key
        ("dc in (fra1,fra9)", True, False, False),
        ("dc notin (fra1)", False, True, True),
        ("tier", False, True, False),
        ("!tier", True, False, True),
        ("role=db,tier=gold", False, True, False),
        ("role=db,tier=silver", False, False, False),
    ],
)
def test_matching(text: str, web: bool, db: bool, bare: bool) -> None:
    selector = parse_selector(text)
    assert (selector.matches(WEB), selector.matches(DB), selector.matches(BARE)) == (web, db, bare)


# ---- properties ---------------------------------------------------------------------------

KEYS = st.sampled_from(["role", "dc", "tier", "os", "a.b/c"])
VALUES = st.sampled_from(["web", "db", "fra1", "fra2", "x_y-z.1", ""])
LABELS = st.dictionaries(KEYS, VALUES, max_size=5)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    op = draw(st.sampled_from(list(Op)))
    key = draw(KEYS)
    if op in (Op.EXISTS, Op.NOT_EXISTS):
        return Requirement(key, op)
    if op in (Op.EQUALS, Op.NOT_EQUALS):
        return Requirement(key, op, frozenset({draw(VALUES)}))
    values = draw(st.frozensets(VALUES.filter(bool), min_size=1, max_size=3))
    return Requirement(key, op, values)


SELECTORS = st.lists(requirements(), min_size=1, max_size=4).map(lambda r: Selector(tuple(r)))


def reference(requirement: Requirement, labels: dict[str, str]) -> bool:
    """The Kubernetes semantics, written out once more."""
    present = requirement.key in labels
    value = labels.get(requirement.key)
    return {
        Op.EXISTS: present,
        Op.NOT_EXISTS: not present,
        Op.EQUALS: present and value in requirement.values,
        Op.IN: present and value in requirement.values,
        Op.NOT_EQUALS: not present or value not in requirement.values,
        Op.NOT_IN: not present or value not in requirement.values,
    }[requirement.op]


@given(SELECTORS)
def test_the_printed_form_parses_back(selector: Selector) -> None:
    assert parse_selector(str(selector)) == selector


@given(SELECTORS, LABELS)
def test_matching_agrees_with_the_reference(selector: Selector, labels: dict[str, str]) -> None:
    expected = all(reference(r, labels) for r in selector.requirements)
    assert selector.matches(labels) == expected


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_selector_error(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError as exc:
        assert str(exc).startswith("invalid selector ")
    else:
        assert selector.requirements

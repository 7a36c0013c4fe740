"""Kubernetes-style label selectors (http-api.md §7.14): parse once, match many.

Grammar: requirements separated by commas, each one of

    key=value   key==value   key!=value   key in (v1,v2)   key notin (v1,v2)   key   !key

Whitespace around the parts is ignored. `!=` and `notin` also match nodes without the key (as
in Kubernetes). `parse_selector` raises `SelectorError` naming the problem; pure, no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

from pushjobs.protocol.compat import dataclass

from .labels import key_problem, value_problem

SELECTOR_LIMIT = 4096  # characters of a selector
_TOKEN = re.compile(r"\s*(?:(?P<punct>!=|==|=|!|\(|\)|,)|(?P<word>[^\s,()=!]+))")


class SelectorError(ValueError):
    """A selector that does not parse; `str()` is the client-facing text."""

    def __init__(self, selector: str, reason: str) -> None:
        super().__init__(f"invalid selector {selector!r}: {reason}")
        self.selector = selector
        self.reason = reason


class Op(enum.Enum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    NOT_EXISTS = "!"


@dataclass(frozen=True)
class Requirement:
    """One comma-separated part of a selector."""

    key: str
    op: Op
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op is Op.EXISTS:
            return value is not None
        if self.op is Op.NOT_EXISTS:
            return value is None
        if self.op in (Op.EQUALS, Op.IN):
            return value is not None and value in self.values
        return value is None or value not in self.values  # != and notin

    def __str__(self) -> str:
        if self.op is Op.EXISTS:
            return self.key
        if self.op is Op.NOT_EXISTS:
            return f"!{self.key}"
        if self.op in (Op.EQUALS, Op.NOT_EQUALS):
            (value,) = self.values
            return f"{self.key}{self.op.value}{value}"
        return f"{self.key} {self.op.value} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class Selector:
    """Every requirement must hold."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _tokens(text: str, fail: _Fail) -> list[tuple[str, str]]:
    """(kind, text) pairs; kind is the punctuation itself or `word`."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].isspace():
            break
        match = _TOKEN.match(text, pos)
        if match is None:  # pragma: no cover - every character starts some token
            raise fail(f"unexpected character at position {pos}")
        punct = match.group("punct")
        out.append((punct, punct) if punct else ("word", match.group("word")))
        pos = match.end()
    return out


class _Fail:
    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, reason: str) -> SelectorError:
        return SelectorError(self.text, reason)


class _Parser:
    def __init__(self, text: str) -> None:
        self.fail = _Fail(text)
        self.tokens = _tokens(text, self.fail)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str] | None:
        token = self.peek()
        if token is not None:
            self.pos += 1
        return token

    def key(self) -> str:
        token = self.take()
        if token is None:
            raise self.fail("expected a label key at the end")
        kind, text = token
        if kind != "word":
            raise self.fail(f"expected a label key, found {text!r}")
        problem = key_problem(text)
        if problem is not None:
            raise self.fail(problem)
        return text

    def value(self, key: str) -> str:
        token = self.peek()
        if token is None or token[0] in (",", ")"):
            return ""  # `key=` selects the empty value, as in Kubernetes
        kind, text = token
        if kind != "word":
            raise self.fail(f"expected a value for {key!r}, found {text!r}")
        self.pos += 1
        problem = value_problem(key, text)
        if problem is not None:
            raise self.fail(problem)
        return text

    def value_set(self, key: str, op: str) -> frozenset[str]:
        token = self.take()
        if token is None or token[0] != "(":
            raise self.fail(f"expected '(' after {key!r} {op}")
        values = set()
        while True:
            token = self.peek()
            if token is None:
                raise self.fail("missing ')'")
            if token[0] == "word":
                values.add(self.value(key))
            token = self.take()
            if token is None:
                raise self.fail("missing ')'")
            if token[0] == ")":
                break
            if token[0] != ",":
                raise self.fail(f"expected ',' or ')' in the values of {key!r}, found {token[1]!r}")
        values.discard("")
        if not values:
            raise self.fail(f"the value set of '{key} {op}' must not be empty")
        return frozenset(values)

    def requirement(self) -> Requirement:
        token = self.peek()
        if token is not None and token[0] == "!":
            self.pos += 1
            return Requirement(self.key(), Op.NOT_EXISTS)
        key = self.key()
        token = self.peek()
        if token is None or token[0] == ",":
            return Requirement(key, Op.EXISTS)
        kind, text = token
        if kind in ("=", "=="):
            self.pos += 1
            return Requirement(key, Op.EQUALS, frozenset({self.value(key)}))
        if kind == "!=":
            self.pos += 1
            return Requirement(key, Op.NOT_EQUALS, frozenset({self.value(key)}))
        if kind == "word" and text in ("in", "notin"):
            self.pos += 1
            op = Op.IN if text == "in" else Op.NOT_IN
            return Requirement(key, op, self.value_set(key, text))
        raise self.fail(f"expected '=', '==', '!=', 'in' or 'notin' after {key!r}, found {text!r}")

    def selector(self) -> Selector:
        if not self.tokens:
            raise self.fail("it is empty")
        requirements = [self.requirement()]
        while True:
            token = self.take()
            if token is None:
                return Selector(tuple(requirements))
            if token[0] != ",":
                raise self.fail(f"expected ',' between requirements, found {token[1]!r}")
            requirements.append(self.requirement())


def parse_selector(text: str) -> Selector:
    """Parse `text`; SelectorError (with the client-facing message) when it is malformed."""
    if len(text) > SELECTOR_LIMIT:
        raise SelectorError(text[:64] + "...", f"longer than {SELECTOR_LIMIT} characters")
    return _Parser(text).selector()

"""The agent and the protocol code it imports are written for Python 3.9 (the agent's minimum).

Syntax is checked here on any interpreter; scripts/test.sh also runs the agent's tests under
3.9 and 3.13, which catches library calls that are newer than 3.9.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pushjobs.agent
import pushjobs.protocol

SOURCES = sorted(
    path
    for package in (pushjobs.agent, pushjobs.protocol)
    for folder in package.__path__
    for path in Path(folder).rglob("*.py")
)
# Where the 3.10+ `dataclass` options come from (the stand-in of protocol/_dataclass39.py).
COMPAT = {"compat.py", "_dataclass39.py"}


def ids(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_the_sources_are_found() -> None:
    names = {ids(p) for p in SOURCES}
    assert {"agent/main.py", "protocol/messages.py", "protocol/compat.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=ids)
def test_module_is_python_3_9_syntax(path: Path) -> None:
    # feature_version rejects `match`, `except*`, parenthesised context managers and the like
    tree = ast.parse(path.read_text(), str(path), feature_version=(3, 9))
    # annotations stay strings, so `X | None` and `list[int]` in them are never evaluated
    assert any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    ), f"{path} lacks `from __future__ import annotations`"


@pytest.mark.parametrize("path", SOURCES, ids=ids)
def test_module_uses_no_3_10_call_keyword(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            keywords = {k.arg for k in node.keywords}
            if node.func.id == "zip" and "strict" in keywords:
                problems.append(f"line {node.lineno}: zip(strict=...) is 3.10+")
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "dataclasses"
            and path.name not in COMPAT
            and any(alias.name in ("dataclass", "KW_ONLY") for alias in node.names)
        ):
            problems.append(
                f"line {node.lineno}: import dataclass/KW_ONLY from pushjobs.protocol.compat"
                " (slots and kw_only are 3.10+)"
            )
    assert problems == []

"""Node labels: the rules a label set must follow (agent.md §2.1, wire-protocol.md §15.1).

Pure and shared by the agent (its `[labels]` table) and the server (the `labels` field of a
3.0 heartbeat). `label_problem` answers why a label set is unusable, or None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_LABELS = 64  # labels per node
KEY_LIMIT = 63  # characters of a key
VALUE_LIMIT = 253  # characters of a value
KEY_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9_./]*[a-z0-9])?")
# Built-in labels the agent fills itself; they win over a user label of the same key.
BUILTIN_KEYS = ("os", "os_version", "arch", "agent_version", "python")

Labels = dict[str, str]


def key_problem(key: Any) -> str | None:
    """Why `key` is not a label key, or None."""
    if not isinstance(key, str):
        return "label keys must be strings"
    if len(key) > KEY_LIMIT:
        return f"label key {key[:KEY_LIMIT]!r}... is longer than {KEY_LIMIT} characters"
    if not KEY_PATTERN.fullmatch(key):
        return (
            f"label key {key!r} must be lower-case letters, digits and '-_./', "
            "starting and ending with a letter or digit"
        )
    return None


def value_problem(key: str, value: Any) -> str | None:
    """Why `value` is not a label value, or None."""
    if not isinstance(value, str):
        return f"label {key!r} must be a string"
    if len(value) > VALUE_LIMIT:
        return f"label {key!r} is longer than {VALUE_LIMIT} characters"
    if not value.isprintable():
        return f"label {key!r} holds a non-printable character"
    return None


def label_problem(labels: Any) -> str | None:
    """Why `labels` is not a usable label set (a map of at most 64 keys to values), or None."""
    if not isinstance(labels, Mapping):
        return "labels must be a map of strings to strings"
    if len(labels) > MAX_LABELS:
        return f"more than {MAX_LABELS} labels ({len(labels)})"
    for key, value in labels.items():
        problem = key_problem(key) or value_problem(key, value)
        if problem is not None:
            return problem
    return None


def merge_builtins(user: Mapping[str, str], builtins: Mapping[str, str]) -> Labels:
    """The labels a node reports: its user labels, then the built-ins over them."""
    merged = dict(user)
    merged.update(builtins)
    return merged

"""The agent's labels: the `[labels]` table checked, plus the built-ins it fills (agent.md §2.1)."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pushjobs.protocol.labels import (
    BUILTIN_KEYS,
    MAX_LABELS,
    VALUE_LIMIT,
    key_problem,
    merge_builtins,
    value_problem,
)
from pushjobs.protocol.version import installed_version

OS_RELEASE = "/etc/os-release"


class LabelConfigError(ValueError):
    """The `[labels]` table is unusable; the message says why."""


def check_user_labels(table: Any) -> dict[str, str]:
    """The `[labels]` table as a dict; LabelConfigError naming the first problem."""
    if not isinstance(table, Mapping):
        raise LabelConfigError("[labels] must be a table of strings")
    for key, value in table.items():
        problem = key_problem(key) or value_problem(key, value)
        if problem is not None:
            raise LabelConfigError(f"[labels]: {problem}")
        if key in BUILTIN_KEYS:
            raise LabelConfigError(f"[labels]: {key!r} is a built-in label and cannot be set")
    if len(table) > MAX_LABELS - len(BUILTIN_KEYS):
        raise LabelConfigError(
            f"[labels]: at most {MAX_LABELS - len(BUILTIN_KEYS)} labels "
            f"({MAX_LABELS} with the {len(BUILTIN_KEYS)} built-in ones)"
        )
    return dict(table)


def os_version(os_release: str = OS_RELEASE) -> str:
    """`VERSION_ID` of /etc/os-release when there is one, else `platform.release()`."""
    try:
        text = Path(os_release).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "VERSION_ID":
            value = value.strip().strip("\"'")
            if value:
                return value
    return platform.release()


def _clean(value: str) -> str:
    """A built-in value made a valid label value (printable, at most 253 characters)."""
    value = "".join(c for c in value if c.isprintable())
    return value[:VALUE_LIMIT]


def builtin_labels(version: str, os_release: str = OS_RELEASE) -> dict[str, str]:
    """`os`, `os_version`, `arch`, `agent_version`, `python` of this machine and process."""
    v = sys.version_info
    values = {
        "os": platform.system().lower(),
        "os_version": os_version(os_release),
        "arch": platform.machine(),
        "agent_version": version,
        "python": f"{v.major}.{v.minor}.{v.micro}",
    }
    return {key: _clean(value) for key, value in values.items()}


def node_labels(
    user: Mapping[str, str], builtins: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What the agent reports: the user labels and the built-ins (which win)."""
    if builtins is None:
        builtins = builtin_labels(installed_version())
    return merge_builtins(user, builtins)

"""Writing the TOML config files of servers, agents and the CLI in tests.

Values are quoted here and nowhere else: strings as TOML basic strings (JSON escapes are valid
TOML escapes for every character `json.dumps` escapes), booleans, numbers and lists of those.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def toml_string(value: str) -> str:
    """A TOML basic string."""
    return json.dumps(value)


def toml_value(value: Any) -> str:
    """A TOML value: bool, int, float, list of values; anything else as a string (`str()`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return f"[{', '.join(toml_value(v) for v in value)}]"
    return toml_string(str(value))


def toml_lines(values: Mapping[str, Any]) -> list[str]:
    """`key = value` lines, one per item."""
    return [f"{key} = {toml_value(value)}" for key, value in values.items()]


def toml_document(top: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Top-level keys, then one `[table]` per item of `tables` (after a blank line, if any)."""
    lines = toml_lines(top)
    for name, values in tables.items():
        lines.append(f"\n[{name}]" if lines else f"[{name}]")
        lines += toml_lines(values)
    return "\n".join(lines) + "\n"

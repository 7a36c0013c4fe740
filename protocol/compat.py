"""Stand-ins for what the agent and the protocol code use from Python 3.10 and 3.11.

The agent runs on Python 3.9+ (RHEL 9 and Ubuntu 22.04 ship 3.9 and 3.10); the server and the
CLI need 3.11. On new enough interpreters every name here is the standard library's own:

- `StrEnum`: `enum.StrEnum` from 3.11; below, a `str` mixin enum that behaves the same for
  our use (members equal their string values; `str()`, `format()` and f-strings give the value;
  no `auto()`).
- `dataclass` and `KW_ONLY`: `dataclasses`' own from 3.10; below, `dataclasses.dataclass`
  without `slots` (only a memory saving) and with `kw_only` / `KW_ONLY` honoured the 3.10 way
  (the marked fields become keyword-only parameters after the positional ones).
"""

from __future__ import annotations

import sys

__all__ = ["KW_ONLY", "StrEnum", "dataclass"]

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised by the Python 3.9 run of scripts/test.sh
    from enum import Enum

    class StrEnum(str, Enum):
        """`enum.StrEnum` of Python 3.11: members are their string values."""

        __str__ = str.__str__
        __format__ = str.__format__  # type: ignore[assignment]


if sys.version_info >= (3, 10):
    from dataclasses import KW_ONLY, dataclass
else:  # pragma: no cover - exercised by the Python 3.9 run of scripts/test.sh
    from ._dataclass39 import KW_ONLY, dataclass

"""Whitelist: which job commands a node runs, and how (agent.md §15). Pure, no I/O."""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Mapping
from typing import Any

from pushjobs.protocol.compat import dataclass

DEFAULT_WHITELIST: dict[str, Any] = {"chef-client": "chef-client"}

_ENTRY_FIELDS = {"run", "shell", "lock", "hold_lock", "pattern"}


class WhitelistError(ValueError):
    """The `[whitelist]` table is malformed (a configuration error)."""


def has_control_char(text: str) -> bool:
    """True when `text` contains a character of Unicode category Cc (newline, tab, NUL, ...)."""
    return any(unicodedata.category(ch) == "Cc" for ch in text)


@dataclass(frozen=True, slots=True)
class Entry:
    """One whitelist entry: exact (`pattern is None`) or pattern."""

    key: str
    run: str
    shell: bool = False
    lock: bool | str = False
    hold_lock: bool = False
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """How an allowed command runs."""

    entry: str  # the entry's key (a label for pattern entries)
    resolved: str  # the resolved command line
    argv: list[str]  # what is executed
    shell: bool
    lock_path: str | None  # None when the entry takes no lock
    hold_lock: bool

    def describe(self) -> str:
        """The argv as a list, or the shell text (for log lines)."""
        return self.resolved if self.shell else repr(self.argv)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command is not run."""

    reason: str


def _entry_from_value(key: str, value: Any) -> Entry:
    if isinstance(value, str):
        return Entry(key=key, run=value)
    if not isinstance(value, Mapping):
        raise WhitelistError(f"whitelist entry {key!r}: value must be a string or a table")
    unknown = sorted(set(value) - _ENTRY_FIELDS)
    if unknown:
        raise WhitelistError(f"whitelist entry {key!r}: unknown field {unknown[0]!r}")
    pattern_text = value.get("pattern")
    if pattern_text is not None and not isinstance(pattern_text, str):
        raise WhitelistError(f"whitelist entry {key!r}: 'pattern' must be a string")
    if pattern_text is not None and "run" not in value:
        raise WhitelistError(f"whitelist entry {key!r}: a pattern entry needs 'run'")
    run = value.get("run", key)
    if not isinstance(run, str):
        raise WhitelistError(f"whitelist entry {key!r}: 'run' must be a string")
    shell = value.get("shell", False)
    if not isinstance(shell, bool):
        raise WhitelistError(f"whitelist entry {key!r}: 'shell' must be a boolean")
    lock = value.get("lock", False)
    if not isinstance(lock, (bool, str)) or lock == "":
        raise WhitelistError(f"whitelist entry {key!r}: 'lock' must be a boolean or a path")
    hold_lock = value.get("hold_lock", False)
    if not isinstance(hold_lock, bool):
        raise WhitelistError(f"whitelist entry {key!r}: 'hold_lock' must be a boolean")
    pattern = None
    if pattern_text is not None:
        try:
            pattern = re.compile(pattern_text)
        except re.error as exc:
            raise WhitelistError(f"whitelist entry {key!r}: bad pattern: {exc}") from None
        # Check the template against the pattern's groups now, not at the first job.
        try:
            _check_template(pattern, run)
        except (re.error, IndexError) as exc:
            raise WhitelistError(f"whitelist entry {key!r}: bad 'run' template: {exc}") from None
    return Entry(key=key, run=run, shell=shell, lock=lock, hold_lock=hold_lock, pattern=pattern)


def _check_template(pattern: re.Pattern[str], template: str) -> None:
    """Raise when `template` refers to groups the pattern lacks (or has bad escapes)."""
    # `sub` compiles the replacement template eagerly, even when nothing matches.
    pattern.sub(template, "")


class Whitelist:
    """The compiled `[whitelist]` table."""

    def __init__(self, table: Mapping[str, Any], default_lock_file: str) -> None:
        if not isinstance(table, Mapping):
            raise WhitelistError("[whitelist] must be a table")
        self.default_lock_file = default_lock_file
        self.exact: dict[str, Entry] = {}
        self.patterns: list[Entry] = []
        for key, value in table.items():
            entry = _entry_from_value(key, value)
            if entry.pattern is None:
                self.exact[key] = entry
            else:
                self.patterns.append(entry)

    def entries(self) -> list[Entry]:
        """All entries: exact ones, then patterns in file order."""
        return [*self.exact.values(), *self.patterns]

    def resolve(self, command: str) -> Resolution | Refusal:
        """Resolve a job command (agent.md §15.2)."""
        if has_control_char(command):
            return Refusal(f"command {command!r} contains a control character")
        entry = self.exact.get(command)
        resolved: str | None = entry.run if entry is not None else None
        if entry is None:
            for candidate in self.patterns:
                assert candidate.pattern is not None
                match = candidate.pattern.fullmatch(command)
                if match is None:
                    continue
                try:
                    resolved = match.expand(candidate.run)
                except (re.error, IndexError) as exc:
                    return Refusal(f"whitelist entry {candidate.key!r}: bad template: {exc}")
                entry = candidate
                break
        if entry is None or resolved is None:
            return Refusal(f"command {command!r} is not in the whitelist")
        if has_control_char(resolved):
            return Refusal(
                f"command {command!r} resolves to {resolved!r}, which contains a control character"
            )
        if entry.shell:
            argv = ["/bin/sh", "-c", resolved]
        else:
            try:
                argv = shlex.split(resolved)
            except ValueError as exc:
                return Refusal(f"command {command!r} resolves to {resolved!r}: {exc}")
            if not argv:
                return Refusal(f"command {command!r} resolves to an empty command line")
        lock_path: str | None
        if entry.lock is True:
            lock_path = self.default_lock_file
        elif entry.lock is False:
            lock_path = None
        else:
            lock_path = str(entry.lock)
        return Resolution(
            entry=entry.key,
            resolved=resolved,
            argv=argv,
            shell=entry.shell,
            lock_path=lock_path,
            hold_lock=entry.hold_lock,
        )

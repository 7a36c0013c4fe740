"""Shared parts of the `pushjobs-server` commands: exit codes, errors, name rules, `Context`."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pushjobs.server.config import ConfigError, Settings, default_config_path, load_settings
from pushjobs.server.store.interfaces import StoreError

if TYPE_CHECKING:
    from pushjobs.server.store.interfaces import AccountStore, JobStore
    from pushjobs.server.store.records import Org
    from pushjobs.server.store.sql import SqlStore

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Always `fullmatch`: `match` with `$` accepts a trailing newline (`acme\n`).
_ORG_OR_GROUP_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,254}")
_USER_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,254}")
CLIENT_RE = re.compile(r"[A-Za-z0-9_.:-]{1,255}")

NAME_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "organization": (
        _ORG_OR_GROUP_RE,
        "1-255 characters a-z 0-9 _ -, starting with a letter or digit",
    ),
    "group": (_ORG_OR_GROUP_RE, "1-255 characters a-z 0-9 _ -, starting with a letter or digit"),
    "user": (_USER_RE, "1-255 characters a-z 0-9 _ . -, starting with a letter or digit"),
    "client": (CLIENT_RE, "1-255 characters A-Z a-z 0-9 _ . : -"),
}


class UsageError(Exception):
    """Bad command-line input: exit 2."""


class OperationFailed(Exception):
    """The operation failed: exit 1."""


def check_name(kind: str, name: str) -> str:
    """Return `name` if valid for `kind` (cli.md §14), else raise `UsageError`."""
    pattern, rule = NAME_RULES[kind]
    if not pattern.fullmatch(name):
        raise UsageError(f"invalid {kind} name {name!r} ({rule})")
    return name


def plural(count: int, noun: str) -> str:
    """`1 job`, `2 jobs`."""
    return f"{count} {noun}{'s' if count != 1 else ''}"


def os_failure(what: str, exc: OSError) -> OperationFailed:
    """`OperationFailed("<what>: <reason>")` for an OS error (its text without the errno)."""
    return OperationFailed(f"{what}: {exc.strerror or exc}")


def utc(t: float) -> str:
    """Epoch seconds as an ISO 8601 UTC time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def open_store(settings: Settings) -> SqlStore:
    """Open (or create) the configured store; failures other than `StoreError` exit 1."""
    # not at import time: `--help` is fast
    from pushjobs.server.store.opening import open_store as open_configured
    from pushjobs.server.store.opening import store_name

    try:
        return open_configured(settings)
    except StoreError:
        raise
    except Exception as exc:
        raise OperationFailed(f"cannot open the {store_name(settings)}: {exc}") from None


# ---------------------------------------------------------------------------
# command context


class Context:
    """Parsed arguments plus lazily loaded settings and store, and output helpers.

    Commands reach the store through the interface they use: `accounts()` for organizations,
    users, clients and groups, `job_store()` for `job prune`.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self._store: SqlStore | None = None
        self.config_path, self.config_explicit = default_config_path(getattr(args, "config", None))

    # -- settings and store -------------------------------------------------
    def overrides(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        data_dir = getattr(self.args, "data_dir", None)
        overrides: dict[str, Any] = {"data_dir": data_dir}
        overrides.update(extra or {})
        return overrides

    def settings(self, extra: dict[str, Any] | None = None) -> Settings:
        """Settings from the config file; a missing default file means all defaults."""
        path: Path | None = self.config_path
        if not self.config_path.exists():
            if self.config_explicit:
                raise ConfigError(f"config file {self.config_path} not found")
            path = None
        return load_settings(path, self.overrides(extra))

    def accounts(self) -> AccountStore:
        """The store's organizations, users, clients and groups."""
        return self._existing_store()

    def job_store(self) -> JobStore:
        """The store's jobs."""
        return self._existing_store()

    def sql_store(self) -> SqlStore:
        """The whole store, tables and all (`store copy`)."""
        return self._existing_store()

    def _existing_store(self) -> SqlStore:
        """The opened store; a SQLite database must exist (created by `init`)."""
        if self._store is None:
            from pushjobs.server.store.opening import store_exists

            settings = self.settings()
            if not store_exists(settings):
                raise OperationFailed(
                    f"{settings.database_path} not found; run pushjobs-server init first"
                    f"{self.no_config_note()}"
                )
            self._store = open_store(settings)
        return self._store

    def create_store(self, settings: Settings) -> SqlStore:
        """Open (or create) the configured store for `init`; closed with the context."""
        self._store = open_store(settings)
        return self._store

    def no_config_note(self) -> str:
        """Why the defaults were used, when the default config file is missing (else empty)."""
        if self.config_explicit or self.config_path.exists():
            return ""
        return (
            f" (no {self.config_path}, so the built-in defaults apply; "
            "give -c FILE or set PUSHJOBS_SERVER_CONFIG)"
        )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- output ---------------------------------------------------------------
    def say(self, text: str, *, stderr: bool = False) -> None:
        print(text, file=sys.stderr if stderr else sys.stdout)

    def result(self, data: dict[str, Any], text: str) -> None:
        """Print a command's one-line result: compact JSON with --json, else `text`."""
        if self.json:
            print(json.dumps(data))
        else:
            self.say(text)

    def show(self, data: dict[str, Any], fields: Sequence[tuple[str, Any]]) -> None:
        """Print one record: `data` as JSON with --json, else aligned `label:  value` lines."""
        width = max(len(label) for label, _ in fields) + 3
        self.emit(data, [f"{label + ':':<{width}}{value}" for label, value in fields])

    def emit(self, data: Any, text: str | Iterable[str]) -> None:
        """Print `data` as JSON with --json, else the text lines."""
        if self.json:
            print(json.dumps(data, ensure_ascii=False, indent=2))
        elif isinstance(text, str):
            print(text)
        else:
            for line in text:
                print(line)


def require(found: _T | None, message: str) -> _T:
    """`found`, or `OperationFailed(message)` when it is None."""
    if found is None:
        raise OperationFailed(message)
    return found


def org_or_fail(ctx: Context, org: str) -> Org:
    """The organization record, or `OperationFailed` when it does not exist."""
    return require(ctx.accounts().get_org(org), f"organization '{org}' not found")


def need_yes(ctx: Context, what: str) -> None:
    """Refuse (exit 2) a destructive command without `--yes`."""
    if not ctx.args.yes:
        raise UsageError(f"{what}; add --yes to confirm")

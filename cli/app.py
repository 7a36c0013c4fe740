"""What every command needs: parsed options, settings, the signed client and the output streams."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from pushjobs.cli.client import SignedClient, load_signing_key
from pushjobs.cli.render import format_table, rich_table
from pushjobs.cli.settings import Settings, key_file_warning, load_settings


@dataclass
class App:
    """Per-invocation context: options, lazily loaded settings and client, output streams."""

    args: argparse.Namespace
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _settings: Settings | None = None
    _client: SignedClient | None = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def knife(self) -> bool:
        return bool(getattr(self.args, "knife_compatible_exit", False))

    @property
    def color(self) -> bool:
        """Whether stdout gets colours and rich tables (a terminal, no --no-color/NO_COLOR)."""
        return not (
            getattr(self.args, "no_color", False)
            or self.environ.get("NO_COLOR")
            or not self.stdout.isatty()
        )

    def stderr_is_terminal(self) -> bool:
        """Whether the rich progress display can be used."""
        try:
            return self.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    @property
    def stdout_bytes(self) -> BinaryIO:
        return self.stdout.buffer  # type: ignore[attr-defined,no-any-return]

    def settings(self) -> Settings:
        """The settings of cli.md §1, loaded on first use (UsageError when incomplete)."""
        if self._settings is None:
            self._settings = load_settings(self.setting_flags(), self.environ)
        return self._settings

    def setting_flags(self) -> dict[str, Any]:
        """The command-line options that take part in the settings (None = not given)."""
        a = self.args
        return {
            "server_url": getattr(a, "server_url", None),
            "user": getattr(a, "user", None),
            "key": getattr(a, "key", None),
            "profile": getattr(a, "profile", None),
            "config": getattr(a, "config", None),
            "ca_file": getattr(a, "ca_file", None),
            "insecure": getattr(a, "insecure", False),
        }

    def client(self) -> SignedClient:
        """The signed HTTP client, created on first use."""
        if self._client is None:
            settings = self.settings()
            key = load_signing_key(settings)
            warning = key_file_warning(settings.key)
            if warning:
                self.warn(warning)
            self._client = SignedClient(
                settings, key, verbose=bool(getattr(self.args, "verbose", 0))
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def print(self, text: str = "") -> None:
        self.stdout.write(text if text.endswith("\n") else text + "\n")
        self.stdout.flush()

    def print_json(self, obj: Any) -> None:
        """Print a JSON document (UTF-8, indented, key order kept)."""
        self.print(json.dumps(obj, ensure_ascii=False, indent=2))

    def warn(self, message: str) -> None:
        """`WARNING: <message>` on stderr."""
        self.stderr.write(f"WARNING: {message}\n")
        self.stderr.flush()

    def note(self, message: str) -> None:
        """A message line on stderr."""
        self.stderr.write(message + "\n")
        self.stderr.flush()

    def print_table(self, header: list[str], rows: list[list[str]]) -> None:
        """A rich table on a colour terminal, else plain aligned columns."""
        if not self.color:
            self.stdout.write(format_table(header, rows))
            self.stdout.flush()
            return
        from rich.console import Console

        Console(file=self.stdout, highlight=False, soft_wrap=True).print(rich_table(header, rows))

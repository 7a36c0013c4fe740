"""Errors the CLI reports to the user: a message and an exit-code class, never a traceback."""

from __future__ import annotations


class CliError(Exception):
    """A failure reported as `ERROR: <message>` on stderr.

    `usage` is the usage text to print after the message (argparse errors, `No job specified.`).
    """

    is_usage = False

    def __init__(self, message: str, *, usage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class UsageError(CliError):
    """Bad command line or configuration: exit 3 (1 with --knife-compatible-exit)."""

    is_usage = True


class RequestError(CliError):
    """HTTP, network, search or response error: exit 3 (100 with --knife-compatible-exit)."""

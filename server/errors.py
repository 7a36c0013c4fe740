"""Errors shared across the server's parts."""

from __future__ import annotations


class StartupError(Exception):
    """The server cannot start; the message is shown to the operator as `error: <message>`."""

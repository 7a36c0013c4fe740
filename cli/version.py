"""The installed pushjobs version (for `--version` and the User-Agent)."""

from __future__ import annotations


def cli_version() -> str:
    """The installed distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pushjobs")
    except PackageNotFoundError:
        return "0+unknown"

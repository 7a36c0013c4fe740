"""The installed pushjobs version, shared by the server, the agent and the CLI."""

from __future__ import annotations


def installed_version() -> str:
    """The installed distribution's version, else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version  # only when asked

    try:
        return version("pushjobs")
    except PackageNotFoundError:
        from . import __version__

        return __version__

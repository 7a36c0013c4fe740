"""The installed pushjobs version (`pushjobs-server --version`)."""

from __future__ import annotations


def server_version() -> str:
    """The installed distribution's version, else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pushjobs")
    except PackageNotFoundError:
        from pushjobs.protocol import __version__

        return __version__

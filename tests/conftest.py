"""Shared pytest configuration: fixtures for real server processes are available to every test."""

from tests.support.server import server, server_factory  # noqa: F401

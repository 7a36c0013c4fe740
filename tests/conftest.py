"""Shared pytest configuration: fixtures for real server processes are available to every test."""

from tests.support.agents import agent_factory_fixture  # noqa: F401
from tests.support.server import server, server_factory  # noqa: F401

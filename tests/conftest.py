"""Shared pytest configuration: fixtures for real server processes are available to every test."""

from tests.support.agents import agent_factory_fixture  # noqa: F401
from tests.support.failure_logs import pytest_runtest_makereport  # noqa: F401
from tests.support.postgres import postgres  # noqa: F401
from tests.support.server import plain_server, server, server_factory  # noqa: F401

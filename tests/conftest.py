"""Shared pytest configuration: fixtures for real server processes are available to every test."""

from tests.support.agents import agent_factory_fixture  # noqa: F401
from tests.support.postgres import postgres  # noqa: F401
from tests.support.server import (  # noqa: F401
    plain_server,
    pytest_runtest_makereport,
    server,
    server_factory,
)

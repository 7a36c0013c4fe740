"""Every pipeline test again with the principal cache in front of the embedded backend: the
answers must not change (the cache is only faster)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.http_harness import Harness, make_harness
from tests.unit.server.http.cached_harness import Clock, serve_cached
from tests.unit.server.http.test_pipeline import *  # noqa: F403


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def h(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    harness = make_harness(tmp_path)
    harness.add_user("alice", 1, admin=True)
    harness.add_user("bob", 2)
    harness.add_user("outsider", 3, orgs=())
    harness.add_client("web1", 4)
    harness.add_client("web2", 5)
    await serve_cached(harness, clock)
    yield harness
    await harness.client.aclose()

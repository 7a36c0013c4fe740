"""Every authorization test again with the principal cache in front of the embedded backend:
grants made between requests still apply to the next request (a refusal is re-checked
against the database); a restriction applies once the cached answer is `max_age` old."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pushjobs.server.principals.cache import MAX_AGE
from tests.support.http_harness import ORG, Harness, error_of, make_harness
from tests.unit.server.http.cached_harness import Clock, serve_cached
from tests.unit.server.http.test_authz import *  # noqa: F403
from tests.unit.server.http.test_authz import CCPK_QUERY, CONFIG, denied


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def h(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    harness = make_harness(tmp_path)
    harness.add_user("alice", 1, admin=True)
    harness.add_user("bob", 2)
    harness.add_user("carol", 3)
    harness.add_client("web1", 4)
    harness.add_client("robot", 5, admin=True)
    await serve_cached(harness, clock)
    yield harness
    await harness.client.aclose()
    harness.store.close()


async def test_config_user_follows_the_read_rule(h: Harness, clock: Clock) -> None:
    """As in test_authz, but the new readers group restricts bob once the cached answer
    ("no readers group") is `MAX_AGE` old — the cache's bound for restrictions."""
    assert (
        await h.request("GET", f"{CONFIG}/web1", user="bob", query=CCPK_QUERY)
    ).status_code == 200
    h.store.create_group(ORG, "pushy_job_readers")
    h.store.add_group_members(ORG, "pushy_job_readers", users=["carol"])
    r = await h.request("GET", f"{CONFIG}/web1", user="bob", query=CCPK_QUERY)
    assert r.status_code == 200  # within the bound: the cached answer
    clock.now += MAX_AGE
    r = await h.request("GET", f"{CONFIG}/web1", user="bob", query=CCPK_QUERY)
    assert r.status_code == 403
    assert error_of(r) == denied("bob")
    r = await h.request("GET", f"{CONFIG}/web1", user="carol", query=CCPK_QUERY)
    assert r.status_code == 200
    assert "encoded_session_key" not in r.json()
    assert h.sessions.curve_entry_count() == 0

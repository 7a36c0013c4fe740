"""Authorization (http-api.md §5): groups, transitive membership, read/write/config rules.

Principals and groups live in a real SQLite store; requests are really signed and go through
the real app. For write routes, an `Accept: text/html` request answers 406 (step 9) exactly
when authorization (step 8) passed, so these tests do not depend on the job handlers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from pushjobs.server.principals.requestor import Requestor
from pushjobs.server.principals.rules import may_read, may_write, transitive_member
from tests.support.http_harness import CLIENT_CCPK, ORG, Harness, error_of, make_harness

NODE_STATES = f"/organizations/{ORG}/pushy/node_states"
JOBS = f"/organizations/{ORG}/pushy/jobs"
ABORT = f"{JOBS}/aaaaaaaaaaaa25fd67fa8715fd547d3d/abort"
CONFIG = f"/organizations/{ORG}/pushy/config"
CCPK_QUERY = "ccpk=" + quote(CLIENT_CCPK, safe="")
HTML = {"Accept": "text/html"}
JOB_ID = "aaaaaaaaaaaa25fd67fa8715fd547d3d"
FEED = f"/organizations/{ORG}/pushy/job_status_feed"
JOB_FEED = f"{FEED}/{JOB_ID}"


def denied(name: str) -> list[str]:
    return [f"User or client '{name}' does not have access to that action on this server."]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = make_harness(tmp_path)
    harness.add_user("alice", 1, admin=True)  # org admin
    harness.add_user("bob", 2)
    harness.add_user("carol", 3)
    harness.add_client("web1", 4)
    harness.add_client("robot", 5, admin=True)  # admin client
    yield harness
    await harness.client.aclose()
    harness.store.close()


async def read_status(h: Harness, user: str) -> int:
    return (await h.request("GET", NODE_STATES, user=user)).status_code


async def write_passes(h: Harness, user: str, path: str = JOBS) -> bool:
    """True when the write rule let `user` through (406 from step 9), False on the 403."""
    r = await h.request("POST", path, user=user, body=b"{}", headers=HTML)
    if r.status_code == 403:
        assert error_of(r) == denied(user)
        return False
    assert r.status_code == 406, r.text
    return True


# --- read rule


async def test_read_without_readers_group_allows_every_user_and_admin_clients(h: Harness) -> None:
    for user in ("alice", "bob", "carol", "robot"):
        assert await read_status(h, user) == 200


async def test_plain_client_may_not_read_without_readers_group(h: Harness) -> None:
    # A node key reads nothing but its own config (security issue 15, F4).
    for path in (NODE_STATES, f"{NODE_STATES}/web1", JOBS, f"{JOBS}/{JOB_ID}", FEED, JOB_FEED):
        r = await h.request("GET", path, user="web1")
        assert r.status_code == 403, path
        assert error_of(r) == denied("web1")
    r = await h.request("GET", f"{CONFIG}/web1", user="web1", query=CCPK_QUERY)
    assert r.status_code == 200


async def test_client_reads_as_member_of_writers_or_admins(h: Harness) -> None:
    h.add_client("deployer", 6)
    h.store.create_group(ORG, "pushy_job_writers")
    h.store.create_group(ORG, "ops")
    h.store.add_group_members(ORG, "pushy_job_writers", groups=["ops"])
    h.store.add_group_members(ORG, "ops", clients=["deployer"])
    assert await read_status(h, "deployer") == 200  # nested writer
    assert await read_status(h, "robot") == 200  # admin, not a writer
    assert await read_status(h, "web1") == 403
    assert await read_status(h, "bob") == 200  # users keep Chef's rule


async def test_readers_group_decides_for_clients_too(h: Harness) -> None:
    h.store.create_group(ORG, "pushy_job_readers")
    h.store.add_group_members(ORG, "pushy_job_readers", clients=["web1"])
    assert await read_status(h, "web1") == 200
    assert await read_status(h, "robot") == 403  # admin client, not a reader: no override


async def test_empty_readers_group_denies_everyone_even_admins(h: Harness) -> None:
    h.store.create_group(ORG, "pushy_job_readers")
    for user in ("alice", "bob", "web1", "robot"):
        r = await h.request("GET", NODE_STATES, user=user)
        assert r.status_code == 403
        assert error_of(r) == denied(user)


async def test_readers_direct_and_nested_members(h: Harness) -> None:
    store = h.store
    store.create_group(ORG, "pushy_job_readers")
    store.create_group(ORG, "ops")
    store.create_group(ORG, "oncall")
    store.add_group_members(ORG, "pushy_job_readers", users=["bob"], groups=["ops"])
    store.add_group_members(ORG, "ops", groups=["oncall"])
    store.add_group_members(ORG, "oncall", users=["carol"], clients=["web1"])
    assert await read_status(h, "bob") == 200
    assert await read_status(h, "carol") == 200  # two levels down
    assert await read_status(h, "web1") == 200  # a client, two levels down
    assert await read_status(h, "alice") == 403  # admin, no override
    assert await read_status(h, "robot") == 403


async def test_readers_with_a_cycle(h: Harness) -> None:
    store = h.store
    for group in ("pushy_job_readers", "a", "b"):
        store.create_group(ORG, group)
    store.add_group_members(ORG, "pushy_job_readers", groups=["a"])
    store.add_group_members(ORG, "a", groups=["b"])
    store.add_group_members(ORG, "b", groups=["a", "pushy_job_readers"], users=["carol"])
    assert await read_status(h, "carol") == 200
    assert await read_status(h, "bob") == 403  # the search ends despite the cycle


async def test_membership_is_by_kind(h: Harness) -> None:
    # a client "dual" is a reader; the user "dual" is not
    h.add_client("dual", 6)
    h.add_user("dual", 7)
    h.store.create_group(ORG, "pushy_job_readers")
    h.store.add_group_members(ORG, "pushy_job_readers", clients=["dual"])
    r = await h.request("GET", NODE_STATES, user="dual", key=h.keys["dual"])
    assert r.status_code == 403  # the user key verifies first: the user is the requestor
    assert error_of(r) == denied("dual")


async def test_readers_group_of_another_org_does_not_count(h: Harness) -> None:
    h.store.create_group("globex", "pushy_job_readers")
    assert await read_status(h, "bob") == 200


# --- write rule


async def test_write_without_writers_group_needs_admins(h: Harness) -> None:
    for path in (JOBS, ABORT):
        assert await write_passes(h, "alice", path)
        assert await write_passes(h, "robot", path)
        assert not await write_passes(h, "bob", path)
        assert not await write_passes(h, "web1", path)


async def test_write_via_nested_admins(h: Harness) -> None:
    h.store.create_group(ORG, "ops")
    h.store.add_group_members(ORG, "admins", groups=["ops"])
    h.store.add_group_members(ORG, "ops", users=["bob"])
    assert await write_passes(h, "bob")
    assert not await write_passes(h, "carol")


async def test_write_with_writers_group(h: Harness) -> None:
    store = h.store
    store.create_group(ORG, "pushy_job_writers")
    store.create_group(ORG, "deployers")
    store.add_group_members(ORG, "pushy_job_writers", users=["bob"], groups=["deployers"])
    store.add_group_members(ORG, "deployers", clients=["web1"], groups=["pushy_job_writers"])
    for path in (JOBS, ABORT):
        assert await write_passes(h, "bob", path)
        assert await write_passes(h, "web1", path)  # nested, through a cycle
        assert not await write_passes(h, "alice", path)  # admin, not a writer
        assert not await write_passes(h, "robot", path)
        assert not await write_passes(h, "carol", path)


async def test_empty_writers_group_denies_admins(h: Harness) -> None:
    h.store.create_group(ORG, "pushy_job_writers")
    assert not await write_passes(h, "alice")


async def test_write_ignores_readers_and_read_ignores_writers(h: Harness) -> None:
    h.store.create_group(ORG, "pushy_job_readers")
    h.store.create_group(ORG, "pushy_job_writers")
    h.store.add_group_members(ORG, "pushy_job_writers", users=["bob"])
    h.store.add_group_members(ORG, "pushy_job_readers", users=["carol"])
    assert await write_passes(h, "bob")
    assert await read_status(h, "bob") == 403
    assert not await write_passes(h, "carol")
    assert await read_status(h, "carol") == 200


async def test_without_admins_group_write_is_denied(h: Harness) -> None:
    # The embedded store never drops `admins`; another backend may have none.
    with sqlite3.connect(h.db_path) as conn:
        conn.execute(
            "DELETE FROM groups WHERE name = 'admins' AND org_id = "
            "(SELECT id FROM orgs WHERE name = ?)",
            (ORG,),
        )
    assert h.store.get_group(ORG, "admins") is None
    assert not await write_passes(h, "alice")
    assert await read_status(h, "alice") == 200


# --- config rule


async def test_config_client_needs_no_group(h: Harness) -> None:
    h.store.create_group(ORG, "pushy_job_readers")
    r = await h.request("GET", f"{CONFIG}/web1", user="web1", query=CCPK_QUERY)
    assert r.status_code == 200
    assert "encoded_session_key" in r.json()


async def test_config_client_name_must_match_even_for_admin_clients(h: Harness) -> None:
    r = await h.request("GET", f"{CONFIG}/web1", user="robot", query=CCPK_QUERY)
    assert r.status_code == 403
    assert error_of(r) == ["Client and node name must match"]


async def test_config_user_follows_the_read_rule(h: Harness) -> None:
    assert (
        await h.request("GET", f"{CONFIG}/web1", user="bob", query=CCPK_QUERY)
    ).status_code == 200
    h.store.create_group(ORG, "pushy_job_readers")
    h.store.add_group_members(ORG, "pushy_job_readers", users=["carol"])
    r = await h.request("GET", f"{CONFIG}/web1", user="bob", query=CCPK_QUERY)
    assert r.status_code == 403
    assert error_of(r) == denied("bob")
    r = await h.request("GET", f"{CONFIG}/web1", user="carol", query=CCPK_QUERY)
    assert r.status_code == 200
    assert "encoded_session_key" not in r.json()
    assert h.sessions.curve_entry_count() == 0


# --- authentication first


async def test_group_member_not_associated_gets_not_associated(h: Harness) -> None:
    h.store.create_group(ORG, "pushy_job_readers")
    h.store.add_group_members(ORG, "pushy_job_readers", users=["bob"])
    h.store.add_group_members(ORG, "admins", users=["bob"])
    # dissociate bob but keep the memberships (possible with another backend)
    with sqlite3.connect(h.db_path) as conn:
        conn.execute(
            "DELETE FROM org_users WHERE user_id = (SELECT id FROM users WHERE name = ?)", ("bob",)
        )
    r = await h.request("GET", NODE_STATES, user="bob")
    assert r.status_code == 403
    assert error_of(r) == ["'bob' is not associated with organization 'acme'"]
    r = await h.request("POST", JOBS, user="bob", body=b"{}", headers=HTML)
    assert error_of(r) == ["'bob' is not associated with organization 'acme'"]


# --- rule functions


async def test_rule_functions_on_the_embedded_backend(h: Harness) -> None:
    backend = h.deps.principals
    bob = Requestor("bob", "user")
    web1 = Requestor("web1", "client")
    assert await may_read(backend, ORG, bob)
    assert not await may_read(backend, ORG, web1)
    assert await may_read(backend, ORG, Requestor("robot", "client"))
    assert not await may_write(backend, ORG, bob)
    assert await may_write(backend, ORG, Requestor("alice", "user"))
    assert await may_write(backend, ORG, Requestor("robot", "client"))
    h.store.create_group(ORG, "x")
    h.store.create_group(ORG, "y")
    h.store.add_group_members(ORG, "x", groups=["y"])
    h.store.add_group_members(ORG, "y", groups=["x"], clients=["web1"])
    assert await transitive_member(backend, ORG, "x", web1)
    assert await backend.is_member(ORG, "y", web1)
    assert not await transitive_member(backend, ORG, "x", bob)
    assert not await transitive_member(backend, ORG, "missing", bob)
    assert not await transitive_member(backend, "globex", "x", web1)

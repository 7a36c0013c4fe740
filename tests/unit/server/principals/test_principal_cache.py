"""The principal cache (`cache.py`, `cached.py`, `watch.py`): hits, expiry, and invalidation by
the database's change log — also for changes made by another process. No timing: the clock is
a variable and the watch is polled by hand."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from pushjobs.protocol.keys import generate_rsa_key, public_key_pem
from pushjobs.server.principals.cache import PrincipalCache
from pushjobs.server.principals.cached import CachedPrincipals
from pushjobs.server.principals.embedded import EmbeddedPrincipals
from pushjobs.server.principals.requestor import Requestor
from pushjobs.server.principals.watch import PrincipalWatch
from pushjobs.server.store.interfaces import AsyncStore
from pushjobs.server.store.records import PRINCIPAL_CLIENT, PRINCIPAL_USER, Principal
from pushjobs.server.store.sqlite import SqliteStore

ORG = "acme"


@functools.cache
def pem(index: int) -> str:
    return public_key_pem(generate_rsa_key(2048).public_key())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingBackend:
    """The embedded backend over a real SQLite store, counting the reads that reach it."""

    def __init__(self, inner: EmbeddedPrincipals) -> None:
        self.inner = inner
        self.reads = 0

    async def org(self, name: str) -> Any:
        self.reads += 1
        return await self.inner.org(name)

    async def principals(self, org_name: str, name: str) -> Any:
        self.reads += 1
        return await self.inner.principals(org_name, name)

    async def group(self, org_name: str, name: str) -> Any:
        self.reads += 1
        return await self.inner.group(org_name, name)

    async def org_names(self) -> list[str]:
        self.reads += 1
        return await self.inner.org_names()

    async def client_principals(self, org_name: str, limit: int) -> Any:
        self.reads += 1
        return await self.inner.client_principals(org_name, limit)


class World:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.admin = SqliteStore(path)  # what operator commands write through
        self.admin.create_org(ORG)
        self.admin.create_client(ORG, "node1", pem(1))
        self.admin.create_client(ORG, "node2", pem(2))
        self.admin.create_user("alice", pem(3))
        self.admin.add_org_user(ORG, "alice", admin=True)
        embedded = EmbeddedPrincipals(AsyncStore(SqliteStore(path)))
        self.backend = CountingBackend(embedded)
        self.clock = Clock()
        self.cache = PrincipalCache()
        self.cached = CachedPrincipals(self.backend, self.cache, self.clock)
        self.watch = PrincipalWatch(changes=embedded, cache=self.cache)

    async def key_of(self, name: str) -> str | None:
        found = await self.cached.principals(ORG, name)
        keys = [p.public_key for p in found if p.type == PRINCIPAL_CLIENT]
        return keys[0] if keys else None


@pytest.fixture
async def world(tmp_path: Path) -> World:
    w = World(tmp_path / "pushjobs.db")
    assert await w.watch.poll_once()  # the baseline turns the cache on
    return w


async def test_nothing_is_cached_before_the_baseline(tmp_path: Path) -> None:
    w = World(tmp_path / "pushjobs.db")
    await w.key_of("node1")
    await w.key_of("node1")
    assert w.backend.reads == 2
    assert await w.watch.poll_once()
    await w.key_of("node1")
    await w.key_of("node1")
    assert w.backend.reads == 3


async def test_repeated_reads_are_hits(world: World) -> None:
    for _ in range(3):
        assert (await world.cached.org(ORG)) is not None
        assert await world.key_of("node1") == pem(1)
        assert await world.cached.group(ORG, "pushy_job_readers") is None  # absent: cached too
        assert await world.cached.is_member(ORG, "admins", _requestor("alice"))
    # org, principals, readers group, admins group: one read each
    assert world.backend.reads == 4


async def test_callers_get_their_own_lists(world: World) -> None:
    first = await world.cached.principals(ORG, "node1")
    first.clear()
    assert [p.name for p in await world.cached.principals(ORG, "node1")] == ["node1"]


async def test_unknown_principals_and_orgs_are_not_cached(world: World) -> None:
    assert await world.cached.principals(ORG, "node9") == []
    assert await world.cached.org("other") is None
    world.admin.create_client(ORG, "node9", pem(4))
    world.admin.create_org("other")
    assert await world.key_of("node9") == pem(4)
    assert (await world.cached.org("other")) is not None


async def test_a_key_change_is_seen_at_the_next_poll(world: World) -> None:
    assert await world.key_of("node1") == pem(1)
    world.admin.set_client_key(ORG, "node1", pem(5))
    assert await world.key_of("node1") == pem(1)  # until the poll: within POLL_INTERVAL
    assert await world.watch.poll_once()
    assert await world.key_of("node1") == pem(5)


async def test_a_deleted_client_is_refused_after_the_next_poll(world: World) -> None:
    assert await world.key_of("node2") == pem(2)
    world.admin.delete_client(ORG, "node2")
    assert await world.watch.poll_once()
    assert await world.cached.principals(ORG, "node2") == []


async def test_only_the_changed_client_is_dropped(world: World) -> None:
    await world.key_of("node1")
    await world.key_of("node2")
    reads = world.backend.reads
    world.admin.set_client_key(ORG, "node1", pem(5))
    assert await world.watch.poll_once()
    await world.key_of("node1")
    await world.key_of("node2")
    assert world.backend.reads == reads + 1


async def test_a_change_by_another_process_is_seen(world: World) -> None:
    assert await world.key_of("node1") == pem(1)
    script = textwrap.dedent(
        """
        import sys
        from pushjobs.server.store.sqlite import SqliteStore
        store = SqliteStore(sys.argv[1])
        store.set_client_key("acme", "node1", sys.argv[2])
        store.delete_client("acme", "node2")
        store.close()
        """
    )
    subprocess.run([sys.executable, "-c", script, str(world.path), pem(6)], check=True, timeout=60)
    assert await world.watch.poll_once()
    assert await world.key_of("node1") == pem(6)
    assert await world.cached.principals(ORG, "node2") == []


async def test_users_groups_and_orgs_expire_after_max_age(world: World) -> None:
    found = await world.cached.principals(ORG, "alice")
    assert [p.type for p in found] == [PRINCIPAL_USER]
    await world.cached.group(ORG, "admins")
    await world.cached.org(ORG)
    reads = world.backend.reads
    world.clock.now += world.cache.max_age
    await world.cached.principals(ORG, "alice")
    await world.cached.group(ORG, "admins")
    await world.cached.org(ORG)
    assert world.backend.reads == reads + 3


async def test_client_keys_expire_after_client_max_age(world: World) -> None:
    await world.key_of("node1")
    world.clock.now += world.cache.max_age
    await world.key_of("node1")
    assert world.backend.reads == 1  # kept by the change log, not by max_age
    world.clock.now += world.cache.client_max_age
    await world.key_of("node1")
    assert world.backend.reads == 2


async def test_a_read_that_began_before_an_invalidation_is_not_stored() -> None:
    cache = PrincipalCache()
    cache.activate()
    epoch = cache.epoch
    cache.invalidate_clients(["node1"])  # a change was seen while the read ran
    cache.put_principals(ORG, "node1", [_client("node1", 1)], 0.0, epoch)
    assert cache.principals(ORG, "node1", 0.0) is None
    cache.put_principals(ORG, "node1", [_client("node1", 1)], 0.0, cache.epoch)
    assert cache.principals(ORG, "node1", 0.0) is not None


async def test_a_failing_change_log_turns_the_cache_off(world: World) -> None:
    await world.key_of("node1")

    class Broken:
        async def client_key_changes(self, after: int | None) -> tuple[int, list[Any]]:
            raise OSError("disk gone")

    broken = PrincipalWatch(changes=Broken(), cache=world.cache)
    assert not await broken.poll_once()
    await world.key_of("node1")
    await world.key_of("node1")
    assert world.backend.reads == 3  # everything from the database while off
    world.admin.set_client_key(ORG, "node1", pem(5))
    assert await world.watch.poll_once()  # the cursor survived: the change is seen
    assert await world.key_of("node1") == pem(5)


async def test_concurrent_misses_share_one_read(world: World) -> None:
    results: list[str | None] = []

    async def ask() -> None:
        results.append(await world.key_of("node1"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
    assert results == [pem(1)] * 5
    assert world.backend.reads == 1


def _requestor(name: str) -> Requestor:
    return Requestor(name, PRINCIPAL_USER)


def _client(name: str, index: int) -> Principal:
    return Principal(name, PRINCIPAL_CLIENT, pem(index), True)


async def test_the_fresh_view_reads_the_database_and_refreshes_the_cache(world: World) -> None:
    """The pipeline re-checks a refused request with `fresh()`: a new key works at once."""
    assert await world.key_of("node1") == pem(1)
    world.admin.set_client_key(ORG, "node1", pem(5))  # no poll yet
    fresh = world.cached.fresh()
    found = await fresh.principals(ORG, "node1")
    assert [p.public_key for p in found] == [pem(5)]
    reads = world.backend.reads
    assert await world.key_of("node1") == pem(5)  # the cache has the new key now
    world.admin.delete_client(ORG, "node1")
    assert await fresh.principals(ORG, "node1") == []
    assert await world.cached.principals(ORG, "node1") == []  # forgotten, read again
    assert world.backend.reads == reads + 2


async def test_warming_reads_every_client_key_at_once(world: World) -> None:
    world.admin.create_client(ORG, "alice", pem(4))  # a client named like a user
    assert await world.cached.warm() == 3
    reads = world.backend.reads
    assert reads == 2  # the organizations, then one read of the org's clients
    assert await world.key_of("node1") == pem(1)
    assert await world.key_of("node2") == pem(2)
    found = await world.cached.principals(ORG, "alice")
    assert [(p.type, p.public_key, p.org_member) for p in found] == [
        (PRINCIPAL_USER, pem(3), True),
        (PRINCIPAL_CLIENT, pem(4), True),
    ]
    assert world.backend.reads == reads  # all from memory
    world.clock.now += 2  # "alice" names a user too: kept for MAX_AGE only
    await world.cached.principals(ORG, "alice")
    await world.key_of("node1")
    assert world.backend.reads == reads + 1


async def test_warming_stops_at_the_capacity_and_respects_invalidations(tmp_path: Path) -> None:
    w = World(tmp_path / "pushjobs.db")
    assert await w.cached.warm() == 0  # the cache is off: nothing stored
    w.cache = PrincipalCache(capacity=1)
    w.cached = CachedPrincipals(w.backend, w.cache, w.clock)
    w.cache.activate()
    assert await w.cached.warm() == 1
    w.cache.invalidate_clients(["node1"])
    assert w.cache.principals(ORG, "node1", w.clock.now) is None


async def test_the_watch_warms_the_cache_when_it_comes_on(tmp_path: Path) -> None:
    w = World(tmp_path / "pushjobs.db")
    warmed = trio.Event()

    async def warm() -> int:
        stored = await w.cached.warm()
        warmed.set()
        return stored

    w.watch = PrincipalWatch(changes=w.backend.inner, cache=w.cache, warm=warm)
    async with trio.open_nursery() as nursery:
        await nursery.start(w.watch.run)
        await warmed.wait()
        nursery.cancel_scope.cancel()
    reads = w.backend.reads
    assert reads == 2
    assert await w.key_of("node2") == pem(2)
    assert w.backend.reads == reads

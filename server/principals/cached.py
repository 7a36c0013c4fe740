"""The embedded backend behind `PrincipalCache`: what a signed request reads, from memory when
the cache has it (see `cache.py` for what is kept and for how long)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from pushjobs.server.principals.rules import transitive_member

if TYPE_CHECKING:
    from pushjobs.server.principals.cache import PrincipalCache
    from pushjobs.server.principals.requestor import Requestor
    from pushjobs.server.store.records import Group, Org, Principal


T = TypeVar("T")


class _Flight:
    """One read in progress; callers that miss meanwhile share its answer."""

    __slots__ = ("began", "done", "epoch", "ok", "value")

    def __init__(self, began: float, epoch: int) -> None:
        self.began = began  # the clock and the cache's epoch when the read began
        self.epoch = epoch
        self.done = trio.Event()
        self.ok = False
        self.value: Any = None


class PrincipalReads(Protocol):
    """What the cache is filled from (the embedded backend)."""

    async def org(self, name: str) -> Org | None: ...
    async def principals(self, org_name: str, name: str) -> list[Principal]: ...
    async def group(self, org_name: str, name: str) -> Group | None: ...
    async def org_names(self) -> list[str]: ...
    async def client_principals(
        self, org_name: str, limit: int
    ) -> list[tuple[str, list[Principal]]]: ...


class CachedPrincipals:
    """A `PrincipalBackend` answering from `cache`, reading `backend` on a miss.

    `clock` is monotonic seconds; an answer's age counts from when its read began.
    Concurrent misses of one key share one read (a fleet reconnecting asks for the same
    organization at once); when that read fails, each caller reads for itself.
    """

    def __init__(
        self,
        backend: PrincipalReads,
        cache: PrincipalCache,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._cache = cache
        self._clock = clock
        self._flights: dict[Hashable, _Flight] = {}

    async def org(self, name: str) -> Org | None:
        """The organization named `name`, or None."""
        found = self._cache.org(name, self._clock())
        if found is None:
            found, flight = await self._shared(("org", name), partial(self._backend.org, name))
            self._cache.put_org(found, name, flight.began, flight.epoch)
        return found

    async def principals(self, org_name: str, name: str) -> list[Principal]:
        """The user and the client called `name`, whichever exist (a new list)."""
        found = self._cache.principals(org_name, name, self._clock())
        if found is None:
            read = partial(self._backend.principals, org_name, name)
            shared, flight = await self._shared(("principals", org_name, name), read)
            self._cache.put_principals(org_name, name, shared, flight.began, flight.epoch)
            found = list(shared)
        return found

    async def group(self, org_name: str, name: str) -> Group | None:
        """A group of the organization, or None when it does not exist."""
        hit, found = self._cache.group(org_name, name, self._clock())
        if not hit:
            read = partial(self._backend.group, org_name, name)
            found, flight = await self._shared(("group", org_name, name), read)
            self._cache.put_group(org_name, name, found, flight.began, flight.epoch)
        return found

    async def is_member(self, org_name: str, group: str, requestor: Requestor) -> bool:
        """True when the requestor is a transitive member of the group."""
        return await transitive_member(self, org_name, group, requestor)

    async def warm(self) -> int:
        """Read every organization's client keys into the cache, a few reads in all, up to its
        capacity; returns how many answers were stored. After a restart the whole fleet fetches
        its config within one heartbeat interval: each request then finds its key in memory
        instead of waiting for a database read of its own."""
        if not self._cache.active:
            return 0
        began, epoch = self._clock(), self._cache.epoch
        room = self._cache.capacity
        stored = 0
        for org_name in await self._backend.org_names():
            if stored >= room:
                break
            for name, found in await self._backend.client_principals(org_name, room - stored):
                self._cache.put_principals(org_name, name, found, began, epoch)
                stored += 1
        return stored if epoch == self._cache.epoch else 0

    def fresh(self) -> FreshPrincipals:
        """The same backend reading the database every time (and refreshing the cache)."""
        return FreshPrincipals(self._backend, self._cache, self._clock)

    async def _shared(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> tuple[T, _Flight]:
        """`await read()`, or the answer of the same read already in progress; with the flight
        (when and in which cache epoch its read began)."""
        flight = self._flights.get(key)
        if flight is not None:
            await flight.done.wait()
            if flight.ok:
                value: T = flight.value
                return value, flight
        flight = self._flights[key] = _Flight(self._clock(), self._cache.epoch)
        try:
            value = await read()
            flight.value, flight.ok = value, True
            return value, flight
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()


class FreshPrincipals:
    """A `PrincipalBackend` that reads `backend` every time and stores the answers in `cache`.

    The pipeline re-checks a refused request with it, so that what an operator grants — a new
    key, a membership, a group — applies to the next request, as without a cache.
    """

    def __init__(
        self, backend: PrincipalReads, cache: PrincipalCache, clock: Callable[[], float]
    ) -> None:
        self._backend = backend
        self._cache = cache
        self._clock = clock

    async def org(self, name: str) -> Org | None:
        began, epoch = self._clock(), self._cache.epoch
        found = await self._backend.org(name)
        self._cache.put_org(found, name, began, epoch)
        return found

    async def principals(self, org_name: str, name: str) -> list[Principal]:
        began, epoch = self._clock(), self._cache.epoch
        found = await self._backend.principals(org_name, name)
        self._cache.put_principals(org_name, name, found, began, epoch)
        return list(found)

    async def group(self, org_name: str, name: str) -> Group | None:
        began, epoch = self._clock(), self._cache.epoch
        found = await self._backend.group(org_name, name)
        self._cache.put_group(org_name, name, found, began, epoch)
        return found

    async def is_member(self, org_name: str, group: str, requestor: Requestor) -> bool:
        return await transitive_member(self, org_name, group, requestor)

"""The principal cache: recent answers of the embedded backend, so that a signed request makes
no database read (sans-I/O: the caller passes `now`; `cached.py` does the reading).

What is cached, and for how long (security.md §1):

- a client's key (a principals answer naming only a client): until the database's change log
  (migration v3: every key change and client deletion, by any process or server) names the
  client — `PrincipalWatch` polls it every `watch.POLL_INTERVAL` seconds — and at most
  `CLIENT_MAX_AGE` seconds;
- organizations, groups (also their absence) and principals answers naming a user: at most
  `MAX_AGE` seconds (users, memberships and groups have no change log);
- nothing for an unknown principal or organization: a new one works at the next request.

A read that started before an invalidation is not stored (`epoch`): it may predate the change.
While `active` is False (no change-log baseline yet, or the last poll failed) nothing is served
or stored, so every request reads the database, as without a cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from pushjobs.server.lru import LruCache
from pushjobs.server.store.records import PRINCIPAL_CLIENT

if TYPE_CHECKING:
    from pushjobs.server.store.records import Group, Org, Principal

MAX_AGE = 1.0
CLIENT_MAX_AGE = 60.0
CAPACITY = 20_000  # entries of each kind; least recently used ones go first

K = TypeVar("K")
V = TypeVar("V")


class _Entry(Generic[V]):
    __slots__ = ("expires", "value")

    def __init__(self, value: V, expires: float) -> None:
        self.value = value
        self.expires = expires


class PrincipalCache:
    """Organizations, principals answers and groups by name, with their expiry times."""

    def __init__(
        self,
        *,
        max_age: float = MAX_AGE,
        client_max_age: float = CLIENT_MAX_AGE,
        capacity: int = CAPACITY,
    ) -> None:
        self.max_age = max_age
        self.client_max_age = client_max_age
        self.capacity = capacity
        self.active = False
        self.epoch = 0  # +1 at every invalidation
        self._orgs: LruCache[str, _Entry[Org]] = LruCache(capacity)
        self._principals: LruCache[tuple[str, str], _Entry[tuple[Principal, ...]]]
        self._principals = LruCache(capacity)
        self._groups: LruCache[tuple[str, str], _Entry[Group | None]] = LruCache(capacity)

    # ---- reading -------------------------------------------------------------------------

    def org(self, name: str, now: float) -> Org | None:
        """The cached organization, or None (not cached: ask the store)."""
        return _fresh(self._orgs, name, now) if self.active else None

    def principals(self, org_name: str, name: str, now: float) -> list[Principal] | None:
        """The cached principals answer (a new list), or None (not cached)."""
        if not self.active:
            return None
        found = _fresh(self._principals, (org_name, name), now)
        return None if found is None else list(found)

    def group(self, org_name: str, name: str, now: float) -> tuple[bool, Group | None]:
        """`(True, group or None when it does not exist)` when cached, else `(False, None)`."""
        if not self.active:
            return False, None
        entry = self._groups.get((org_name, name))
        if entry is None or entry.expires <= now:
            return False, None
        return True, entry.value

    # ---- storing (`epoch`: the cache's epoch when the read began) --------------------------

    def put_org(self, org: Org | None, name: str, now: float, epoch: int) -> None:
        """Store a read's answer; an absent organization is forgotten, not stored."""
        if org is None:
            self._orgs.pop(name)
        elif self._may_store(epoch):
            self._orgs.put(name, _Entry(org, now + self.max_age))

    def put_principals(
        self, org_name: str, name: str, found: Iterable[Principal], now: float, epoch: int
    ) -> None:
        """Store a read's answer; an empty one (nobody of that name) is forgotten, not stored."""
        answer = tuple(found)
        if not answer:
            self._principals.pop((org_name, name))
            return
        if not self._may_store(epoch):
            return
        clients_only = all(p.type == PRINCIPAL_CLIENT for p in answer)
        age = self.client_max_age if clients_only else self.max_age
        self._principals.put((org_name, name), _Entry(answer, now + age))

    def put_group(
        self, org_name: str, name: str, group: Group | None, now: float, epoch: int
    ) -> None:
        if self._may_store(epoch):
            self._groups.put((org_name, name), _Entry(group, now + self.max_age))

    def _may_store(self, epoch: int) -> bool:
        return self.active and epoch == self.epoch

    # ---- invalidation (`PrincipalWatch`) ---------------------------------------------------

    def invalidate_clients(self, names: Iterable[str]) -> int:
        """Forget the principals answers of these names (in every organization: the change log
        names an organization by id); returns how many were dropped."""
        wanted = set(names)
        if not wanted:
            return 0
        self.epoch += 1
        return self._principals.prune(lambda entry: not wanted.isdisjoint(_names(entry)))

    def activate(self) -> None:
        """The change log is being followed: answers may be served and stored (reads begun
        before are not: they may predate the change log's cursor)."""
        if not self.active:
            self.active = True
            self.epoch += 1

    def deactivate(self) -> None:
        """The change log cannot be read: forget everything, serve and store nothing."""
        self.active = False
        self.epoch += 1
        for cache in (self._orgs, self._principals, self._groups):
            cache.prune(lambda _entry: True)


def _fresh(cache: LruCache[K, _Entry[V]], key: K, now: float) -> V | None:
    entry = cache.get(key)
    if entry is None or entry.expires <= now:
        return None
    return entry.value


def _names(entry: _Entry[tuple[Principal, ...]]) -> set[str]:
    return {p.name for p in entry.value}

"""Which organizations exist, for the broker's hot path (wire-protocol.md §16 step 7). Pure.

The broker never waits for the database or a principal backend while it reads messages: the
cache answers at once. An expired entry is still used while one background look-up refreshes
it. A name never seen parks its messages, in order, until one look-up answers, so a flood of
made-up names cannot stall other nodes' traffic; look-ups and parked messages are bounded.
The caller passes `now` (monotonic), `park`s the messages `admit` finds of an unknown name, starts
the look-ups `take_lookups` names and reports each answer to `resolve`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Generic, TypeVar

from pushjobs.server.lru import LruCache

M = TypeVar("M")

ORG_TTL = 30.0  # an existing organization is re-checked after this long
ORG_NEGATIVE_TTL = 5.0  # an unknown name is re-checked sooner (it may just have been created)
ORG_CACHE_MAX = 10_000
MAX_ORG_LOOKUPS = 256  # organizations being looked up at once (their messages are parked)
MAX_PARKED = 10_000  # messages parked for all of them together


class Gate(enum.Enum):
    """`OrgCache.admit` when it does not drop the message."""

    EXISTS = "exists"  # go on
    UNKNOWN = "unknown"  # never seen (or forgotten): `park` the message until it is looked up


class OrgCache(Generic[M]):
    """Organizations known to exist or not (with expiry), look-ups wanted, messages parked."""

    def __init__(
        self,
        *,
        ttl: float = ORG_TTL,
        negative_ttl: float = ORG_NEGATIVE_TTL,
        capacity: int = ORG_CACHE_MAX,
        max_lookups: int = MAX_ORG_LOOKUPS,
        max_parked: int = MAX_PARKED,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_lookups = max_lookups
        self.max_parked = max_parked
        self._entries: LruCache[str, tuple[bool, float]] = LruCache(capacity)  # (exists, expiry)
        self._looking_up: set[str] = set()
        self._due: list[str] = []  # look-ups wanted and not yet handed to the caller
        self._parked: dict[str, list[M]] = {}
        self._parked_count = 0

    def admit(self, org: str, now: float) -> Gate | str:
        """Whether a message naming `org` goes on, must be parked, or — a `str` — is dropped
        and why. An expired entry still answers (and asks for a refresh)."""
        cached = self._entries.get(org)
        if cached is None:
            return Gate.UNKNOWN
        exists, expiry = cached
        if expiry <= now:
            self._want(org)
        if exists:
            return Gate.EXISTS
        return f"organization {org!r} does not exist"

    def park(self, org: str, message: M) -> str | None:
        """Keep `message` until `org` is looked up (asking for the look-up); else why not."""
        parked = self._parked.get(org)
        if parked is None:
            if len(self._parked) >= self.max_lookups:
                return "too many organization look-ups in progress"
            self._want(org)
            parked = self._parked[org] = []
        if self._parked_count >= self.max_parked:
            return "organization look-up backlog full"
        parked.append(message)
        self._parked_count += 1
        return None

    def take_lookups(self) -> Sequence[str]:
        """The organizations to look up now; each is named once until `resolve` answers it."""
        if not self._due:
            return ()
        due, self._due = self._due, []
        return due

    def resolve(self, org: str, exists: bool | None, now: float) -> list[M]:
        """Record a look-up's answer (None: it failed, nothing is cached, a later message asks
        again) and return the messages that waited for it, in arrival order."""
        self._looking_up.discard(org)
        if exists is not None:
            self._entries.put(org, (exists, now + (self.ttl if exists else self.negative_ttl)))
        parked = self._parked.pop(org, [])
        self._parked_count -= len(parked)
        return parked

    def prune(self, now: float) -> int:
        """Drop expired entries once the cache is half full; returns how many."""
        if len(self._entries) <= self._entries.capacity // 2:
            return 0
        return self._entries.prune(lambda entry: entry[1] <= now)

    def __len__(self) -> int:
        return len(self._entries)

    def _want(self, org: str) -> None:
        if org not in self._looking_up:
            self._looking_up.add(org)
            self._due.append(org)

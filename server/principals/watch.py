"""`PrincipalWatch`: the background task that keeps `PrincipalCache` in step with the database's
change log of client keys (migration v3), which records every key change and client deletion
whichever process (operator command, another server of a cluster) made it.

Every `POLL_INTERVAL` seconds it reads the changes after its cursor and drops the named clients
from the cache. Until the first read succeeds, and whenever a read fails, the cache is off
(everything is read from the database), so it never answers from a state it cannot follow.
Each time the cache comes on, every client key is read into it at once (`warm`), so a fleet
reconnecting right after a restart makes no database read per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import trio

log = logging.getLogger("pushjobs.server.principals.watch")

POLL_INTERVAL = 1.0


class ClientKeyChanges(Protocol):
    """The change log: `(cursor, [(org id, client name)])` after `after` (None: the cursor)."""

    async def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]: ...


class InvalidatedCache(Protocol):
    """What the watch does to the cache."""

    def invalidate_clients(self, names: Iterable[str]) -> int: ...
    def activate(self) -> None: ...
    def deactivate(self) -> None: ...


class PrincipalWatch:
    """Follows the change log into the cache (see the module docstring)."""

    def __init__(
        self,
        *,
        changes: ClientKeyChanges,
        cache: InvalidatedCache,
        interval: float = POLL_INTERVAL,
        warm: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._changes = changes
        self._cache = cache
        self.interval = interval
        self._warm = warm
        self._cursor: int | None = None
        self._failing = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take the baseline, report started, then poll until cancelled; each time the cache
        comes on (the first baseline, or after a failed read) it is warmed."""
        on = await self.poll_once()
        task_status.started()
        while True:
            if on:
                await self._warm_cache()
            await trio.sleep(self.interval)
            was_off = self._failing
            on = await self.poll_once() and was_off

    async def _warm_cache(self) -> None:
        if self._warm is None:
            return
        began = time.monotonic()
        try:
            stored = await self._warm()
        except Exception as exc:  # the cache still fills one request at a time
            log.warning("principal cache: cannot preload client keys: %s", exc)
            return
        log.info(
            "principal cache: %d client key(s) preloaded in %.0f ms",
            stored,
            (time.monotonic() - began) * 1000,
        )

    async def poll_once(self) -> bool:
        """One read of the change log; False (and the cache off) when it failed."""
        try:
            cursor, rows = await self._changes.client_key_changes(self._cursor)
        except Exception as exc:
            self._cache.deactivate()
            if not self._failing:
                log.warning("principal cache off: cannot read client key changes: %s", exc)
            self._failing = True
            return False
        if rows:
            dropped = self._cache.invalidate_clients(name for _org_id, name in rows)
            log.debug("principal cache: %d change(s), %d answer(s) dropped", len(rows), dropped)
        self._cursor = cursor
        if self._failing:
            log.info("principal cache on again")
        self._failing = False
        self._cache.activate()
        return True

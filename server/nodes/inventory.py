"""The node inventory writer: nodes seen connecting and the labels they report, batched into
the store in the background (http-api.md §7.7), so `node_states?all=true` knows who ever
connected and labels survive a restart and are shared by a cluster's servers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from pushjobs.server.store.records import InventoryUpdate

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0  # seconds between two writes at most once per interval


class InventoryWriter(Protocol):
    async def record_inventory(self, updates: Sequence[InventoryUpdate]) -> None: ...


class InventoryRecorder:
    """Pending inventory updates, one per node (a newer one replaces it, its labels kept)."""

    def __init__(
        self,
        store: InventoryWriter,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._pending: dict[tuple[str, str], InventoryUpdate] = {}
        self._wakeup = trio.Event()

    def seen(self, org: str, node: str) -> None:
        """The node connected (a node state was created)."""
        self._add(InventoryUpdate(org, node, self._clock()))

    def labels(self, org: str, node: str, labels: dict[str, str]) -> None:
        """The node reported (new) labels."""
        self._add(InventoryUpdate(org, node, self._clock(), dict(labels)))

    def pending(self) -> int:
        return len(self._pending)

    def take(self) -> list[InventoryUpdate]:
        """Every pending update; none is pending afterwards."""
        updates, self._pending = list(self._pending.values()), {}
        return updates

    def _add(self, update: InventoryUpdate) -> None:
        key = (update.org_name, update.node_name)
        old = self._pending.get(key)
        if old is not None and update.labels is None and old.labels is not None:
            update = InventoryUpdate(update.org_name, update.node_name, update.seen_at, old.labels)
        self._pending[key] = update
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write pending updates, at most one batch per interval, until cancelled."""
        task_status.started()
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            updates = self.take()
            try:
                await self._store.record_inventory(updates)
            except Exception as exc:
                log.warning("cannot record %d inventory update(s): %s", len(updates), exc)
                for update in updates:  # retried with the next batch unless superseded
                    if (update.org_name, update.node_name) not in self._pending:
                        self._add(update)
            await trio.sleep(self._interval)

"""The background pruning task: a `RetentionPass` every `[retention] interval`.

The first pass runs shortly after start. Each batch is one store transaction, with a short
pause between batches so jobs' writes and API reads are never held up for long. Several
servers of a cluster may prune at once: a batch skips rows another server is deleting, and
deleting what is gone already deletes nothing (docs/decisions.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from pushjobs.server.retention.plan import BATCH_PAUSE, JOBS, RetentionPass, RetentionPolicy
from pushjobs.server.store.interfaces import StoreError

if TYPE_CHECKING:
    from pushjobs.server.store.interfaces import AsyncRetentionStore

log = logging.getLogger("pushjobs.server.retention")


class RetentionService:
    """Prunes old finished jobs and their output in the background (nothing when disabled)."""

    def __init__(
        self,
        policy: RetentionPolicy,
        store: AsyncRetentionStore,
        *,
        wall_clock: Callable[[], float] = time.time,
        pause: float = BATCH_PAUSE,
    ) -> None:
        self.policy = policy
        self._store = store
        self._wall_clock = wall_clock
        self._pause = pause

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.policy.enabled:
            return
        await trio.sleep(self.policy.first_delay)
        while True:
            await self.prune_once()
            await trio.sleep(self.policy.interval)

    async def prune_once(self) -> RetentionPass:
        """One pass, batch after batch; logs what it removed."""
        work = RetentionPass(self.policy, self._wall_clock())
        batch = work.next_batch()
        while batch is not None:
            try:
                if batch.kind == JOBS:
                    removed = await self._store.prune_jobs_batch(batch.cutoff, batch.limit)
                else:
                    removed = await self._store.prune_outputs_batch(batch.cutoff, batch.limit)
            except StoreError as exc:
                log.warning("retention: pruning stopped, retried in the next pass: %s", exc)
                work.abandon()
                break
            except Exception:
                # e.g. a PostgreSQL serialization failure: never take the server down for it
                log.exception("retention: pruning failed, retried in the next pass")
                work.abandon()
                break
            work.batch_done(removed)
            batch = work.next_batch()
            if batch is not None and removed:
                await trio.sleep(self._pause)
        for line in work.report():
            log.info("%s", line)
        return work

"""The inventory recorder: one pending update per node, written in batches."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from pushjobs.server.nodes.inventory import InventoryRecorder
from pushjobs.server.store.records import InventoryUpdate


class Store:
    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[InventoryUpdate]] = []
        self.fail = fail
        self.written = trio.Event()

    async def record_inventory(self, updates: Sequence[InventoryUpdate]) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("disk full")
        self.batches.append(list(updates))
        self.written.set()


def test_a_connect_after_labels_keeps_them_pending() -> None:
    recorder = InventoryRecorder(Store(), clock=lambda: 5.0)
    recorder.labels("acme", "web1", {"role": "web"})
    recorder.seen("acme", "web1")
    recorder.seen("acme", "db1")
    assert recorder.take() == [
        InventoryUpdate("acme", "web1", 5.0, {"role": "web"}),
        InventoryUpdate("acme", "db1", 5.0),
    ]
    assert recorder.take() == []


async def test_updates_are_written_and_retried_after_a_failure() -> None:
    store = Store(fail=1)
    recorder = InventoryRecorder(store, clock=lambda: 1.0, interval=0.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        recorder.labels("acme", "web1", {"role": "web"})
        with trio.fail_after(5):
            await store.written.wait()
        nursery.cancel_scope.cancel()
    assert store.batches == [[InventoryUpdate("acme", "web1", 1.0, {"role": "web"})]]

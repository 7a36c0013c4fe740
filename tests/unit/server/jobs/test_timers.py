"""TimerQueue on trio's (mock) clock: order, equal deadlines, cancel, failing callbacks."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from pushjobs.server.jobs.timers import TimerQueue


@pytest.fixture
async def queue():
    timers = TimerQueue()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        yield timers
        nursery.cancel_scope.cancel()


async def test_fires_in_deadline_order_on_the_trio_clock(queue, autojump_clock) -> None:
    fired: list[tuple[str, float]] = []
    start = trio.current_time()
    queue.call_later(3, lambda: fired.append(("c", trio.current_time() - start)))
    queue.call_later(1, lambda: fired.append(("a", trio.current_time() - start)))
    queue.call_later(2, lambda: fired.append(("b", trio.current_time() - start)))
    await trio.sleep(5)
    assert fired == [("a", 1), ("b", 2), ("c", 3)]


async def test_equal_deadlines_fire_in_the_order_set(queue, autojump_clock) -> None:
    fired: list[int] = []
    for i in range(5):
        queue.call_later(1, lambda i=i: fired.append(i))
    await trio.sleep(2)
    assert fired == [0, 1, 2, 3, 4]


async def test_zero_delay_fires_at_the_next_turn(queue, autojump_clock) -> None:
    fired: list[str] = []
    queue.call_later(0, lambda: fired.append("now"))
    assert fired == []
    await trio.testing.wait_all_tasks_blocked()
    assert fired == ["now"]


async def test_an_earlier_timer_wakes_a_sleeping_queue(queue, autojump_clock) -> None:
    fired: list[str] = []
    queue.call_later(100, lambda: fired.append("late"))
    await trio.sleep(1)  # the queue now sleeps until +100
    start = trio.current_time()
    queue.call_later(1, lambda: fired.append(f"early at +{trio.current_time() - start:g}"))
    await trio.sleep(2)
    assert fired == ["early at +1"]


async def test_cancelled_timer_never_fires_and_drops_its_callback(queue, autojump_clock) -> None:
    fired: list[str] = []
    timer = queue.call_later(1, lambda: fired.append("cancelled"))
    queue.call_later(1, lambda: fired.append("kept"))
    timer.cancel()
    assert timer.cancelled
    assert timer.fn() is None  # the closure is gone at once
    await trio.sleep(2)
    assert fired == ["kept"]


async def test_cancel_after_firing_is_harmless(queue, autojump_clock) -> None:
    fired: list[str] = []
    timer = queue.call_later(1, lambda: fired.append("once"))
    await trio.sleep(2)
    timer.cancel()
    await trio.sleep(2)
    assert fired == ["once"]


async def test_a_failing_callback_is_logged_and_the_rest_still_fire(
    queue, autojump_clock, caplog
) -> None:
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    queue.call_later(1, boom)
    queue.call_later(1, lambda: fired.append("after"))
    with caplog.at_level(logging.ERROR, logger="pushjobs.server.jobs"):
        await trio.sleep(2)
    assert fired == ["after"]
    assert [r.getMessage() for r in caplog.records] == ["timer callback failed"]


async def test_a_callback_may_set_timers(queue, autojump_clock) -> None:
    fired: list[float] = []
    start = trio.current_time()

    def again() -> None:
        fired.append(trio.current_time() - start)
        if len(fired) < 3:
            queue.call_later(1, again)

    queue.call_later(1, again)
    await trio.sleep(10)
    assert fired == [1, 2, 3]

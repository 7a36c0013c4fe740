"""ConnectionWatch: a disconnect without a retry is reported once, after the grace."""

from __future__ import annotations

import struct

import pytest
import zmq

from pushjobs.agent.connection_watch import ConnectionWatch, parse_monitor_event


def test_a_retried_disconnect_is_not_abandoned() -> None:
    watch = ConnectionWatch(grace=2.0)
    watch.event(zmq.EVENT_DISCONNECTED, 10.0)
    watch.event(zmq.EVENT_CONNECT_RETRIED, 10.01)
    assert not watch.abandoned(20.0)


def test_a_disconnect_without_retry_is_abandoned_once_after_the_grace() -> None:
    watch = ConnectionWatch(grace=2.0)
    watch.event(zmq.EVENT_CONNECTED, 9.0)
    watch.event(zmq.EVENT_DISCONNECTED, 10.0)
    assert not watch.abandoned(11.9)
    assert watch.abandoned(12.0)
    assert not watch.abandoned(30.0)


def test_a_later_connect_clears_a_pending_disconnect() -> None:
    watch = ConnectionWatch(grace=2.0)
    watch.event(zmq.EVENT_DISCONNECTED, 10.0)
    watch.event(zmq.EVENT_CONNECTED, 11.0)
    assert not watch.abandoned(15.0)


def test_repeated_disconnects_count_from_the_first() -> None:
    watch = ConnectionWatch(grace=2.0)
    watch.event(zmq.EVENT_DISCONNECTED, 10.0)
    watch.event(zmq.EVENT_DISCONNECTED, 11.5)
    assert watch.abandoned(12.0)


def test_nothing_happened_nothing_abandoned() -> None:
    assert not ConnectionWatch().abandoned(1e9)


def test_monitor_events_parse_like_pyzmq() -> None:
    frames = [struct.pack("=hi", zmq.EVENT_DISCONNECTED, 17), b"tcp://127.0.0.1:10002"]
    assert parse_monitor_event(frames) == (zmq.EVENT_DISCONNECTED, b"tcp://127.0.0.1:10002")
    with pytest.raises(RuntimeError):
        parse_monitor_event([b"\x00\x02", b"x"])

"""NodeLiveness: the decaying heartbeat average of lifecycle.md §3."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushjobs.server.nodes.liveness import LivenessParams, NodeLiveness

DEFAULTS = LivenessParams(interval=10.0, window=4.0, threshold=0.6)


def test_initial_values_are_those_of_a_first_heartbeat():
    live = NodeLiveness(DEFAULTS, now=100.0)
    assert live.avg == pytest.approx(1.2)
    assert live.interval_start == 100.0
    assert live.count == 1


def test_advance_within_the_interval_changes_nothing():
    live = NodeLiveness(DEFAULTS, now=0.0)
    live.advance(9.99)
    assert live.avg == pytest.approx(1.2)
    assert (live.interval_start, live.count) == (0.0, 1)


def test_advance_one_interval_folds_the_count_in():
    live = NodeLiveness(DEFAULTS, now=0.0)
    live.advance(10.0)
    # avg = (1.2 * 0.75 + 1 * 0.25) * 0.75**0
    assert live.avg == pytest.approx(1.15)
    assert live.interval_start == 10.0
    assert live.count == 0


def test_advance_several_intervals_decays_per_empty_interval():
    live = NodeLiveness(DEFAULTS, now=0.0)
    live.advance(35.0)  # k = 3
    assert live.avg == pytest.approx((1.2 * 0.75 + 0.25) * 0.75**2)
    assert live.interval_start == 30.0
    assert live.count == 0


def test_steady_heartbeats_settle_near_one_and_stay_alive():
    live = NodeLiveness(DEFAULTS, now=0.0)
    t = 0.0
    for _ in range(200):
        t += 10.0
        assert live.heartbeat(t)
    assert live.avg == pytest.approx(1.0, abs=0.01)


def test_silent_node_goes_down_after_two_to_three_intervals():
    live = NodeLiveness(DEFAULTS, now=0.0)
    t = 0.0
    for _ in range(50):
        t += 10.0
        live.heartbeat(t)
    last = t
    alive_at = [live.check(last + 10.0 * k + 1.0) for k in range(1, 6)]
    # avg ≈ 1 → 1.0 after the interval holding the last beat, then 0.75, 0.5625 < 0.6
    assert alive_at[:2] == [True, True]
    assert alive_at[2:] == [False, False, False]


def test_heartbeat_reports_down_when_the_average_is_below_threshold():
    live = NodeLiveness(DEFAULTS, now=0.0)
    # A node heard from only every 5th interval decays below T between beats.
    assert live.heartbeat(50.0) is False


def test_only_counted_heartbeats_raise_the_count():
    live = NodeLiveness(DEFAULTS, now=0.0)
    live.heartbeat(1.0)
    live.heartbeat(2.0)
    assert live.count == 3


def test_params_must_be_positive():
    with pytest.raises(ValueError):
        LivenessParams(interval=0, window=4, threshold=0.6)
    with pytest.raises(ValueError):
        LivenessParams(interval=1, window=0, threshold=0.6)


@given(
    interval=st.floats(0.1, 60),
    window=st.floats(1, 20),
    gaps=st.lists(st.floats(0, 200), min_size=1, max_size=40),
)
def test_average_never_negative_and_interval_start_never_ahead(interval, window, gaps):
    live = NodeLiveness(LivenessParams(interval, window, 0.6), now=0.0)
    t = 0.0
    for gap in gaps:
        t += gap
        live.heartbeat(t)
        assert live.avg >= 0
        assert math.isfinite(live.avg)
        assert live.interval_start <= t + 1e-9
        assert t - live.interval_start < interval + 1e-6

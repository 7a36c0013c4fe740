"""SequenceGuard: 3.0 replay protection across connections (security issue 15, F7)."""

from pushjobs.server.zeromq.sequence_guard import SequenceGuard

KEY = ("acme", "web1")
T0 = 1_800_000_000.0


def test_each_connection_must_increase():
    guard = SequenceGuard()
    assert guard.check(KEY, "inc", b"A", 1, T0) is None
    assert guard.check(KEY, "inc", b"A", 2, T0) is None
    assert guard.check(KEY, "inc", b"A", 2, T0) == "sequence 2 not after 2"


def test_replay_on_a_new_connection_is_refused():
    guard = SequenceGuard()
    for seq in (1, 2, 3):
        assert guard.check(KEY, "inc", b"A", seq, T0 + seq) is None
    problem = guard.check(KEY, "inc", b"B", 2, T0 + 2)
    assert problem is not None and problem.startswith("replayed on a new connection")
    # Not even the newest message can be replayed there.
    assert guard.check(KEY, "inc", b"C", 3, T0 + 3) is not None


def test_a_new_connection_restarting_at_1_later_is_accepted():
    guard = SequenceGuard()
    guard.check(KEY, "inc", b"A", 5, T0)
    assert guard.check(KEY, "inc", b"B", 1, T0 + 1) is None
    assert guard.check(KEY, "inc", b"B", 2, T0 + 1) is None
    # ... and the old connection's series still holds.
    assert guard.check(KEY, "inc", b"A", 5, T0 + 2) == "sequence 5 not after 5"


def test_restart_in_the_same_second():
    guard = SequenceGuard()
    guard.check(KEY, "inc", b"A", 1, T0)
    guard.check(KEY, "inc", b"A", 2, T0 + 1)
    guard.check(KEY, "inc", b"A", 3, T0 + 1)
    assert guard.check(KEY, "inc", b"B", 1, T0 + 1) is None  # 1 was sent a second earlier
    # A connection's first message is always 1: accepted in the same second (the one copy left).
    assert guard.check(KEY, "inc", b"C", 1, T0 + 1) is None
    assert guard.check(KEY, "inc", b"D", 3, T0 + 1) is not None
    assert guard.check(KEY, "inc", b"E", 2, T0 + 1) is not None  # A sent 2 in that second


def test_a_new_connection_continuing_the_count_is_accepted_in_the_same_second():
    guard = SequenceGuard()
    guard.check(KEY, "inc", b"A", 5, T0)
    assert guard.check(KEY, "inc", b"B", 6, T0) is None


def test_a_new_incarnation_starts_afresh_and_nodes_are_separate():
    guard = SequenceGuard()
    guard.check(KEY, "inc1", b"A", 9, T0)
    assert guard.check(KEY, "inc2", b"B", 1, T0) is None
    assert guard.check(("acme", "web2"), "inc1", b"C", 1, T0 - 100) is None


def test_forgotten_connections_cannot_be_replayed_either():
    guard = SequenceGuard(series_per_incarnation=2)
    guard.check(KEY, "inc", b"A", 3, T0)
    guard.check(KEY, "inc", b"B", 1, T0 + 1)
    guard.check(KEY, "inc", b"C", 1, T0 + 2)  # evicts A's series
    assert guard.check(KEY, "inc", b"A", 3, T0) is not None

"""SessionKeys (session keys, ZAP allow-list) and ZAP replies (wire-protocol.md §10, §11)."""

import pytest

from pushjobs.server.nodes.sessions import (
    MAX_CURVE_KEYS_PER_NODE,
    CurveKeyConflict,
    SessionKeys,
    SessionOwner,
)
from pushjobs.server.zeromq.zap import zap_reply

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_session_key_is_32_random_bytes_created_once():
    keys = SessionKeys(lifetime=60)
    assert keys.existing_key("acme", "web1") is None
    first = keys.session_key("acme", "web1")
    assert len(first) == 32
    assert keys.session_key("acme", "web1") == first
    existing = keys.existing_key("acme", "web1")
    assert existing is not None and existing.raw == first


def test_session_keys_differ_per_org_and_node():
    keys = SessionKeys(lifetime=60)
    a = keys.session_key("acme", "web1")
    b = keys.session_key("acme", "web2")
    c = keys.session_key("other", "web1")
    assert len({a, b, c}) == 3


def test_session_keys_differ_per_instance():
    assert SessionKeys(60).session_key("o", "n") != SessionKeys(60).session_key("o", "n")


def test_registered_key_is_bound_until_expiry():
    keys = SessionKeys(lifetime=100)
    keys.register_curve_key("acme", "web1", KEY_A, now=1000.0)
    assert keys.lookup_curve(KEY_A, now=1000.0) == ("acme", "web1")
    assert keys.lookup_curve(KEY_A, now=1099.9) == ("acme", "web1")
    assert keys.lookup_curve(KEY_A, now=1100.0) is None
    assert keys.lookup_curve(KEY_B, now=1000.0) is None


def test_reregistration_by_the_same_node_renews():
    keys = SessionKeys(lifetime=100)
    keys.register_curve_key("acme", "web1", KEY_A, now=0.0)
    keys.register_curve_key("acme", "web1", KEY_A, now=50.0)
    assert keys.lookup_curve(KEY_A, now=120.0) == ("acme", "web1")
    assert keys.lookup_curve(KEY_A, now=150.0) is None
    assert keys.curve_keys_of("acme", "web1") == [KEY_A]


def test_a_live_key_of_another_node_is_refused():
    keys = SessionKeys(lifetime=100)
    keys.register_curve_key("acme", "web1", KEY_A, now=0.0)
    for org, node in (("acme", "web2"), ("other", "web1")):
        with pytest.raises(CurveKeyConflict):
            keys.register_curve_key(org, node, KEY_A, now=99.0)
    assert keys.lookup_curve(KEY_A, now=99.0) == ("acme", "web1")


def test_an_expired_key_of_another_node_may_be_rebound():
    keys = SessionKeys(lifetime=100)
    keys.register_curve_key("acme", "web1", KEY_A, now=0.0)
    keys.register_curve_key("acme", "web2", KEY_A, now=100.0)
    assert keys.lookup_curve(KEY_A, now=150.0) == ("acme", "web2")
    assert keys.curve_keys_of("acme", "web1") == []
    assert keys.curve_keys_of("acme", "web2") == [KEY_A]


def test_at_most_four_curve_keys_per_node_the_oldest_is_evicted():
    keys = SessionKeys(lifetime=100)
    many = [bytes([i]) * 32 for i in range(1, 7)]
    for i, key in enumerate(many[:4]):
        keys.register_curve_key("acme", "web1", key, now=float(i))
    keys.register_curve_key("acme", "web1", many[0], now=5.0)  # renewed: now the newest
    keys.register_curve_key("acme", "web1", many[4], now=6.0)
    assert keys.curve_keys_of("acme", "web1") == [many[2], many[3], many[0], many[4]]
    assert keys.lookup_curve(many[1], now=6.0) is None
    assert MAX_CURVE_KEYS_PER_NODE == 4
    keys.register_curve_key("acme", "web2", many[5], now=6.0)  # other nodes are not affected
    assert keys.curve_entry_count() == 5


def test_revoke_drops_session_key_owner_and_curve_keys_of_that_node_only():
    keys = SessionKeys(lifetime=100)
    owner = SessionOwner("org-id", "aa:bb")
    first = keys.session_key("acme", "web1", owner)
    keys.session_key("acme", "web2")
    keys.register_curve_key("acme", "web1", KEY_A, now=0.0)
    keys.register_curve_key("acme", "web2", KEY_B, now=0.0)
    assert keys.owner("acme", "web1") == owner
    assert keys.owned_sessions() == [("acme", "web1", owner)]
    assert keys.revoke("acme", "web1") is True
    assert keys.existing_key("acme", "web1") is None and keys.owner("acme", "web1") is None
    assert keys.lookup_curve(KEY_A, now=1.0) is None
    assert keys.lookup_curve(KEY_B, now=1.0) == ("acme", "web2")
    assert keys.existing_key("acme", "web2") is not None
    assert keys.session_key("acme", "web1", owner) != first
    assert keys.revoke("acme", "nobody") is False


def test_sweep_drops_only_expired_entries():
    keys = SessionKeys(lifetime=10)
    keys.register_curve_key("acme", "web1", KEY_A, now=0.0)
    keys.register_curve_key("acme", "web2", KEY_B, now=5.0)
    assert keys.sweep(now=12.0) == 1
    assert keys.curve_entry_count() == 1
    assert keys.lookup_curve(KEY_B, now=12.0) == ("acme", "web2")
    assert keys.sweep(now=20.0) == 1
    assert keys.curve_entry_count() == 0


def test_default_clock_is_monotonic_and_recent():
    keys = SessionKeys(lifetime=60)
    keys.register_curve_key("acme", "web1", KEY_A)
    assert keys.lookup_curve(KEY_A) == ("acme", "web1")
    assert keys.sweep() == 0


def test_register_rejects_wrong_key_length():
    with pytest.raises(ValueError):
        SessionKeys(60).register_curve_key("acme", "web1", b"short")


def _request(mechanism=b"CURVE", key=KEY_A, version=b"1.0"):
    return [version, b"req-7", b"pushjobs", b"127.0.0.1", b"", mechanism, key]


def _lookup(key):
    return ("acme", "web1") if key == KEY_A else None


def test_zap_allows_a_listed_key_with_org_slash_node_user_id():
    assert zap_reply(_request(), _lookup) == [b"1.0", b"req-7", b"200", b"OK", b"acme/web1", b""]


@pytest.mark.parametrize(
    "frames",
    [
        _request(key=KEY_B),  # unknown key
        _request(mechanism=b"PLAIN"),  # not CURVE
        _request(mechanism=b"NULL"),
        _request(version=b"2.0"),  # bad ZAP version
        _request()[:6],  # no credentials
    ],
)
def test_zap_denies_everything_else_with_400(frames):
    assert zap_reply(frames, _lookup) == [b"1.0", b"req-7", b"400", b"No such client", b"", b""]


def test_zap_answers_even_a_garbage_request():
    assert zap_reply([b"x"], _lookup) == [b"1.0", b"", b"400", b"No such client", b"", b""]


def test_zap_uses_the_session_allow_list_with_expiry():
    keys = SessionKeys(lifetime=10)
    keys.register_curve_key("acme", "db1", KEY_B, now=0.0)
    assert zap_reply(_request(key=KEY_B), lambda k: keys.lookup_curve(k, 5.0))[4] == b"acme/db1"
    assert zap_reply(_request(key=KEY_B), lambda k: keys.lookup_curve(k, 10.0))[2] == b"400"

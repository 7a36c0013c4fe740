"""OrgCache: the broker's pure organization cache (wire-protocol.md §16 step 7)."""

from pushjobs.server.zeromq.org_cache import Gate, OrgCache

PARKED = "parked"


def admit(cache: OrgCache[str], org: str, message: str, now: float) -> Gate | str:
    """What the broker does with one message: go on, drop it (a reason), or park it."""
    gate = cache.admit(org, now)
    if gate is Gate.UNKNOWN:
        return cache.park(org, message) or PARKED
    return gate


def test_an_unknown_name_parks_its_messages_until_one_look_up_answers() -> None:
    cache: OrgCache[str] = OrgCache()
    assert admit(cache, "acme", "m1", 0.0) == PARKED
    assert admit(cache, "acme", "m2", 0.1) == PARKED
    assert list(cache.take_lookups()) == ["acme"]  # one look-up for both
    assert list(cache.take_lookups()) == []
    assert cache.resolve("acme", True, 0.5) == ["m1", "m2"]  # in arrival order
    assert admit(cache, "acme", "m3", 1.0) is Gate.EXISTS
    assert list(cache.take_lookups()) == []


def test_a_missing_org_is_remembered_for_less_time() -> None:
    cache: OrgCache[str] = OrgCache(ttl=30.0, negative_ttl=5.0)
    admit(cache, "ghost", "m", 0.0)
    cache.take_lookups()
    assert cache.resolve("ghost", False, 0.0) == ["m"]
    assert admit(cache, "ghost", "m", 4.9) == "organization 'ghost' does not exist"
    assert list(cache.take_lookups()) == []
    # Expired: still answered from the cache while one refresh is asked for.
    assert admit(cache, "ghost", "m", 5.0) == "organization 'ghost' does not exist"
    assert list(cache.take_lookups()) == ["ghost"]
    assert admit(cache, "ghost", "m", 6.0) == "organization 'ghost' does not exist"
    assert list(cache.take_lookups()) == []  # already being looked up


def test_an_expired_org_is_used_while_it_is_refreshed() -> None:
    cache: OrgCache[str] = OrgCache(ttl=30.0)
    admit(cache, "acme", "m", 0.0)
    cache.take_lookups()
    cache.resolve("acme", True, 0.0)
    assert admit(cache, "acme", "m", 29.0) is Gate.EXISTS
    assert list(cache.take_lookups()) == []
    assert admit(cache, "acme", "m", 30.0) is Gate.EXISTS
    assert list(cache.take_lookups()) == ["acme"]
    assert cache.resolve("acme", True, 31.0) == []
    assert admit(cache, "acme", "m", 60.0) is Gate.EXISTS
    assert list(cache.take_lookups()) == []


def test_a_failed_look_up_is_not_cached() -> None:
    cache: OrgCache[str] = OrgCache()
    admit(cache, "acme", "m", 0.0)
    cache.take_lookups()
    assert cache.resolve("acme", None, 0.0) == ["m"]
    assert len(cache) == 0
    assert admit(cache, "acme", "again", 1.0) == PARKED
    assert list(cache.take_lookups()) == ["acme"]


def test_look_ups_and_parked_messages_are_bounded() -> None:
    cache: OrgCache[str] = OrgCache(max_lookups=2, max_parked=3)
    assert admit(cache, "a", "1", 0.0) == PARKED
    assert admit(cache, "b", "2", 0.0) == PARKED
    assert admit(cache, "c", "3", 0.0) == "too many organization look-ups in progress"
    assert admit(cache, "a", "4", 0.0) == PARKED
    assert admit(cache, "b", "5", 0.0) == "organization look-up backlog full"
    assert list(cache.take_lookups()) == ["a", "b"]
    assert cache.resolve("a", True, 0.0) == ["1", "4"]
    assert admit(cache, "c", "6", 0.0) == PARKED  # room again


def test_least_recently_used_entries_are_evicted() -> None:
    cache: OrgCache[str] = OrgCache(capacity=2)
    for org in ("a", "b"):
        admit(cache, org, "m", 0.0)
        cache.resolve(org, True, 0.0)
    cache.take_lookups()
    assert admit(cache, "a", "m", 1.0) is Gate.EXISTS  # a is now the most recently used
    admit(cache, "c", "m", 1.0)
    cache.resolve("c", True, 1.0)
    assert admit(cache, "a", "m", 2.0) is Gate.EXISTS
    assert admit(cache, "b", "m", 2.0) == PARKED  # evicted: looked up again


def test_prune_drops_expired_entries_once_half_full() -> None:
    cache: OrgCache[str] = OrgCache(capacity=4, ttl=10.0)
    for org in ("a", "b"):
        admit(cache, org, "m", 0.0)
        cache.resolve(org, True, 0.0)
    assert cache.prune(100.0) == 0  # not more than half full
    admit(cache, "c", "m", 50.0)
    cache.resolve("c", True, 50.0)
    assert cache.prune(20.0) == 2
    assert len(cache) == 1

"""LruCache: bounded, evicts least recently used entries one by one (security issue 15, F6)."""

import pytest

from pushjobs.server.lru import LruCache


def test_eviction_removes_the_least_recently_used_only():
    cache: LruCache[str, int] = LruCache(3)
    for name in "abc":
        cache.put(name, ord(name))
    assert cache.get("a") == ord("a")  # a is now the most recently used
    cache.put("d", 4)
    assert list(cache) == ["c", "a", "d"]
    assert "b" not in cache and len(cache) == 3


def test_a_flood_of_new_keys_never_evicts_a_key_in_use():
    cache: LruCache[str, bool] = LruCache(100)
    cache.put("acme", True)
    for i in range(10_000):
        cache.put(f"bogus{i}", False)
        if i % 50 == 0:
            assert cache.get("acme") is True
    assert len(cache) == 100 and cache.get("acme") is True


def test_put_refreshes_pop_and_prune():
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)  # refresh: b is now the oldest
    cache.put("c", 4)
    assert list(cache) == ["a", "c"] and cache.get("a") == 3
    assert cache.pop("a") == 3 and cache.pop("a") is None
    cache.put("d", 10)
    assert cache.prune(lambda value: value > 5) == 1
    assert list(cache) == ["c"]


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        LruCache(0)

"""Serve a harness through the principal cache, as `runtime.build_principal_cache` does."""

from __future__ import annotations

from collections.abc import Callable

from pushjobs.server.principals.cache import PrincipalCache
from pushjobs.server.principals.cached import CachedPrincipals
from pushjobs.server.principals.embedded import EmbeddedPrincipals
from pushjobs.server.principals.watch import PrincipalWatch
from tests.support.http_harness import Harness


class Clock:
    """The cache's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def serve_cached(harness: Harness, clock: Callable[[], float]) -> PrincipalWatch:
    """Put the harness's embedded backend behind a cache (baseline taken); returns its watch."""
    backend = harness.deps.principals
    assert isinstance(backend, EmbeddedPrincipals)
    cache = PrincipalCache()
    cached = CachedPrincipals(backend, cache, clock)
    watch = PrincipalWatch(changes=backend, cache=cache)
    assert await watch.poll_once()
    await harness.serve_with(principals=cached, fresh_principals=cached.fresh())
    return watch

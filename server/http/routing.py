"""Route rows and path matching (http-api.md §1 path normalisation, §2 route table).

A route is a tuple of path segments (literal, or `{name}` capturing one decoded segment), the
methods it allows in `Allow` order, the media types it offers (first = tie winner), and per
method the authorization rule and the handler function.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from pushjobs.server.principals.rules import AccessRule

if TYPE_CHECKING:
    from starlette.responses import Response

    from pushjobs.server.http.context import RequestContext
    from pushjobs.server.http.deps import HttpDeps

Handler = Callable[["RequestContext", "HttpDeps"], Awaitable["Response"]]


@dataclass(frozen=True)
class Endpoint:
    """What one method of a route does: its authorization rule and its handler."""

    authz: AccessRule
    handler: Handler


@dataclass(frozen=True)
class Route:
    """One row of the route table."""

    pattern: tuple[str, ...]
    endpoints: dict[str, Endpoint]  # method -> endpoint, in `Allow` order
    offers: tuple[str, ...]
    choices: dict[str, frozenset[str]] = field(default_factory=dict)  # allowed param values

    @functools.cached_property
    def template(self) -> str:
        """The path pattern as text (`/organizations/{org}/pushy/jobs/{job_id}`): the metrics'
        route label."""
        return "/" + "/".join(self.pattern)

    @property
    def allow(self) -> str:
        """The `Allow` header value."""
        return ", ".join(self.endpoints)

    @property
    def is_status(self) -> bool:
        """True for `/pushy/_status` (no authentication, no organization)."""
        return all(endpoint.authz == AccessRule.NONE for endpoint in self.endpoints.values())

    @property
    def is_config(self) -> bool:
        """True for `config/{node}` and `connect/{node}` (the ccpk check of step 6)."""
        return any(endpoint.authz == AccessRule.CONFIG for endpoint in self.endpoints.values())

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """Path parameters when `segments` match this route, else None."""
        if len(segments) != len(self.pattern):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(self.pattern, segments, strict=True):
            if part.startswith("{"):
                name = part[1:-1]
                allowed = self.choices.get(name)
                if allowed is not None and segment not in allowed:
                    return None
                params[name] = segment
            elif part != segment:
                return None
        return params


def split_path(raw_path: bytes) -> list[str] | None:
    """Normalise a raw request path into decoded segments (http-api.md §1).

    Empty segments are dropped (trailing and doubled slashes), each segment is percent-decoded
    as UTF-8 (so `%2F` stays inside its segment). None when a segment is not valid UTF-8.
    """
    raw_path = raw_path.split(b"?", 1)[0]
    segments: list[str] = []
    for part in raw_path.split(b"/"):
        if not part:
            continue
        try:
            segments.append(unquote_to_bytes(part).decode("utf-8"))
        except UnicodeDecodeError:
            return None
    return segments


def find_route(
    segments: list[str], routes: tuple[Route, ...]
) -> tuple[Route, dict[str, str]] | None:
    """The first route matching the segments and its parameters, or None (404)."""
    for route in routes:
        params = route.match(segments)
        if params is not None:
            return route, params
    return None

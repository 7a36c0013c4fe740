"""The route table of http-api.md §2 and path matching (§1 path normalisation).

A route is a tuple of path segments (literal, or `{name}` capturing one decoded segment), the
methods it allows in `Allow` order, the media types it offers (first = tie winner), and per
method the authorization rule and the handler (`module:function`, imported on first use so
the table can be read without importing every handler module).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

if TYPE_CHECKING:
    from starlette.responses import Response

    from pushjobs.server.http.errors import RequestContext

Handler = Callable[["RequestContext", Any], Awaitable["Response"]]

# Authorization rules (http-api.md §5).
AUTHZ_NONE = "none"
AUTHZ_READ = "read"
AUTHZ_WRITE = "write"
AUTHZ_CONFIG = "config"

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
EVENT_STREAM = "text/event-stream"

_JOBS = "pushjobs.server.http.jobs"
_NODES = "pushjobs.server.http.nodes"


@dataclass(frozen=True)
class Endpoint:
    """What one method of a route does: its authorization rule and its handler."""

    authz: str
    handler_ref: str | Handler  # "module:function", or the function itself

    def handler(self) -> Handler:
        """Import (once) and return the handler function."""
        if callable(self.handler_ref):
            return self.handler_ref
        return _resolve(self.handler_ref)


@dataclass(frozen=True)
class Route:
    """One row of the route table."""

    pattern: tuple[str, ...]
    endpoints: dict[str, Endpoint]  # method -> endpoint, in `Allow` order
    offers: tuple[str, ...]
    choices: dict[str, frozenset[str]] = field(default_factory=dict)  # allowed param values

    @property
    def allow(self) -> str:
        """The `Allow` header value."""
        return ", ".join(self.endpoints)

    @property
    def is_status(self) -> bool:
        """True for `/pushy/_status` (no authentication, no organization)."""
        return all(endpoint.authz == AUTHZ_NONE for endpoint in self.endpoints.values())

    @property
    def is_config(self) -> bool:
        """True for `config/{node}` and `connect/{node}` (the ccpk check of step 6)."""
        return any(endpoint.authz == AUTHZ_CONFIG for endpoint in self.endpoints.values())

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


def _org(*rest: str) -> tuple[str, ...]:
    return ("organizations", "{org}", "pushy", *rest)


def _get(authz: str, ref: str) -> dict[str, Endpoint]:
    return {"GET": Endpoint(authz, ref)}


ROUTES: tuple[Route, ...] = (
    Route(("pushy", "_status"), _get(AUTHZ_NONE, f"{_NODES}:get_status"), (JSON,)),
    Route(_org("config", "{node}"), _get(AUTHZ_CONFIG, f"{_NODES}:get_config"), (JSON,)),
    Route(_org("connect", "{node}"), _get(AUTHZ_CONFIG, f"{_NODES}:get_config"), (JSON,)),
    Route(
        _org("jobs"),
        {
            "GET": Endpoint(AUTHZ_READ, f"{_JOBS}:list_jobs"),
            "POST": Endpoint(AUTHZ_WRITE, f"{_JOBS}:create_job"),
        },
        (JSON,),
    ),
    Route(_org("jobs", "{id}"), _get(AUTHZ_READ, f"{_JOBS}:get_job"), (JSON,)),
    Route(
        _org("jobs", "{id}", "output", "{node}", "{channel}"),
        _get(AUTHZ_READ, f"{_JOBS}:get_output"),
        (OCTET_STREAM, EVENT_STREAM),
        {"channel": frozenset({"stdout", "stderr"})},
    ),
    Route(_org("node_states"), _get(AUTHZ_READ, f"{_NODES}:get_node_states"), (JSON,)),
    Route(_org("node_states", "{node}"), _get(AUTHZ_READ, f"{_NODES}:get_node_state"), (JSON,)),
    Route(_org("job_status_feed"), _get(AUTHZ_READ, f"{_JOBS}:org_feed"), (EVENT_STREAM,)),
    Route(_org("jobs_status_feed"), _get(AUTHZ_READ, f"{_JOBS}:org_feed"), (EVENT_STREAM,)),
    Route(_org("job_status_feed", "{id}"), _get(AUTHZ_READ, f"{_JOBS}:job_feed"), (EVENT_STREAM,)),
    Route(_org("jobs_status_feed", "{id}"), _get(AUTHZ_READ, f"{_JOBS}:job_feed"), (EVENT_STREAM,)),
    Route(
        _org("jobs", "{id}", "abort"),
        {"POST": Endpoint(AUTHZ_WRITE, f"{_JOBS}:abort_job")},
        (JSON,),
    ),
    Route(_org("jobs", "{id}", "nodes"), _get(AUTHZ_READ, f"{_JOBS}:job_nodes"), (JSON,)),
)


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
    segments: list[str], routes: tuple[Route, ...] = ROUTES
) -> tuple[Route, dict[str, str]] | None:
    """The first route matching the segments and its parameters, or None (404)."""
    for route in routes:
        params = route.match(segments)
        if params is not None:
            return route, params
    return None


_resolved: dict[str, Handler] = {}


def _resolve(ref: str) -> Handler:
    handler = _resolved.get(ref)
    if handler is None:
        module_name, _, name = ref.partition(":")
        handler = getattr(importlib.import_module(module_name), name)
        _resolved[ref] = handler
    return handler

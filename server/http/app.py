"""The Starlette application: one catch-all route that runs the request pipeline.

Starlette's own routing is not used for dispatch because the API's 404/405 rules (JSON bodies,
`Allow` lists, path normalisation, HEAD refused) differ from it. Nothing here is asyncio-only,
so the app runs under hypercorn's trio worker.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route as StarletteRoute
from starlette.websockets import WebSocketClose

from pushjobs.protocol.vocabulary import MediaType
from pushjobs.server.http.pipeline import ROUTE_SCOPE_KEY, handle_request
from pushjobs.server.http.routes import ROUTES

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from pushjobs.server.http.deps import HttpDeps
    from pushjobs.server.http.routing import Route

log = logging.getLogger("pushjobs.server.http")

EVENT_STREAM = MediaType.EVENT_STREAM.value


class RequestMetrics(Protocol):
    """Told of each answered request and of event streams opening and closing."""

    def request(self, route: str | None, method: str, status: int, seconds: float) -> None: ...
    def stream_opened(self) -> None: ...
    def stream_closed(self) -> None: ...


class PipelineEndpoint:
    """ASGI endpoint handing every HTTP request to the pipeline."""

    def __init__(
        self, deps: HttpDeps, routes: tuple[Route, ...], metrics: RequestMetrics | None = None
    ) -> None:
        self.deps = deps
        self.routes = routes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await WebSocketClose()(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive, send)
        metrics = self.metrics
        started = time.perf_counter()
        response = await handle_request(request, self.deps, self.routes)
        stream = False
        if metrics is not None:
            route: Route | None = scope.get(ROUTE_SCOPE_KEY)
            metrics.request(
                None if route is None else route.template,
                scope.get("method", ""),
                response.status_code,
                time.perf_counter() - started,
            )
            stream = response.headers.get("content-type", "").startswith(EVENT_STREAM)
            if stream:
                metrics.stream_opened()
        try:
            await response(scope, receive, send)
        except Exception:
            # The response has started (streams); nothing can be sent any more.
            log.exception(
                "error while sending the response to %s %s", scope.get("method"), scope.get("path")
            )
        finally:
            if stream and metrics is not None:
                metrics.stream_closed()


def create_app(
    deps: HttpDeps, routes: tuple[Route, ...] = ROUTES, metrics: RequestMetrics | None = None
) -> Starlette:
    """The HTTP application serving the routes of http-api.md §2 (or `routes`) with `deps`;
    `metrics` (when given) is told of every request."""
    endpoint = PipelineEndpoint(deps, routes, metrics)
    app = Starlette(routes=[StarletteRoute("/{path:path}", endpoint)])
    # Paths the catch-all pattern cannot match (no leading `/`) reach the pipeline too.
    app.router.default = endpoint
    app.router.redirect_slashes = False
    return app

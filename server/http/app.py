"""The Starlette application: one catch-all route that runs the request pipeline.

Starlette's own routing is not used for dispatch because the API's 404/405 rules (JSON bodies,
`Allow` lists, path normalisation, HEAD refused) differ from it. Nothing here is asyncio-only,
so the app runs under hypercorn's trio worker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route as StarletteRoute
from starlette.websockets import WebSocketClose

from pushjobs.server.http.pipeline import handle_request
from pushjobs.server.http.routes import ROUTES

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from pushjobs.server.http.deps import HttpDeps
    from pushjobs.server.http.routing import Route

log = logging.getLogger("pushjobs.server.http")


class PipelineEndpoint:
    """ASGI endpoint handing every HTTP request to the pipeline."""

    def __init__(self, deps: HttpDeps, routes: tuple[Route, ...]) -> None:
        self.deps = deps
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await WebSocketClose()(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive, send)
        response = await handle_request(request, self.deps, self.routes)
        try:
            await response(scope, receive, send)
        except Exception:
            # The response has started (streams); nothing can be sent any more.
            log.exception(
                "error while sending the response to %s %s", scope.get("method"), scope.get("path")
            )


def create_app(deps: HttpDeps, routes: tuple[Route, ...] = ROUTES) -> Starlette:
    """The HTTP application serving the routes of http-api.md §2 (or `routes`) with `deps`."""
    endpoint = PipelineEndpoint(deps, routes)
    app = Starlette(routes=[StarletteRoute("/{path:path}", endpoint)])
    # Paths the catch-all pattern cannot match (no leading `/`) reach the pipeline too.
    app.router.default = endpoint
    app.router.redirect_slashes = False
    return app

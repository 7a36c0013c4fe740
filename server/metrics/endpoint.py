"""`GET /metrics` on a listener of its own: prometheus_client's ASGI app under hypercorn/trio."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from prometheus_client import make_asgi_app

if TYPE_CHECKING:
    from hypercorn.typing import Framework
    from prometheus_client import CollectorRegistry

    from pushjobs.server.config import MetricsSettings


def metrics_app(registry: CollectorRegistry) -> Any:
    """ASGI app: `GET /metrics` (and HEAD) in the Prometheus text format, 404 elsewhere."""
    exposition = make_asgi_app(registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope.get("path") == "/metrics" and scope.get("method") in ("GET", "HEAD"):
            await exposition(scope, receive, send)
            return
        status, body = (404, b"not found; try /metrics\n")
        if scope.get("path") == "/metrics":
            status, body = (405, b"method not allowed\n")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def metrics_config(settings: MetricsSettings) -> Config:
    config = Config()
    host = settings.bind
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    return config


async def serve_metrics(
    registry: CollectorRegistry,
    settings: MetricsSettings,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `/metrics` until `shutdown` is set; reports hypercorn's binds once listening."""
    await hypercorn_serve(
        cast("Framework", metrics_app(registry)),
        metrics_config(settings),
        shutdown_trigger=shutdown.wait,
        task_status=task_status,
    )

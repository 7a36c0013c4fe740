"""The dashboard's starlette app: the page, its session, and the signed forward (guard → proxy)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from pushjobs.cli.ui import guard
from pushjobs.cli.ui.proxy import Upstream
from pushjobs.protocol.vocabulary import MediaType

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The page loads only its own files and talks only to this origin; no framing (the Abort
# button must not be clickable through someone else's page).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Session:
    """What one `pushjobs ui` run serves: its token and port, the org and the upstream."""

    token: str
    port: int
    org: str
    upstream: Upstream


def static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package."""
    folder = resources.files("pushjobs.cli.ui") / "static"
    return {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in STATIC.items()}


def create_app(session: Session) -> Starlette:
    files = static_files()
    info = {
        "org": session.org,
        "user": session.upstream.settings.user,
        "server_url": session.upstream.settings.server_url,
        "token_header": guard.TOKEN_HEADER,
    }

    async def endpoint(request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        decision = guard.check(
            guard.Request(
                method=request.method,
                path=path,
                host=request.headers.get("host"),
                query_token=request.query_params.get("token"),
                cookie_token=request.cookies.get(guard.cookie_name(session.port)),
                header_token=request.headers.get(guard.TOKEN_HEADER),
                origin=request.headers.get("origin"),
            ),
            token=session.token,
            port=session.port,
            org=session.org,
        )
        if decision.action is guard.Action.REFUSE:
            return PlainTextResponse(decision.text, decision.status, headers=PAGE_HEADERS)
        if decision.action is guard.Action.LOGIN:
            return _login(request, path, session)
        if decision.action is guard.Action.FORWARD:
            return await _forward(request, decision.upstream_rel, session.upstream)
        if path == "/session.json":
            body = json.dumps({**info, "token": session.token})
            return Response(body, headers=PAGE_HEADERS, media_type=MediaType.JSON)
        if path in files:
            content, kind = files[path]
            return Response(content, headers=PAGE_HEADERS, media_type=kind)
        return PlainTextResponse("pushjobs ui: not found", 404, headers=PAGE_HEADERS)

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


def _login(request: Request, path: str, session: Session) -> Response:
    """Move the token from the URL into an HttpOnly SameSite=Strict cookie, then drop it."""
    rest = [(k, v) for k, v in parse_qsl(request.url.query) if k != "token"]
    target = path + (f"?{urlencode(rest)}" if rest else "")
    response = RedirectResponse(target, 303, headers=PAGE_HEADERS)
    response.set_cookie(
        guard.cookie_name(session.port),
        session.token,
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


async def _forward(request: Request, rel: str, upstream: Upstream) -> Response:
    body = await request.body()
    answer = await upstream.forward(
        request.method, rel, request.url.query, body, dict(request.headers)
    )
    headers = {**answer.headers, "Cache-Control": "no-store"}
    if answer.headers.get("content-type", "").startswith(MediaType.EVENT_STREAM):
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    return StreamingResponse(
        answer.body,
        status_code=answer.status,
        headers=headers,
        background=BackgroundTask(answer.close),
    )

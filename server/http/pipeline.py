"""The request pipeline of http-api.md §3: steps 1-9 in order, then the route's handler."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from pushjobs.protocol.chef_auth import validate_auth_headers
from pushjobs.protocol.errors import ChefAuthError
from pushjobs.protocol.limits import HTTP_BODY_LIMIT
from pushjobs.server.http.ccpk import decode_ccpk
from pushjobs.server.http.context import RequestContext
from pushjobs.server.http.errors import WWW_AUTHENTICATE, HttpError
from pushjobs.server.http.negotiation import negotiate
from pushjobs.server.http.responses import json_response
from pushjobs.server.http.routing import find_route, split_path
from pushjobs.server.principals.errors import (
    AuthenticationFailed,
    PrincipalBackendUnavailable,
    PrincipalRefusal,
)
from pushjobs.server.principals.rules import authenticate, authorize
from pushjobs.server.store.interfaces import StoreUnavailableError

if TYPE_CHECKING:
    from starlette.types import Message, Receive

    from pushjobs.protocol.chef_auth import AuthHeaders
    from pushjobs.server.http.deps import HttpDeps
    from pushjobs.server.http.routing import Endpoint, Route
    from pushjobs.server.principals.requestor import Requestor
    from pushjobs.server.principals.rules import PrincipalBackend
    from pushjobs.server.store.records import Org

log = logging.getLogger("pushjobs.server.http")

ROUTE_SCOPE_KEY = "pushjobs.route"  # the matched `Route`, set in the ASGI scope by step 1
BODY_TOO_LARGE = f"JSON must be no more than {HTTP_BODY_LIMIT} bytes."
_CHALLENGE = {"WWW-Authenticate": WWW_AUTHENTICATE}


def error_response(error: HttpError) -> Response:
    """The JSON error body of §6.1 with the error's status and headers."""
    return json_response(error.body(), status=error.status, headers=error.headers or None)


def raw_path(request: Request) -> bytes:
    """The request path as received (percent-encoding intact), without the query string."""
    raw = request.scope.get("raw_path")
    if raw is None:
        raw = quote(request.scope.get("path", "/")).encode("ascii")
    return raw.split(b"?", 1)[0]


async def handle_request(request: Request, deps: HttpDeps, routes: tuple[Route, ...]) -> Response:
    """Run the pipeline for one request and return the response (never raises `Exception`)."""
    try:
        return await _run(request, deps, routes)
    except HttpError as error:
        if error.status in (401, 403, 502):
            log.info(
                "%s %s -> %d %s", request.method, _log_path(request), error.status, error.message
            )
        return error_response(error)
    except StoreUnavailableError as exc:
        log.warning("%s %s -> 503 %s", request.method, _log_path(request), exc.message)
        return error_response(
            HttpError(503, f"{exc.message}; try again later", headers={"Retry-After": "5"})
        )
    except ClientDisconnect:
        log.debug("%s %s: client went away", request.method, _log_path(request))
        return Response(status_code=400)
    except Exception:
        log.exception("internal server error on %s %s", request.method, _log_path(request))
        return error_response(HttpError(500, "internal server error"))


def _log_path(request: Request) -> str:
    return raw_path(request).decode("utf-8", "replace")


def refusal_error(refusal: PrincipalRefusal) -> HttpError:
    """The answer to a refused principal (http-api.md §4.5, §5): its status and message; the
    401s of authentication carry the `WWW-Authenticate` challenge."""
    challenge = isinstance(refusal, AuthenticationFailed) and refusal.challenge
    return HttpError(refusal.status, refusal.message, headers=_CHALLENGE if challenge else None)


async def _run(request: Request, deps: HttpDeps, routes: tuple[Route, ...]) -> Response:
    path = raw_path(request)
    # 1. route match
    segments = split_path(path)
    found = find_route(segments, routes) if segments is not None else None
    if found is None:
        raise HttpError(404, "not found")
    route, params = found
    request.scope[ROUTE_SCOPE_KEY] = route  # for the metrics: the template, not the raw path
    # 2. method
    method = request.method.upper()
    endpoint = route.endpoints.get(method)
    if endpoint is None:
        raise HttpError(405, "method not allowed", headers={"Allow": route.allow})
    org = None
    requestor = None
    body = b""
    ccpk = None
    # 3. /pushy/_status skips authentication and authorization
    if not route.is_status:
        # 4. authentication headers
        headers = _lower_headers(request)
        try:
            auth = validate_auth_headers(headers, time.time())
        except ChefAuthError as exc:
            raise HttpError(
                exc.status, exc.message, headers=_CHALLENGE if exc.www_authenticate else None
            ) from None
        # 5. body size
        body = await read_body(request)
        request = Request(request.scope, _replay(body, request.receive))
        # 6. ccpk (config / connect)
        if route.is_config and deps.curve_enabled:
            ccpk = decode_ccpk(request.scope.get("query_string", b""))
        # 7. authentication, 8. authorization
        check = (params, auth, method, path.decode("utf-8", "replace"), body, endpoint)
        try:
            try:
                org, requestor = await _authenticated(deps.principals, *check)
            except PrincipalRefusal:
                if deps.fresh_principals is None:
                    raise
                # Refused from the cache: the database may grant it (a new key, a membership).
                org, requestor = await _authenticated(deps.fresh_principals, *check)
        except PrincipalRefusal as refusal:
            raise refusal_error(refusal) from None
        except PrincipalBackendUnavailable as exc:
            raise HttpError(
                502, f"Failed to connect to the principal backend: {exc.reason}"
            ) from None
    # 9. content negotiation
    accept = request.headers.getlist("accept")
    media_type = negotiate(", ".join(accept) if accept else None, route.offers)
    if media_type is None:
        raise HttpError(406, f"not acceptable; this resource produces {', '.join(route.offers)}")
    ctx = RequestContext(
        request=request,
        org=org,
        params=params,
        requestor=requestor,
        body=body,
        media_type=media_type,
        ccpk=ccpk,
    )
    return await endpoint.handler(ctx, deps)


async def _authenticated(
    backend: PrincipalBackend,
    params: dict[str, str],
    auth: AuthHeaders,
    method: str,
    path: str,
    body: bytes,
    endpoint: Endpoint,
) -> tuple[Org, Requestor]:
    """Steps 7 and 8 against `backend`: the organization and the authorized requestor."""
    org = await backend.org(params["org"])
    if org is None:
        raise HttpError(404, f"organization '{params['org']}' does not exist.")
    requestor = await authenticate(backend, org, auth, method=method, path=path, body=body)
    await authorize(backend, org.name, endpoint.authz, requestor, params.get("node"))
    return org, requestor


def _lower_headers(request: Request) -> dict[str, str]:
    """Request headers with lower-case names and UTF-8 values; the first of repeats wins.

    Header bytes arrive as latin-1 text; signers send names like `jörg` as UTF-8 bytes, and the
    canonical string is signed over the UTF-8 text, so values are re-decoded when possible.
    """
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers.raw:
        name = raw_name.decode("latin-1").lower()
        if name in headers:
            continue
        try:
            headers[name] = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            headers[name] = raw_value.decode("latin-1")
    return headers


async def read_body(request: Request) -> bytes:
    """The request body, refusing (413) anything over 1,000,000 bytes without buffering it."""
    too_large = HttpError(413, BODY_TOO_LARGE, string_shape=True)
    length = request.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > HTTP_BODY_LIMIT:
        raise too_large
    buffer = bytearray()
    async for chunk in request.stream():
        if len(buffer) + len(chunk) > HTTP_BODY_LIMIT:
            raise too_large
        buffer += chunk
    return bytes(buffer)


def _replay(body: bytes, receive: Receive) -> Receive:
    """An ASGI `receive` that delivers the already read `body` once, then what the client sends
    (the disconnect), so the handler's request reads the same bytes again."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

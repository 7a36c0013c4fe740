"""The HTTP layer's seams: principal refusals become answers, the request context, and the
job URI of a request without `Host` (its port comes from the accepting socket)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from starlette.requests import Request
from starlette.types import Message

from pushjobs.protocol.chef_auth import sign_request
from pushjobs.server.http.app import create_app
from pushjobs.server.http.context import RequestContext
from pushjobs.server.http.errors import WWW_AUTHENTICATE
from pushjobs.server.http.pipeline import refusal_error
from pushjobs.server.principals.errors import AccessDenied, AuthenticationFailed
from tests.support.http_harness import ORG, Harness, make_harness

JOBS = f"/organizations/{ORG}/pushy/jobs"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = make_harness(tmp_path)
    harness.add_user("alice", 1, admin=True)
    yield harness
    await harness.client.aclose()
    harness.store.close()


def test_refusals_map_to_the_answers_of_authentication_and_authorization() -> None:
    unknown = refusal_error(AuthenticationFailed("no such principal"))
    assert (unknown.status, unknown.body()) == (401, {"error": ["no such principal"]})
    assert unknown.headers == {"WWW-Authenticate": WWW_AUTHENTICATE}
    outsider = refusal_error(AuthenticationFailed("not associated", status=403))
    assert (outsider.status, outsider.headers) == (403, {})
    denied = refusal_error(AccessDenied("no access"))
    assert (denied.status, denied.body(), denied.headers) == (403, {"error": ["no access"]}, {})


def test_context_of_an_unauthenticated_route_has_no_requestor() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    ctx = RequestContext(
        request=request, org=None, params={}, requestor=None, body=b"", media_type="x"
    )
    with pytest.raises(RuntimeError):
        ctx.authorized()


async def asgi_post(
    h: Harness, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[bytes, bytes], bytes]:
    """POST straight through ASGI, so no client adds a `Host` header; the answer's status,
    headers and body."""
    app = create_app(h.deps)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.0",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 10003),
        "client": ("127.0.0.1", 40000),
    }
    sent: list[Message] = []
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), content


async def test_job_uri_without_host_uses_server_name_and_accepting_port(h: Harness) -> None:
    body = b'{"command":"chef-client","nodes":["n1"]}'
    signed = sign_request(
        method="POST", path=JOBS, body=body, user_id="alice", private_key=h.keys["alice"]
    )
    headers = [(k.lower().encode(), v.encode()) for k, v in signed.items()]
    headers.append((b"content-type", b"application/json"))
    async with trio.open_nursery() as nursery:
        await nursery.start(h.jobs.run)
        status, answer_headers, content = await asgi_post(h, JOBS, headers, body)
        nursery.cancel_scope.cancel()
    assert status == 201, content
    uri = json.loads(content)["uri"]
    assert uri.startswith(f"http://push.example.com:10003{JOBS}/")
    assert answer_headers[b"location"] == uri.encode()

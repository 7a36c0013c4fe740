"""`pushjobs ui`'s app and signing proxy, over real sockets: the dashboard app and a small
upstream app (standing in for the pushjobs server) both run under hypercorn in this process.

The upstream checks each request's Chef signature with the operator's public key, so a test
passes only when the dashboard signed exactly the path and body it forwarded.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pushjobs.cli.settings import Settings
from pushjobs.cli.ui.app import Session, create_app
from pushjobs.cli.ui.command import bind, hypercorn_config
from pushjobs.cli.ui.guard import TOKEN_HEADER, cookie_name
from pushjobs.cli.ui.proxy import Upstream
from pushjobs.protocol.chef_auth import validate_auth_headers, verify_request
from pushjobs.protocol.keys import generate_rsa_key, private_key_pem

KEY = generate_rsa_key()
TOKEN = "test-token-0123456789"


@dataclass
class Fake:
    """The upstream's record of what arrived, and the gate of its slow SSE feed."""

    seen: list[dict[str, Any]]
    second_event: trio.Event


def upstream_app(fake: Fake) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        body = await request.body()
        auth = validate_auth_headers(
            {k.lower(): v for k, v in request.headers.items()}, time.time()
        )
        path = request.scope["raw_path"].decode()
        signed = verify_request(
            auth, method=request.method, path=path, body=body, public_key=KEY.public_key()
        )
        entry = {
            "method": request.method,
            "path": path,
            "query": request.url.query,
            "body": body.decode(),
            "user": auth.user_id,
            "signed": signed,
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
        fake.seen.append(entry)
        return entry

    async def jobs(request: Request) -> Response:
        entry = await record(request)
        if request.method == "POST":
            return JSONResponse({"uri": "http://x/organizations/acme/pushy/jobs/abc"}, 201)
        link = '<http://x/organizations/acme/pushy/jobs?limit=1&offset=1>; rel="next"'
        return JSONResponse([{"signed": entry["signed"]}], headers={"Link": link})

    async def abort(request: Request) -> Response:
        await record(request)
        return JSONResponse(
            {"error": ["job 'abc' has already finished with status 'complete'"]}, 409
        )

    async def feed(request: Request) -> Response:
        entry = await record(request)

        async def events() -> AsyncIterator[bytes]:
            first = {"last": entry["headers"].get("last-event-id")}
            yield f"event: start\nid: job-1\ndata: {json.dumps(first)}\n\n".encode()
            await fake.second_event.wait()
            yield b"event: job_complete\nid: job-2\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/organizations/acme/pushy/jobs", jobs, methods=["GET", "POST"]),
            Route("/organizations/acme/pushy/jobs/{id}/abort", abort, methods=["POST"]),
            Route("/organizations/acme/pushy/job_status_feed/{id}", feed),
        ]
    )


@dataclass
class Running:
    base: str
    port: int
    fake: Fake
    cookies: dict[str, str]


@asynccontextmanager
async def running(upstream_url: str | None = None) -> AsyncIterator[Running]:
    """The dashboard on a free port in front of the fake upstream (or of `upstream_url`)."""
    fake = Fake([], trio.Event())
    async with trio.open_nursery() as nursery:
        up_config = Config()
        up_config.bind = ["127.0.0.1:0"]
        up_config.accesslog = None
        stop = trio.Event()
        binds = await nursery.start(
            lambda task_status: serve(
                cast(Any, upstream_app(fake)),
                up_config,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        )
        settings = Settings(
            server_url=upstream_url or f"{binds[0]}/organizations/acme",
            user="alice",
            key=private_key_pem(KEY).decode(),
        )
        sock = bind(0)
        port = sock.getsockname()[1]
        upstream = Upstream(settings, KEY)
        ui_config = hypercorn_config(sock)
        app = create_app(Session(TOKEN, port, "acme", upstream))
        await nursery.start(
            lambda task_status: serve(
                cast(Any, app), ui_config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        try:
            yield Running(f"http://127.0.0.1:{port}", port, fake, {cookie_name(port): TOKEN})
        finally:
            fake.second_event.set()
            stop.set()
            await upstream.aclose()


async def test_the_url_token_becomes_an_httponly_strict_cookie_and_leaves_the_url() -> None:
    async with running() as ui, httpx.AsyncClient() as anonymous:
        answer = await anonymous.get(f"{ui.base}/?token={TOKEN}&x=1")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/?x=1"
        cookie = answer.headers["set-cookie"].lower()
        assert cookie.startswith(f"{cookie_name(ui.port)}={TOKEN}".lower())
        assert "httponly" in cookie and "samesite=strict" in cookie
        async with httpx.AsyncClient() as fresh:
            assert (await fresh.get(f"{ui.base}/")).status_code == 403
    async with running() as ui, httpx.AsyncClient(cookies=ui.cookies) as http:
        page = await http.get(f"{ui.base}/")
        assert page.status_code == 200 and "<title>pushjobs</title>" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert (await http.get(f"{ui.base}/app.js")).status_code == 200
        assert (await http.get(f"{ui.base}/nope.js")).status_code == 404
        session = (await http.get(f"{ui.base}/session.json")).json()
        assert session["org"] == "acme" and session["token"] == TOKEN


async def test_requests_are_forwarded_signed_with_the_operators_key() -> None:
    async with running() as ui, httpx.AsyncClient(cookies=ui.cookies) as http:
        answer = await http.get(
            f"{ui.base}/organizations/acme/pushy/jobs?limit=1&status=running",
            headers={"Accept": "application/json", "Cookie-Extra": "x"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == [{"signed": True}]
        assert 'rel="next"' in answer.headers["link"]
        [seen] = ui.fake.seen
        assert seen["signed"] and seen["user"] == "alice"
        assert seen["path"] == "/organizations/acme/pushy/jobs"
        assert seen["query"] == "limit=1&status=running"
        # neither the page's cookie nor its token reach the server
        assert "cookie" not in seen["headers"] and TOKEN not in json.dumps(seen["headers"])

        body = json.dumps({"command": "greet", "nodes": ["web1"]})
        created = await http.post(
            f"{ui.base}/organizations/acme/pushy/jobs",
            content=body,
            headers={"Content-Type": "application/json", TOKEN_HEADER: TOKEN},
        )
        assert created.status_code == 201
        post = ui.fake.seen[-1]
        assert post["signed"] and post["body"] == body and post["method"] == "POST"
        assert TOKEN_HEADER.lower() not in post["headers"]


async def test_upstream_errors_keep_their_status_and_text() -> None:
    async with running() as ui, httpx.AsyncClient(cookies=ui.cookies) as http:
        answer = await http.post(
            f"{ui.base}/organizations/acme/pushy/jobs/abc/abort", headers={TOKEN_HEADER: TOKEN}
        )
        assert answer.status_code == 409
        assert answer.json() == {"error": ["job 'abc' has already finished with status 'complete'"]}
        assert ui.fake.seen[-1]["signed"]


async def test_an_unreachable_server_is_a_readable_502() -> None:
    free = bind(0)
    dead = f"http://127.0.0.1:{free.getsockname()[1]}/organizations/acme"
    free.close()  # nothing listens there any more
    async with running(dead) as ui, httpx.AsyncClient(cookies=ui.cookies) as http:
        answer = await http.get(f"{ui.base}/organizations/acme/pushy/jobs")
        assert answer.status_code == 502
        assert answer.text.startswith(f"pushjobs ui: cannot reach {dead}: ")


async def test_sse_is_passed_through_as_it_arrives_with_last_event_id() -> None:
    async with running() as ui, httpx.AsyncClient(cookies=ui.cookies) as http:
        url = f"{ui.base}/organizations/acme/pushy/job_status_feed/abc"
        headers = {"Accept": "text/event-stream", "Last-Event-ID": "job-7"}
        async with http.stream("GET", url, headers=headers) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert answer.headers["cache-control"] == "no-cache"
            chunks = answer.aiter_text()
            received = ""
            # The upstream holds the second event back until the first one arrived here: the
            # first event cannot be waiting in a buffer for the end of the stream.
            with trio.fail_after(10):
                while "\n\n" not in received:
                    received += await chunks.__anext__()
            assert received.startswith("event: start\nid: job-1\n")
            assert '"last": "job-7"' in received
            assert "job_complete" not in received
            ui.fake.second_event.set()
            with trio.fail_after(10):
                async for chunk in chunks:
                    received += chunk
            assert "event: job_complete\nid: job-2\n" in received

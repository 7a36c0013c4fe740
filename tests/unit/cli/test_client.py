"""Signed requests, error texts, Chef search paging, SSE following with fallback (cli.md §3, §10).

The network is replaced by an httpx MockTransport that checks every signature with the protocol
library's verifier, so these tests exercise the CLI's real request code.
"""

import dataclasses
import json
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest

from pushjobs.cli.client import (
    ORG_URL_HINT,
    V1_HINT,
    HttpError,
    NetworkError,
    SignedClient,
    error_texts,
    format_http_error,
)
from pushjobs.cli.commands.output import follow_channel
from pushjobs.cli.display import Display
from pushjobs.cli.errors import RequestError, UsageError
from pushjobs.cli.follow import JobProgress
from pushjobs.cli.search import search_nodes
from pushjobs.cli.settings import Settings
from pushjobs.cli.watch import follow_job, follow_sse
from pushjobs.protocol.chef_auth import validate_auth_headers, verify_request
from pushjobs.protocol.keys import generate_rsa_key

ORG = "https://push.test/organizations/acme"


@pytest.fixture(scope="module")
def key():
    return generate_rsa_key(2048)


def make_client(key, handler: Callable[[httpx.Request], httpx.Response], version="1.3"):
    seen: list[httpx.Request] = []

    def checked(request: httpx.Request) -> httpx.Response:
        request.read()
        auth = validate_auth_headers(
            {k.lower(): v for k, v in request.headers.items()}, time.time()
        )
        assert auth.user_id == "alice" and auth.sign_version == version
        path = request.url.raw_path.split(b"?")[0].decode()
        assert verify_request(
            auth,
            method=request.method,
            path=path,
            body=request.content,
            public_key=key.public_key(),
        )
        seen.append(request)
        return handler(request)

    settings = Settings(
        server_url=ORG,
        user="alice",
        key="unused",
        sign_version=version,
        chef_server_url="https://chef.test/organizations/acme",
    )
    client = SignedClient(settings, key, transport=httpx.MockTransport(checked))
    client.seen = seen  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize("version", ["1.3", "1.1"])
def test_requests_are_signed_over_path_and_body(key, version: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(201, json={"uri": f"{ORG}/pushy/jobs/{'a' * 32}"})
        return httpx.Response(200, json=[])

    client = make_client(key, handler, version)
    assert client.get_json("jobs", {"status": "running,voting", "limit": "5"}) == []
    _, doc = client.post_json("jobs", {"command": "x", "nodes": ["ü"]})
    assert doc["uri"].endswith("a" * 32)
    get, post = client.seen
    assert get.url.path == "/organizations/acme/pushy/jobs"
    assert parse_qs(get.url.query.decode()) == {"status": ["running,voting"], "limit": ["5"]}
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.content) == {"command": "x", "nodes": ["ü"]}
    assert get.headers["accept"] == "application/json"


def test_error_texts_shapes() -> None:
    assert error_texts(b'{"error":["a","b"]}') == ["a", "b"]
    assert error_texts(b'{"error":"invalid key supplied"}') == ["invalid key supplied"]
    assert error_texts(b"<html>" + b"x" * 300) == [("<html>" + "x" * 300)[:200]]
    assert error_texts(b"") == []


def test_format_http_error() -> None:
    assert (
        format_http_error(
            403,
            "Forbidden",
            ["User or client 'bob' does not have access to that action on this server."],
        )
        == "403 Forbidden: User or client 'bob' does not have access to that action on this server."
    )
    assert format_http_error(400, "Bad Request", ["invalid key supplied"]) == (
        f"400 Bad Request: invalid key supplied {V1_HINT}"
    )
    assert format_http_error(502, "Bad Gateway", []) == "502 Bad Gateway"
    assert format_http_error(404, "Not Found", ["a", "b"]) == "404 Not Found: a; b"


def test_http_error_raised_with_texts(key) -> None:
    client = make_client(key, lambda r: httpx.Response(404, json={"error": ["job 'x' not found"]}))
    with pytest.raises(HttpError) as e:
        client.get_json("jobs/x")
    assert e.value.status == 404 and e.value.message == "404 Not Found: job 'x' not found"


def test_404_hints_at_a_server_url_that_is_not_an_org_url(key) -> None:
    """A bare host or `.../pushy` as server_url gets a 404 whose message says what to fix."""
    not_found = lambda r: httpx.Response(404, json={"error": ["not found"]})  # noqa: E731
    for wrong in ("https://push.test", f"{ORG}/pushy"):
        client = make_client(key, not_found)
        client.settings = dataclasses.replace(client.settings, server_url=wrong)
        with pytest.raises(HttpError) as e:
            client.get_json("node_states")
        assert e.value.status == 404
        assert e.value.message == f"404 Not Found: not found {ORG_URL_HINT}"
    # with a proper org URL a 404 means what it says
    client = make_client(key, not_found)
    with pytest.raises(HttpError) as e:
        client.get_json("jobs/x")
    assert e.value.message == "404 Not Found: not found"


def test_network_error_message(key) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    client = make_client(key, refuse)
    with pytest.raises(NetworkError) as e:
        client.get_json("node_states")
    assert e.value.message == f"cannot reach {ORG}: [Errno 111] Connection refused"


def test_non_json_answer_is_a_request_error(key) -> None:
    client = make_client(key, lambda r: httpx.Response(200, text="<html>"))
    with pytest.raises(RequestError, match="expected JSON"):
        client.get_json("jobs")


def test_search_reads_every_page(key) -> None:
    names = [f"n{i}" for i in range(2500)]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == "/organizations/acme/search/node"
        assert json.loads(request.content) == {"name": ["name"]}
        q = parse_qs(request.url.query.decode())
        assert q["q"] == ["role:web AND name:*"] and q["rows"] == ["1000"]
        start = int(q["start"][0])
        rows = [{"url": "u", "data": {"name": n}} for n in names[start : start + 1000]]
        return httpx.Response(200, json={"rows": rows, "start": start, "total": len(names)})

    client = make_client(key, handler)
    assert search_nodes(client, client.settings.chef_server_url, "role:web AND name:*") == names
    assert [parse_qs(r.url.query.decode())["start"][0] for r in client.seen] == [
        "0",
        "1000",
        "2000",
    ]


def test_search_errors(key) -> None:
    client = make_client(
        key, lambda r: httpx.Response(400, json={"error": ["invalid search query"]})
    )
    with pytest.raises(RequestError) as e:
        search_nodes(client, "https://chef.test/organizations/acme", "bad((")
    assert e.value.message == "search failed: 400 Bad Request: invalid search query"
    with pytest.raises(UsageError) as u:
        search_nodes(client, None, "name:x")
    assert u.value.message == "--search needs chef_server_url (the Chef Server to search)"


def sse(*events: tuple[str, str, dict]) -> bytes:
    return b"".join(
        f"event: {name}\nid: {eid}\ndata: {json.dumps(data)}\n\n".encode()
        for name, eid, data in events
    )


JOB_ID = "b" * 32
FINAL = {"id": JOB_ID, "status": "complete", "nodes": {"succeeded": ["a"]}}
EVENTS = [
    ("start", "job-1", {"node_count": 1}),
    ("quorum_vote", "job-2", {"node": "a", "status": "success"}),
    ("quorum_succeeded", "job-3", {}),
    ("run_start", "job-4", {"node": "a"}),
    ("run_complete", "job-5", {"node": "a", "status": "success"}),
    ("job_complete", "job-6", {"status": "complete"}),
]


def test_follow_sse_reconnects_with_last_event_id(key) -> None:
    opens: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "job_status_feed" in request.url.path:
            assert request.headers["accept"] == "text/event-stream"
            last = request.headers.get("last-event-id")
            opens.append(last)
            events = EVENTS[:3] if last is None else EVENTS[int(last.split("-")[1]) :]
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=httpx.ByteStream(sse(*events)),
            )
        return httpx.Response(200, json=FINAL)

    client = make_client(key, handler)
    progress = JobProgress(JOB_ID, ["a"])
    sleeps: list[float] = []
    assert follow_sse(client, progress, Display(), sleep=sleeps.append)
    assert opens == [None, "job-3"]
    assert sleeps == [1.0]
    assert progress.nodes == {"a": "succeeded"} and progress.phase == "complete"


def test_follow_sse_gives_up_after_three_reopens(key) -> None:
    opens = []

    def handler(request: httpx.Request) -> httpx.Response:
        opens.append(request.headers.get("last-event-id"))
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=httpx.ByteStream(b":keepalive\n"),
        )

    client = make_client(key, handler)
    assert not follow_sse(client, JobProgress(JOB_ID, ["a"]), Display(), sleep=lambda s: None)
    assert len(opens) == 4  # the first stream and three reopen attempts


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"error": ["not found"]}),
        httpx.Response(406, json={"error": ["not acceptable"]}),
        httpx.Response(200, json={"not": "sse"}),
    ],
)
def test_follow_falls_back_to_polling(key, response: httpx.Response) -> None:
    polls = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "job_status_feed" in request.url.path:
            return response
        polls.append(request.url.path)
        if len(polls) < 3:
            return httpx.Response(
                200, json={"id": JOB_ID, "status": "running", "nodes": {"running": ["a"]}}
            )
        return httpx.Response(200, json=FINAL)

    client = make_client(key, handler)
    job = follow_job(client, JobProgress(JOB_ID, ["a"]), Display(), poll=False, poll_interval=0.01)
    assert job == FINAL and len(polls) == 3


def test_follow_with_poll_never_opens_feed(key) -> None:
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json=FINAL)

    client = make_client(key, handler)
    assert (
        follow_job(client, JobProgress(JOB_ID), Display(), poll=True, poll_interval=0.01) == FINAL
    )
    assert paths == [f"/organizations/acme/pushy/jobs/{JOB_ID}"]


def test_summary_event_ends_following(key) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "job_status_feed" in request.url.path:
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=httpx.ByteStream(sse(("summary", "job-1", {**FINAL, "timestamp": "t"}))),
            )
        return httpx.Response(200, json=FINAL)

    client = make_client(key, handler)
    progress = JobProgress(JOB_ID)
    assert follow_job(client, progress, Display(), poll=False, poll_interval=0.01) == FINAL
    assert progress.nodes == {"a": "succeeded"}


def output_sse(*events: tuple[str, str, dict]) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(sse(*events))
    )


def test_follow_channel_reopens_from_the_last_output_offset(key) -> None:
    opens: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        last = request.headers.get("last-event-id")
        opens.append(last)
        if last is None:
            return output_sse(
                ("output", "3", {"offset": 0, "encoding": "text", "data": "abc"}),
                ("output", "6", {"offset": 3, "encoding": "text", "data": "def"}),
            )
        return output_sse(
            ("output", "8", {"offset": 3, "encoding": "text", "data": "defgh"}),
            ("end", "end", {"status": "succeeded"}),
        )

    client = make_client(key, handler)
    written: list[bytes] = []
    sleeps: list[float] = []
    follow_channel(
        client, f"{ORG}/pushy/jobs/x/output/a/stdout", written.append, sleep=sleeps.append
    )
    assert b"".join(written) == b"abcdefgh"
    assert opens == [None, "6"]
    assert sleeps == [1.0]


def test_follow_channel_gives_up_after_three_reopens(key) -> None:
    opens = []

    def handler(request: httpx.Request) -> httpx.Response:
        opens.append(request.headers.get("last-event-id"))
        return output_sse()

    client = make_client(key, handler)
    with pytest.raises(RequestError) as e:
        follow_channel(client, f"{ORG}/pushy/jobs/x/output/a/stdout", print, sleep=lambda s: None)
    assert e.value.message == (
        "live output stream failed: the server ended the stream before its end event"
    )
    assert len(opens) == 4  # the first stream and three reopen attempts

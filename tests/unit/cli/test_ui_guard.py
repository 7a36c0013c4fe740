"""`pushjobs ui`'s request checks (cli/ui/guard.py): Host, token cookie, CSRF header, allow-list."""

from __future__ import annotations

import pytest

from pushjobs.cli.ui import guard
from pushjobs.cli.ui.guard import Action, Request

TOKEN = "t0ken-Value_123"
PORT = 8765
ORG = "acme"
HOST = f"127.0.0.1:{PORT}"


def decide(**kw: object) -> guard.Decision:
    fields: dict[str, object] = {"method": "GET", "path": "/", "host": HOST, "cookie_token": TOKEN}
    fields.update(kw)
    return guard.check(Request(**fields), token=TOKEN, port=PORT, org=ORG)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", [HOST, f"localhost:{PORT}", f"LOCALHOST:{PORT}"])
def test_the_page_is_served_to_the_local_host_names_with_the_cookie(host: str) -> None:
    assert decide(host=host).action is Action.SERVE


@pytest.mark.parametrize(
    "host",
    [None, "127.0.0.1", f"127.0.0.1:{PORT + 1}", f"evil.example:{PORT}", f"[::1]:{PORT}", "x"],
)
def test_any_other_host_is_refused_before_the_token_is_looked_at(host: str | None) -> None:
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example
    decision = decide(host=host, query_token=TOKEN)
    assert (decision.action, decision.status) == (Action.REFUSE, 403)
    assert "Host header must be" in decision.text


def test_the_token_in_the_url_logs_in_and_a_wrong_one_is_refused() -> None:
    assert decide(cookie_token=None, query_token=TOKEN).action is Action.LOGIN
    wrong = decide(cookie_token=None, query_token=TOKEN + "x")
    assert (wrong.action, wrong.status) == (Action.REFUSE, 403)


@pytest.mark.parametrize("cookie", [None, "", "other", TOKEN[:-1]])
def test_every_request_needs_the_cookie(cookie: str | None) -> None:
    for path in ("/", "/app.js", f"/organizations/{ORG}/pushy/jobs"):
        decision = decide(path=path, cookie_token=cookie)
        assert (decision.action, decision.status) == (Action.REFUSE, 403)
        assert "open the URL that `pushjobs ui` printed" in decision.text


def test_a_state_changing_request_needs_the_token_header_too() -> None:
    path = f"/organizations/{ORG}/pushy/jobs"
    refused = decide(method="POST", path=path)
    assert (refused.action, refused.status, refused.text) == (Action.REFUSE, 403, guard.NO_CSRF)
    assert decide(method="POST", path=path, header_token="nope").action is Action.REFUSE
    allowed = decide(method="POST", path=path, header_token=TOKEN)
    assert (allowed.action, allowed.upstream_rel) == (Action.FORWARD, "jobs")
    # a token in the query does not log a POST in (only a top-level GET may carry it)
    assert decide(method="POST", path=path, cookie_token=None, query_token=TOKEN).status == 403


def test_a_foreign_origin_is_refused_for_a_state_changing_request() -> None:
    path = f"/organizations/{ORG}/pushy/jobs/abc/abort"
    foreign = decide(method="POST", path=path, header_token=TOKEN, origin="http://evil.example")
    assert (foreign.action, foreign.status) == (Action.REFUSE, 403)
    own = decide(method="POST", path=path, header_token=TOKEN, origin=f"http://localhost:{PORT}")
    assert own.action is Action.FORWARD


@pytest.mark.parametrize(
    ("path", "rel"),
    [
        ("/organizations/acme/pushy/jobs", "jobs"),
        ("/organizations/acme/pushy/jobs/0123/nodes", "jobs/0123/nodes"),
        (
            "/organizations/acme/pushy/jobs/0123/output/web%3A1/stdout",
            "jobs/0123/output/web%3A1/stdout",
        ),
        ("/organizations/acme/pushy/node_states", "node_states"),
        ("/organizations/acme/pushy/job_status_feed/0123", "job_status_feed/0123"),
        ("/organizations/acme/pushy/jobs_status_feed", "jobs_status_feed"),
    ],
)
def test_the_pushy_api_of_the_org_is_forwarded(path: str, rel: str) -> None:
    decision = decide(path=path)
    assert (decision.action, decision.upstream_rel) == (Action.FORWARD, rel)


@pytest.mark.parametrize(
    "path",
    [
        "/organizations/other/pushy/jobs",
        "/organizations/acme/pushy/",
        "/organizations/acme/pushy/config/web1",  # the agents' endpoint
        "/organizations/acme/pushy/connect/web1",
        "/organizations/acme/pushy/jobs/../config/web1",
        "/organizations/acme/pushy/jobs/%2e%2e/config",
        "/organizations/acme/pushy/jobs/a%2fb",
        "/organizations/acme/pushy/jobs//x",
        "/organizations/acme/pushy/jobs/%252e%252e",
        "/organizations/acme/nodes",
        "/organizations/acme",
    ],
)
def test_everything_else_under_organizations_is_not_found(path: str) -> None:
    decision = decide(path=path)
    assert (decision.action, decision.status) == (Action.REFUSE, 404)
    assert "organization 'acme'" in decision.text


def test_only_get_and_post_are_forwarded() -> None:
    path = f"/organizations/{ORG}/pushy/jobs"
    decision = decide(method="DELETE", path=path, header_token=TOKEN)
    assert (decision.action, decision.status) == (Action.REFUSE, 405)
    assert decide(method="POST", path="/", header_token=TOKEN).status == 405


def test_tokens_are_long_and_random_and_cookies_are_per_port() -> None:
    tokens = {guard.new_token() for _ in range(20)}
    assert len(tokens) == 20 and all(len(t) >= 40 for t in tokens)
    assert guard.cookie_name(1) != guard.cookie_name(2)


def test_an_org_name_is_matched_after_percent_decoding() -> None:
    decision = guard.check(
        Request("GET", "/organizations/my%20org/pushy/jobs", HOST, cookie_token=TOKEN),
        token=TOKEN,
        port=PORT,
        org="my org",
    )
    assert (decision.action, decision.upstream_rel) == (Action.FORWARD, "jobs")

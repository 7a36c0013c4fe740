"""The local dashboard server's request checks (docs/dashboard.md, "Security model"), no I/O.

`check` takes what arrived (method, path, Host, token from the query, cookie and header) and
returns a `Decision`: serve it, forward it upstream, set the cookie and redirect, or refuse it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote

TOKEN_HEADER = "X-Pushjobs-Token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
FORWARD_METHODS = frozenset({"GET", "POST"})
# First segments after `.../pushy/` that the page uses; `config/` and `connect/` are the
# agents' endpoints and stay out of reach.
API_ROOTS = frozenset({"jobs", "node_states", "job_status_feed", "jobs_status_feed"})

BAD_HOST = (
    "pushjobs ui: this address is not allowed (the Host header must be 127.0.0.1:{port} or "
    "localhost:{port})"
)
NO_TOKEN = (
    "pushjobs ui: not authorized; open the URL that `pushjobs ui` printed "
    "(http://127.0.0.1:{port}/?token=...)"
)
NO_CSRF = f"pushjobs ui: a state-changing request needs the {TOKEN_HEADER} header"
BAD_ORIGIN = "pushjobs ui: cross-origin request refused"
NOT_FOUND = "pushjobs ui: not found (only the pushy API of organization '{org}' is forwarded)"
BAD_METHOD = "pushjobs ui: method not allowed"


class Action(Enum):
    SERVE = "serve"  # a page or static file of the dashboard itself
    FORWARD = "forward"  # sign and send to the pushjobs server
    LOGIN = "login"  # the token arrived in the URL: set the cookie, redirect without it
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    action: Action
    status: int = 200
    text: str = ""
    upstream_rel: str = ""  # FORWARD: the path after `<server_url>/pushy/`


@dataclass(frozen=True)
class Request:
    """What the checks look at; `path` is the raw (still percent-encoded) path."""

    method: str
    path: str
    host: str | None
    query_token: str | None = None
    cookie_token: str | None = None
    header_token: str | None = None
    origin: str | None = None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def cookie_name(port: int) -> str:
    """One cookie per port: cookies are per host, not per port, and two dashboards may run."""
    return f"pushjobs_ui_{port}"


def _same(given: str | None, token: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})


def upstream_rel(path: str, org: str) -> str | None:
    """The part after `/organizations/<org>/pushy/` when `path` is an allowed API path."""
    parts = path.split("/", 4)
    if len(parts) < 5 or parts[:2] != ["", "organizations"] or parts[3] != "pushy":
        return None
    if unquote(parts[2]) != org:
        return None
    rel = parts[4]
    segments = rel.split("/")
    if not rel or any(not s for s in segments) or segments[0] not in API_ROOTS:
        return None
    for s in segments:
        decoded = unquote(s)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or "%" in decoded:
            return None
    return rel


def check(req: Request, *, token: str, port: int, org: str) -> Decision:
    """Decide what to do with one request to the dashboard listening on 127.0.0.1:`port`."""
    if req.host is None or req.host.lower() not in allowed_hosts(port):
        return Decision(Action.REFUSE, 403, BAD_HOST.format(port=port))
    if req.query_token is not None and req.method in SAFE_METHODS:
        if _same(req.query_token, token):
            return Decision(Action.LOGIN, 303)
        return Decision(Action.REFUSE, 403, NO_TOKEN.format(port=port))
    if not _same(req.cookie_token, token):
        return Decision(Action.REFUSE, 403, NO_TOKEN.format(port=port))
    if req.method not in SAFE_METHODS:
        origins = {f"http://{h}" for h in allowed_hosts(port)}
        if req.origin is not None and req.origin.lower() not in origins:
            return Decision(Action.REFUSE, 403, BAD_ORIGIN)
        if not _same(req.header_token, token):
            return Decision(Action.REFUSE, 403, NO_CSRF)
    if req.path.startswith("/organizations/"):
        rel = upstream_rel(req.path, org)
        if rel is None:
            return Decision(Action.REFUSE, 404, NOT_FOUND.format(org=org))
        if req.method not in FORWARD_METHODS:
            return Decision(Action.REFUSE, 405, BAD_METHOD)
        return Decision(Action.FORWARD, upstream_rel=rel)
    if req.method not in SAFE_METHODS:
        return Decision(Action.REFUSE, 405, BAD_METHOD)
    return Decision(Action.SERVE)

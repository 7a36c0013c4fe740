"""The HTTP request pipeline (http-api.md §1-§4, §6, §7.1, §7.2, §7.7, §7.8) on the real app.

Requests go through `httpx.ASGITransport` into `create_app(deps)` with a real SQLite store,
real RSA keys and real Chef signatures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import trio
from starlette.responses import Response

from pushjobs.protocol.keys import decrypt_session_key, public_key_pem, z85_decode_key
from pushjobs.protocol.timestamps import format_xops_timestamp
from pushjobs.server.http.context import RequestContext
from pushjobs.server.http.deps import HttpDeps
from pushjobs.server.http.routing import Endpoint, Route
from pushjobs.server.principals.errors import PrincipalBackendUnavailable
from pushjobs.server.principals.requestor import Requestor
from pushjobs.server.principals.rules import AccessRule
from pushjobs.server.store.records import Group, Org, Principal
from tests.support.http_harness import (
    CLIENT_CCPK,
    ORG,
    SERVER_CURVE_PUBLIC,
    Harness,
    client_for,
    error_of,
    make_harness,
    rsa_key,
)

WWW_AUTH = 'X-Ops-Sign version="1.0" version="1.1"'
CCPK_QUERY = "ccpk=" + quote(CLIENT_CCPK, safe="") + "&version=2.0"
NODE_STATES = f"/organizations/{ORG}/pushy/node_states"
JOBS = f"/organizations/{ORG}/pushy/jobs"
JOB_ID = "aaaaaaaaaaaa25fd67fa8715fd547d3d"


def config_path(node: str = "web1", alias: str = "config") -> str:
    return f"/organizations/{ORG}/pushy/{alias}/{node}"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = make_harness(tmp_path)
    harness.add_user("alice", 1, admin=True)
    harness.add_user("bob", 2)
    harness.add_user("outsider", 3, orgs=())
    harness.add_client("web1", 4)
    harness.add_client("web2", 5)
    yield harness
    await harness.client.aclose()
    harness.store.close()


# --- /pushy/_status


async def test_status_needs_no_authentication(h: Harness) -> None:
    r = await h.request("GET", "/pushy/_status")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.content == (
        b'{"status":"it\'s alive","incarnation_id":"e0d96969-db1a-4df5-aabd-a029de131ca3",'
        b'"node_fsm_count":0,"job_processes":[]}'
    )


async def test_status_counts_online_nodes_and_live_jobs(h: Harness) -> None:
    h.nodes.accept(ORG, "n1", "inc-1", b"r1", "2.0", time.monotonic())
    h.nodes.accept("globex", "n2", "inc-2", b"r2", "3.0", time.monotonic())
    async with trio.open_nursery() as nursery:
        await nursery.start(h.jobs.run)
        # a real job started through the pipeline and the job handler (alice is an admin)
        r = await h.request(
            "POST",
            JOBS,
            user="alice",
            body=b'{"command":"chef-client","nodes":["n1"]}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        job_id = r.json()["uri"].rsplit("/", 1)[1]
        r = await h.request("GET", "/pushy/_status")
        assert r.json() == {
            "status": "it's alive",
            "incarnation_id": "e0d96969-db1a-4df5-aabd-a029de131ca3",
            "node_fsm_count": 2,
            "job_processes": [job_id],
        }
        nursery.cancel_scope.cancel()


async def test_status_ignores_any_auth_headers(h: Harness) -> None:
    junk = {"X-Ops-UserId": "nobody", "X-Ops-Sign": "version=9", "X-Ops-Timestamp": "bad"}
    r = await h.request("GET", "/pushy/_status/", headers=junk)
    assert r.status_code == 200
    r = await h.request("GET", "/pushy/_status", user="alice")
    assert r.status_code == 200


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"])
async def test_status_other_methods_are_405(h: Harness, method: str) -> None:
    r = await h.request(method, "/pushy/_status")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    if method != "HEAD":
        assert error_of(r) == ["method not allowed"]


async def test_status_still_negotiates(h: Harness) -> None:
    r = await h.request("GET", "/pushy/_status", headers={"Accept": "text/html"})
    assert r.status_code == 406
    assert error_of(r) == ["not acceptable; this resource produces application/json"]


# --- 404 / 405


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/pushy",
        "/organizations",
        f"/organizations/{ORG}",
        f"/organizations/{ORG}/pushy",
        f"/organizations/{ORG}/pushy/config",
        f"/organizations/{ORG}/pushy/config/",
        f"/organizations/{ORG}/pushy/connect//",
        f"/organizations/{ORG}/pushy/jobs/{JOB_ID}/output/web1/stdin",
        f"/organizations/{ORG}/pushy/jobs/{JOB_ID}/output/web1",
        f"/organizations/{ORG}/pushy/jobs/{JOB_ID}/bogus",
        f"/organizations/{ORG}/pushy/node_states/a/b",
        "/organizations/%ff/pushy/jobs",
        "/pushy/_STATUS",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD"])
async def test_unknown_routes_are_404_for_every_method(h: Harness, path: str, method: str) -> None:
    r = await h.request(method, path, user="alice")
    assert r.status_code == 404
    assert "allow" not in r.headers
    if method != "HEAD":
        assert error_of(r) == ["not found"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", JOBS, "GET, POST"),
        ("DELETE", JOBS, "GET, POST"),
        ("HEAD", JOBS, "GET, POST"),
        ("OPTIONS", JOBS, "GET, POST"),
        ("GET", f"{JOBS}/{JOB_ID}/abort", "POST"),
        ("POST", f"{JOBS}/{JOB_ID}", "GET"),
        ("POST", f"{JOBS}/{JOB_ID}/output/web1/stdout", "GET"),
        ("HEAD", NODE_STATES, "GET"),
        ("OPTIONS", f"{NODE_STATES}/web1", "GET"),
        ("POST", config_path(), "GET"),
        ("PUT", config_path(alias="connect"), "GET"),
        ("POST", f"/organizations/{ORG}/pushy/job_status_feed", "GET"),
        ("DELETE", f"/organizations/{ORG}/pushy/jobs_status_feed/{JOB_ID}", "GET"),
        ("PUT", f"{JOBS}/{JOB_ID}/nodes", "GET"),
    ],
)
async def test_wrong_method_is_405_before_authentication(
    h: Harness, method: str, path: str, allow: str
) -> None:
    r = await h.request(method, path)  # unsigned
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    if method != "HEAD":
        assert error_of(r) == ["method not allowed"]


async def test_path_normalisation(h: Harness) -> None:
    # doubled and trailing slashes are ignored; the signature covers the canonical raw path
    r = await h.request("GET", f"//organizations//{ORG}/pushy/node_states/", user="alice")
    assert r.status_code == 200
    assert r.json() == []
    # segments are percent-decoded before matching (and %2F stays inside its segment)
    r = await h.request("GET", f"/organizations/{ORG}/pushy/node%5Fstates/web%201", user="alice")
    assert r.status_code == 200
    assert r.json()["node_name"] == "web 1"
    r = await h.request("GET", f"{NODE_STATES}/a%2Fb", user="alice")
    assert r.status_code == 200
    assert r.json()["node_name"] == "a/b"
    # the query string never affects routing
    r = await h.request("GET", f"{NODE_STATES}/web1", user="alice", query="x=/y&z")
    assert r.status_code == 200


# --- header validation (§4.2)


async def test_all_headers_missing(h: Harness) -> None:
    r = await h.request("GET", NODE_STATES)
    assert r.status_code == 400
    assert "www-authenticate" not in r.headers
    assert error_of(r) == [
        "missing required authentication header(s) 'X-Ops-UserId', 'X-Ops-Timestamp', "
        "'X-Ops-Sign', 'X-Ops-Content-Hash'"
    ]


async def test_some_headers_missing_or_empty(h: Harness) -> None:
    headers = {
        "x-ops-userid": "alice",
        "X-OPS-TIMESTAMP": format_xops_timestamp(time.time()),
        "X-Ops-Sign": "",
    }
    r = await h.request("GET", NODE_STATES, headers=headers)
    assert r.status_code == 400
    assert error_of(r) == [
        "missing required authentication header(s) 'X-Ops-Sign', 'X-Ops-Content-Hash'"
    ]


async def test_bad_timestamp(h: Harness) -> None:
    r = await h.request("GET", NODE_STATES, user="alice", timestamp="2026-02-30T10:00:00Z")
    assert r.status_code == 401
    assert "www-authenticate" not in r.headers
    assert error_of(r) == ["bad header(s) 'X-Ops-Timestamp'"]
    r = await h.request("GET", NODE_STATES, user="alice", timestamp="yesterday")
    assert error_of(r) == ["bad header(s) 'X-Ops-Timestamp'"]


async def test_clock_skew(h: Harness) -> None:
    stale = format_xops_timestamp(time.time() - 1000)
    r = await h.request("GET", NODE_STATES, user="alice", timestamp=stale)
    assert r.status_code == 401
    assert "www-authenticate" not in r.headers
    assert error_of(r) == ["Failed to authenticate as alice. Synchronize the clock on your host."]


@pytest.mark.parametrize(
    "sign", ["version=1.2", "algorithm=sha256;version=1.1", "algorithm=sha1;version=1.3", "x=1"]
)
async def test_unsupported_signing_version(h: Harness, sign: str) -> None:
    r = await h.request("GET", NODE_STATES, user="alice", headers={"X-Ops-Sign": sign})
    assert r.status_code == 400
    assert error_of(r) == ["Unsupported authentication protocol version"]


async def test_header_errors_come_before_unknown_org(h: Harness) -> None:
    r = await h.request("GET", "/organizations/nope/pushy/jobs")
    assert r.status_code == 400


# --- authentication (§4.5)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
async def test_signing_versions_accepted(h: Harness, version: str) -> None:
    r = await h.request("GET", f"{NODE_STATES}/web1", user="bob", version=version)
    assert r.status_code == 200
    assert r.json() == {"node_name": "web1", "status": "offline", "availability": "unavailable"}
    body = json.dumps({"command": "x"}).encode()
    # a body is covered too (hash checked); GET with a body is fine
    h.store.add_group_members(ORG, "admins", clients=["web1"])  # a client reads as an admin
    r = await h.request("GET", f"{NODE_STATES}/web1", user="web1", version=version, body=body)
    assert r.status_code == 200


async def test_server_api_version_in_1_3(h: Harness) -> None:
    r = await h.request("GET", NODE_STATES, user="bob", server_api_version="2")
    assert r.status_code == 200
    r = await h.request(
        "GET",
        NODE_STATES,
        user="bob",
        server_api_version="2",
        headers={"X-Ops-Server-API-Version": "3"},
    )
    assert r.status_code == 401


async def test_unknown_org(h: Harness) -> None:
    r = await h.request("GET", "/organizations/nope/pushy/node_states", user="alice")
    assert r.status_code == 404
    assert error_of(r) == ["organization 'nope' does not exist."]


async def test_unknown_principal(h: Harness) -> None:
    r = await h.request("GET", NODE_STATES, user="mallory", key=rsa_key(1))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == WWW_AUTH
    assert error_of(r) == [
        "Failed to authenticate as 'mallory'. Ensure that your node_name and client key are "
        "correct."
    ]


async def test_client_of_another_org_is_unknown(h: Harness) -> None:
    h.add_client("g1", 6, org="globex")
    r = await h.request("GET", NODE_STATES, user="g1")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == WWW_AUTH


async def test_user_outside_org(h: Harness) -> None:
    r = await h.request("GET", NODE_STATES, user="outsider")
    assert r.status_code == 403
    assert "www-authenticate" not in r.headers
    assert error_of(r) == ["'outsider' is not associated with organization 'acme'"]


async def test_bad_signature(h: Harness) -> None:
    r = await h.request("GET", NODE_STATES, user="alice", key=rsa_key(2))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == WWW_AUTH
    assert error_of(r) == ["Invalid signature for user or client 'alice'"]


async def test_signature_over_another_path_fails(h: Harness) -> None:
    r = await h.request("GET", NODE_STATES, user="alice", sign_path=JOBS)
    assert r.status_code == 401
    assert error_of(r) == ["Invalid signature for user or client 'alice'"]


@pytest.mark.parametrize("version", ["1.0", "1.3"])
async def test_wrong_content_hash(h: Harness, version: str) -> None:
    r = await h.request(
        "GET",
        NODE_STATES,
        user="alice",
        body=b"tampered",
        sign_body=b"original",
        version=version,
    )
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == WWW_AUTH
    assert error_of(r) == ["Invalid signature for user or client 'alice'"]


@pytest.mark.parametrize("garbage", ["not base64!", "", "QUJD"])
async def test_signature_not_base64_or_empty(h: Harness, garbage: str) -> None:
    signed = await h.request("GET", NODE_STATES, user="alice")
    assert signed.status_code == 200
    headers = {f"X-Ops-Authorization-{i}": "" for i in range(2, 8)}
    headers["X-Ops-Authorization-1"] = garbage
    r = await h.request("GET", NODE_STATES, user="alice", headers=headers)
    assert r.status_code == 401
    assert error_of(r) == ["Invalid signature for user or client 'alice'"]


async def test_user_and_client_with_the_same_name(h: Harness) -> None:
    # user "web2" (not associated) and client "web2": the client's key decides
    h.add_user("web2", 7, orgs=())
    r = await h.request("GET", config_path("web2"), user="web2", key=rsa_key(5), query=CCPK_QUERY)
    assert r.status_code == 200
    assert "encoded_session_key" in r.json()
    # an associated user with the same name is tried first
    h.store.add_org_user(ORG, "web2")
    r = await h.request("GET", config_path("web2"), user="web2", key=rsa_key(7), query=CCPK_QUERY)
    assert r.status_code == 200
    assert "encoded_session_key" not in r.json()


# --- body size (step 5)


async def test_body_over_limit_is_413_string_shape(h: Harness) -> None:
    body = b"x" * 1_000_001
    # valid headers, bogus signature: 413 comes before authentication
    headers = {"X-Ops-Authorization-1": "AAAA"}
    r = await h.request("POST", JOBS, user="alice", body=body, sign_body=b"", headers=headers)
    assert r.status_code == 413
    assert error_of(r) == "JSON must be no more than 1000000 bytes."


async def test_streamed_body_over_limit_is_413(h: Harness) -> None:
    from pushjobs.protocol.chef_auth import sign_request

    headers = sign_request(
        method="POST", path=JOBS, body=b"", user_id="alice", private_key=h.keys["alice"]
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"y" * 65536

    r = await h.client.post(JOBS, content=chunks(), headers=headers)
    assert r.status_code == 413
    assert error_of(r) == "JSON must be no more than 1000000 bytes."


async def test_body_at_limit_passes(h: Harness) -> None:
    body = b"z" * 1_000_000
    r = await h.request("GET", NODE_STATES, user="alice", body=body)
    assert r.status_code == 200


async def test_413_comes_before_ccpk(h: Harness) -> None:
    r = await h.request("GET", config_path(), user="web1", body=b"x" * 1_000_001)
    assert r.status_code == 413


# --- config (§7.2)


def expected_config(h: Harness, node: str = "web1") -> dict[str, object]:
    doc: dict[str, object] = {
        "type": "config",
        "host": "push.example.com",
        "push_jobs": {
            "heartbeat": {
                "out_addr": "tcp://push.example.com:10000",
                "command_addr": "tcp://push.example.com:10002",
                "interval": 10.0,
                "offline_threshold": 3,
                "online_threshold": 2,
            }
        },
        "node": node,
        "organization": ORG,
        "public_key": public_key_pem(rsa_key(0).public_key()),
        "curve_public_key": SERVER_CURVE_PUBLIC,
        "lifetime": 3600,
        "max_message_skew": 300,
        "max_body_size": 65536,
        "incarnation_id": "e0d96969-db1a-4df5-aabd-a029de131ca3",
        "protocol_versions": ["2.0", "3.0"],
        "max_output_bytes": 1048576,
    }
    return doc


@pytest.mark.parametrize("alias", ["config", "connect"])
@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
async def test_config_for_the_nodes_own_client(h: Harness, alias: str, version: str) -> None:
    r = await h.request(
        "GET", config_path("web1", alias), user="web1", query=CCPK_QUERY, version=version
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    encoded = doc.pop("encoded_session_key")
    assert doc == expected_config(h)
    assert list(r.json()) == [
        *list(expected_config(h))[:7],
        "encoded_session_key",
        *list(expected_config(h))[7:],
    ]
    assert encoded["method"] == "hmac_sha256"
    session_key = decrypt_session_key(rsa_key(4), encoded["key"])
    assert session_key == h.sessions.session_key(ORG, "web1")
    assert len(session_key) == 32
    # the curve key is now allowed, bound to (org, node)
    assert h.sessions.lookup_curve(z85_decode_key(CLIENT_CCPK)) == (ORG, "web1")


async def test_config_session_key_is_stable(h: Harness) -> None:
    keys = []
    for _ in range(2):
        r = await h.request("GET", config_path(), user="web1", query=CCPK_QUERY)
        keys.append(decrypt_session_key(rsa_key(4), r.json()["encoded_session_key"]["key"]))
    assert keys[0] == keys[1]


async def test_config_for_a_user_has_no_session_key(h: Harness) -> None:
    r = await h.request("GET", config_path("web1"), user="bob", query=CCPK_QUERY)
    assert r.status_code == 200
    assert r.json() == expected_config(h)
    assert h.sessions.lookup_curve(z85_decode_key(CLIENT_CCPK)) is None
    assert h.sessions.curve_entry_count() == 0
    assert h.sessions.existing_key(ORG, "web1") is None


async def test_config_for_another_client_is_403(h: Harness) -> None:
    r = await h.request("GET", config_path("web1"), user="web2", query=CCPK_QUERY)
    assert r.status_code == 403
    assert error_of(r) == ["Client and node name must match"]
    assert h.sessions.curve_entry_count() == 0
    assert h.sessions.existing_key(ORG, "web1") is None


async def test_config_node_need_not_exist_and_name_is_exact(h: Harness) -> None:
    r = await h.request("GET", config_path("WEB1"), user="web1", query=CCPK_QUERY)
    assert r.status_code == 403
    assert error_of(r) == ["Client and node name must match"]
    r = await h.request("GET", config_path("ghost"), user="alice", query=CCPK_QUERY)
    assert r.status_code == 200
    assert r.json()["node"] == "ghost"


async def test_ccpk_missing_or_bad_before_authentication(h: Harness) -> None:
    bogus = {"X-Ops-Authorization-1": "AAAA"}
    r = await h.request("GET", config_path(), user="web1", headers=bogus)
    assert r.status_code == 400
    assert error_of(r) == ["Missing ccpk"]
    r = await h.request("GET", config_path(), user="web1", headers=bogus, query="ccpk=")
    assert r.status_code == 400
    assert error_of(r) == ["Missing ccpk"]
    for bad in ["abc", quote(CLIENT_CCPK[:-1] + "~", safe=""), quote(CLIENT_CCPK + "0", safe="")]:
        r = await h.request("GET", config_path(), user="web1", headers=bogus, query=f"ccpk={bad}")
        assert r.status_code == 401
        assert "www-authenticate" not in r.headers
        assert error_of(r) == ["Bad ccpk"]
    # unknown org: still the ccpk check first (step 6 before step 7)
    r = await h.request("GET", "/organizations/nope/pushy/config/web1", user="web1")
    assert error_of(r) == ["Missing ccpk"]


async def test_ccpk_with_unescaped_plus_is_accepted(h: Harness) -> None:
    # `+` is a Z85 character; only %XX escapes are decoded, so a literal `+` survives
    key = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    plus = key[:5] + "+" + key[6:]
    z85_decode_key(plus)
    r = await h.request("GET", config_path(), user="web1", query=f"ccpk={plus}")
    assert r.status_code == 200
    assert h.sessions.lookup_curve(z85_decode_key(plus)) == (ORG, "web1")


async def test_curve_key_not_registered_on_failed_authentication(h: Harness) -> None:
    r = await h.request("GET", config_path(), user="web1", key=rsa_key(5), query=CCPK_QUERY)
    assert r.status_code == 401
    assert h.sessions.curve_entry_count() == 0
    assert h.sessions.existing_key(ORG, "web1") is None


async def test_config_with_curve_disabled(tmp_path: Path) -> None:
    h = make_harness(tmp_path, curve=False, heartbeat_interval=1)
    try:
        h.add_client("web1", 4)
        h.add_user("bob", 2)
        # ccpk is ignored (absent or garbage)
        r = await h.request("GET", config_path(), user="web1", query="ccpk=garbage")
        assert r.status_code == 200
        doc = r.json()
        assert "curve_public_key" not in doc
        assert b'"interval":1.0,' in r.content
        assert "encoded_session_key" in doc
        assert h.sessions.curve_entry_count() == 0
        r = await h.request("GET", config_path(), user="bob")
        assert r.status_code == 200
        assert "encoded_session_key" not in r.json()
    finally:
        await h.client.aclose()
        h.store.close()


async def test_config_needs_authentication(h: Harness) -> None:
    r = await h.request("GET", config_path(), query=CCPK_QUERY)
    assert r.status_code == 400
    assert error_of(r)[0].startswith("missing required authentication header(s)")


# --- node states (§7.7, §7.8)


async def test_node_states(h: Harness) -> None:
    nodes = h.nodes
    now = time.monotonic()
    nodes.accept(ORG, "zeta", "inc-z", b"rz", "2.0", now)
    nodes.accept(ORG, "alpha", "inc-a", b"ra", "3.0", now)
    nodes.accept("globex", "other", "inc-o", b"ro", "3.0", now)
    nodes.aborted(ORG, "alpha")  # rehab -> idle
    r = await h.request("GET", NODE_STATES, user="bob")
    assert r.status_code == 200
    assert r.json() == [
        {"node_name": "alpha", "availability": "available"},
        {"node_name": "zeta", "availability": "unavailable"},
    ]
    cases = {
        "alpha": ("online", "available"),
        "zeta": ("online", "unavailable"),
        "other": ("offline", "unavailable"),
        "never-seen": ("offline", "unavailable"),
    }
    for node, (status, availability) in cases.items():
        r = await h.request("GET", f"{NODE_STATES}/{node}", user="bob")
        assert r.status_code == 200
        assert r.json() == {"node_name": node, "status": status, "availability": availability}


async def test_json_is_compact_utf8(h: Harness) -> None:
    r = await h.request("GET", f"{NODE_STATES}/{quote('nöde-ß')}", user="bob")
    assert r.status_code == 200
    assert r.content == (
        '{"node_name":"nöde-ß","status":"offline","availability":"unavailable"}'.encode()
    )


# --- negotiation (step 9)


async def test_406_after_authorization(h: Harness) -> None:
    r = await h.request("GET", NODE_STATES, user="bob", headers={"Accept": "text/html"})
    assert r.status_code == 406
    assert error_of(r) == ["not acceptable; this resource produces application/json"]
    # unsigned: the header check (step 4) decides first
    r = await h.request("GET", NODE_STATES, headers={"Accept": "text/html"})
    assert r.status_code == 400
    # bad signature: authentication (step 7) decides first
    r = await h.request(
        "GET", NODE_STATES, user="bob", key=rsa_key(1), headers={"Accept": "text/html"}
    )
    assert r.status_code == 401


async def test_406_texts_for_feeds_and_output(h: Harness) -> None:
    for path in (
        f"/organizations/{ORG}/pushy/job_status_feed",
        f"/organizations/{ORG}/pushy/jobs_status_feed/{JOB_ID}",
    ):
        r = await h.request("GET", path, user="bob", headers={"Accept": "application/json"})
        assert r.status_code == 406
        assert error_of(r) == ["not acceptable; this resource produces text/event-stream"]
    r = await h.request(
        "GET",
        f"{JOBS}/{JOB_ID}/output/web1/stdout",
        user="bob",
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 406
    assert error_of(r) == [
        "not acceptable; this resource produces application/octet-stream, text/event-stream"
    ]


async def test_accept_variants_pass(h: Harness) -> None:
    for accept in (
        "application/json",
        "*/*",
        "application/*;q=0.2, text/html",
        "text/html;q=0.9, */*;q=0.1",
    ):
        r = await h.request("GET", NODE_STATES, user="bob", headers={"Accept": accept})
        assert r.status_code == 200, accept


# --- 500 and handler context


async def test_unexpected_exception_is_500_without_traceback(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(ctx: RequestContext, deps: HttpDeps) -> Response:
        raise RuntimeError("secret detail")

    routes = (Route(("boom",), {"GET": Endpoint(AccessRule.NONE, boom)}, ("application/json",)),)
    async with client_for(h.deps, routes) as client:
        with caplog.at_level(logging.ERROR, logger="pushjobs.server.http"):
            r = await client.get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": ["internal server error"]}
    assert b"secret" not in r.content
    assert any("secret detail" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)


async def test_handler_gets_the_request_context(h: Harness) -> None:
    seen: dict[str, object] = {}

    async def probe(ctx: RequestContext, deps: HttpDeps) -> Response:
        seen["ctx"] = ctx
        seen["deps"] = deps
        return Response(b"ok", media_type="text/plain")

    routes = (
        Route(
            ("organizations", "{org}", "pushy", "jobs", "{id}", "output", "{node}", "{channel}"),
            {"POST": Endpoint(AccessRule.READ, probe)},
            ("application/octet-stream", "text/event-stream"),
            {"channel": frozenset({"stdout", "stderr"})},
        ),
    )
    await h.serve(h.deps, routes)
    path = f"{JOBS}/{JOB_ID}/output/web%201/stderr"
    h.store.add_group_members(ORG, "admins", clients=["web1"])  # a client reads as an admin
    r = await h.request(
        "POST", path, user="web1", body=b"payload", headers={"Accept": "text/event-stream"}
    )
    assert r.status_code == 200
    ctx = seen["ctx"]
    assert isinstance(ctx, RequestContext)
    assert seen["deps"] is h.deps
    org, requestor = ctx.authorized()
    assert org.name == ORG
    assert ctx.params == {"org": ORG, "id": JOB_ID, "node": "web 1", "channel": "stderr"}
    assert (requestor.name, requestor.type) == ("web1", "client")
    assert ctx.body == b"payload"
    assert ctx.media_type == "text/event-stream"
    assert await ctx.request.body() == b"payload"


async def test_non_ascii_user_name(h: Harness) -> None:
    h.add_user("jörg", 6)
    from pushjobs.protocol.chef_auth import sign_request

    for version in ("1.0", "1.1", "1.3"):
        headers = sign_request(
            method="GET",
            path=NODE_STATES,
            body=b"",
            user_id="jörg",
            private_key=rsa_key(6),
            version=version,
        )
        raw = [(k.encode(), v.encode("utf-8")) for k, v in headers.items()]
        r = await h.client.get(NODE_STATES, headers=raw)
        assert r.status_code == 200, r.text


class UnreachableBackend:
    """Stands in for a remote backend (Chef Server) whose host refuses connections."""

    async def org(self, name: str) -> Org | None:
        raise PrincipalBackendUnavailable("connection refused")

    async def principals(self, org_name: str, name: str) -> list[Principal]:
        raise PrincipalBackendUnavailable("connection refused")

    async def group(self, org_name: str, name: str) -> Group | None:
        raise PrincipalBackendUnavailable("connection refused")

    async def is_member(self, org_name: str, group: str, requestor: Requestor) -> bool:
        raise PrincipalBackendUnavailable("connection refused")


async def test_unreachable_principal_backend_is_502(h: Harness) -> None:
    await h.serve_with(principals=UnreachableBackend())
    r = await h.request("GET", NODE_STATES, user="alice")
    assert r.status_code == 502
    assert error_of(r) == ["Failed to connect to the principal backend: connection refused"]
    assert (await h.request("GET", "/pushy/_status")).status_code == 200

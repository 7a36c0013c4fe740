"""The chef-server principal backend against an in-memory fake Chef Server (httpx.MockTransport).

The fake verifies the superuser's signatures with the protocol library, answers like Chef
(organizations, groups, the internal principals endpoint) and can fail in the ways a real
deployment does (refused connection, timeout, 5xx, garbage).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from pushjobs.protocol.chef_auth import sign_request, validate_auth_headers, verify_request
from pushjobs.protocol.keys import generate_rsa_key, private_key_pem, public_key_pem
from pushjobs.server.config import Settings
from pushjobs.server.errors import StartupError
from pushjobs.server.principals.chef_server import (
    NEGATIVE_TTL_MAX,
    ChefBackendConfigError,
    ChefServerPrincipals,
    TTLCache,
    load_superuser_key,
)
from pushjobs.server.principals.errors import (
    AccessDenied,
    AuthenticationFailed,
    PrincipalBackendUnavailable,
)
from pushjobs.server.principals.requestor import Requestor
from pushjobs.server.principals.rules import AccessRule, authenticate, authorize
from pushjobs.server.runtime import build_principals
from pushjobs.server.store.interfaces import AsyncStore
from pushjobs.server.store.records import Group, Org, Principal
from pushjobs.server.store.sqlite import SqliteStore

CHEF_HOST = "chef.test"
PRINCIPALS_HOST = "chef-internal.test"
SUPERUSER = "pivotal"
GUID = "8f1e55b3a1c24bd6a52b0b1f54c2e0aa"


@functools.cache
def rsa_key(index: int) -> Any:
    return generate_rsa_key(2048)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeChef:
    """Chef Server API + principals endpoint as one MockTransport handler."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.orgs: dict[str, dict[str, Any]] = {"acme": {"name": "acme", "guid": GUID}}
        self.principals: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.fail: str | None = None
        self.raw: dict[str, tuple[int, bytes]] = {}  # path -> forced (status, body)
        self.gate: trio.Event | None = None

    def add_principal(self, org: str, name: str, kind: str, key_index: int, member: bool = True):
        entry = {
            "name": name,
            "type": kind,
            "public_key": public_key_pem(rsa_key(key_index).public_key()),
            "authz_id": f"{name}-authz",
            "org_member": member,
        }
        self.principals.setdefault((org, name), []).append(entry)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail == "connect":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if self.fail == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if self.fail == "read":
            raise httpx.ReadError("connection reset", request=request)
        path = request.url.raw_path.decode()
        if path in self.raw:
            status, body = self.raw[path]
            return httpx.Response(status, content=body)
        if self.fail is not None:
            return httpx.Response(int(self.fail), json={"error": ["down"]})
        if request.url.host == PRINCIPALS_HOST:
            return self._principals(request, path)
        assert request.url.host == CHEF_HOST
        denied = self._check_signature(request, path)
        if denied is not None:
            return denied
        return self._api(path.removeprefix(self.prefix))

    def _check_signature(self, request: httpx.Request, path: str) -> httpx.Response | None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = validate_auth_headers(headers, time.time())
        ok = auth.user_id == SUPERUSER and verify_request(
            auth,
            method=request.method,
            path=path,
            body=request.content,
            public_key=rsa_key(0).public_key(),
        )
        if not ok:
            return httpx.Response(401, json={"error": ["Invalid signature for user or client"]})
        return None

    def _api(self, path: str) -> httpx.Response:
        parts = path.strip("/").split("/")
        if parts[0] != "organizations" or len(parts) not in (2, 4):
            return httpx.Response(404, json={"error": ["not found"]})
        org = self.orgs.get(parts[1])
        if org is None:
            return httpx.Response(
                404, json={"error": [f"organization '{parts[1]}' does not exist."]}
            )
        if len(parts) == 2:
            return httpx.Response(
                200, json={**org, "full_name": "Acme Inc.", "org_type": "Business"}
            )
        group = self.groups.get((parts[1], parts[3])) if parts[2] == "groups" else None
        if group is None:
            return httpx.Response(404, json={"error": ["Cannot load group"]})
        return httpx.Response(200, json={"actors": [], "groupname": parts[3], **group})

    def _principals(self, request: httpx.Request, path: str) -> httpx.Response:
        assert request.headers.get("x-ops-server-api-version") == "1"
        assert "x-ops-userid" not in request.headers  # the internal endpoint is unsigned
        parts = path.strip("/").split("/")
        assert parts[0] == "organizations" and parts[2] == "principals", path
        if parts[1] not in self.orgs:
            return httpx.Response(404, json={"not_found": "org"})
        found = self.principals.get((parts[1], parts[3]))
        if not found:
            return httpx.Response(404, json={"not_found": "principal"})
        return httpx.Response(200, json={"principals": found})

    def paths(self) -> list[str]:
        return [r.url.raw_path.decode() for r in self.requests]


def settings(ttl: float = 60.0, chef_url: str = f"https://{CHEF_HOST}") -> Settings:
    s = Settings()
    s.principals.backend = "chef-server"
    s.principals.chef_server_url = chef_url
    s.principals.principals_url = f"http://{PRINCIPALS_HOST}:8000"
    s.principals.superuser_name = SUPERUSER
    s.principals.cache_ttl = ttl
    return s


def backend(fake: FakeChef, clock: FakeClock | None = None, **kw: Any) -> ChefServerPrincipals:
    chef_url = f"https://{CHEF_HOST}{fake.prefix}"
    return ChefServerPrincipals(
        settings(kw.pop("ttl", 60.0), chef_url),
        superuser_key=rsa_key(0),
        transport=httpx.MockTransport(fake),
        clock=clock or FakeClock(),
        **kw,
    )


# ---- organizations ---------------------------------------------------------------------------


async def test_org_found_signed_as_superuser() -> None:
    fake = FakeChef()
    org = await backend(fake).org("acme")
    assert org == Org(id=GUID, name="acme", full_name="Acme Inc.", created_at=0.0)
    [request] = fake.requests
    assert request.url.host == CHEF_HOST
    assert request.headers["x-ops-userid"] == SUPERUSER
    assert request.headers["x-ops-sign"] == "algorithm=sha256;version=1.3;"


async def test_org_unknown_is_none() -> None:
    assert await backend(FakeChef()).org("nope") is None


async def test_chef_url_with_path_prefix_is_signed_whole() -> None:
    fake = FakeChef(prefix="/chef")
    org = await backend(fake).org("acme")
    assert org is not None and org.id == GUID
    assert fake.paths() == ["/chef/organizations/acme"]


async def test_org_without_guid_is_malformed() -> None:
    fake = FakeChef()
    fake.orgs["acme"] = {"name": "acme"}
    with pytest.raises(PrincipalBackendUnavailable) as info:
        await backend(fake).org("acme")
    assert info.value.reason == "the Chef Server sent a malformed answer"


async def test_names_no_chef_object_can_have_are_not_asked() -> None:
    fake = FakeChef()
    chef = backend(fake)
    assert await chef.org("..") is None
    assert await chef.principals("acme", ".") == []
    assert await chef.group("acme", "") is None
    assert fake.requests == []


async def test_names_are_percent_encoded() -> None:
    fake = FakeChef()
    await backend(fake).principals("acme", "a b/c")
    assert fake.paths() == ["/organizations/acme/principals/a%20b%2Fc"]


async def test_org_is_mirrored_into_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pushjobs.db")
    fake = FakeChef()
    mirror = AsyncStore(store)
    org = await backend(fake, store=mirror).org("acme")
    local = store.get_org("acme")
    assert local is not None and org == local
    assert local.full_name == "Acme Inc."
    # A fresh backend (empty cache) finds the same row instead of creating another.
    again = await backend(fake, store=mirror).org("acme")
    assert again == local
    assert [o.name for o in store.list_orgs()] == ["acme"]
    # Unknown in Chef: nothing is created locally.
    assert await backend(fake, store=mirror).org("nope") is None
    assert store.get_org("nope") is None


async def test_existing_local_org_is_reused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "pushjobs.db")
    existing = store.create_org("acme", "Local Acme")
    assert await backend(FakeChef(), store=AsyncStore(store)).org("acme") == existing


# ---- principals ------------------------------------------------------------------------------


async def test_user_and_client_of_one_name() -> None:
    fake = FakeChef()
    fake.add_principal("acme", "alice", "user", 1, member=False)
    fake.add_principal("acme", "alice", "client", 2)
    found = await backend(fake).principals("acme", "alice")
    assert found == [
        Principal("alice", "user", public_key_pem(rsa_key(1).public_key()), False),
        Principal("alice", "client", public_key_pem(rsa_key(2).public_key()), True),
    ]
    [request] = fake.requests
    assert str(request.url) == f"http://{PRINCIPALS_HOST}:8000/organizations/acme/principals/alice"


async def test_not_found_org_or_principal_is_empty() -> None:
    fake = FakeChef()
    chef = backend(fake)
    assert await chef.principals("nope", "alice") == []
    assert await chef.principals("acme", "nobody") == []


async def test_api_v0_single_object_is_accepted() -> None:
    fake = FakeChef()
    pem = public_key_pem(rsa_key(1).public_key())
    body = b'{"name":"bob","type":"user","public_key":%s,"authz_id":"x","org_member":true}' % (
        httpx.Response(200, json=pem).content
    )
    fake.raw["/organizations/acme/principals/bob"] = (200, body)
    assert await backend(fake).principals("acme", "bob") == [Principal("bob", "user", pem, True)]


async def test_unknown_principal_type_is_skipped() -> None:
    fake = FakeChef()
    fake.add_principal("acme", "carol", "robot", 1)
    fake.add_principal("acme", "carol", "client", 2)
    found = await backend(fake).principals("acme", "carol")
    assert [p.type for p in found] == ["client"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, b""),
        (404, b'{"not_found":"something"}'),
        (200, b"<html>"),
        (200, b'{"principals": {}}'),
        (200, b'{"principals": [{"name": "x", "type": "user", "public_key": "k"}]}'),
        (200, b'{"principals": ["x"]}'),
    ],
)
async def test_malformed_principals_answer(status: int, body: bytes) -> None:
    fake = FakeChef()
    fake.raw["/organizations/acme/principals/x"] = (status, body)
    with pytest.raises(PrincipalBackendUnavailable) as info:
        await backend(fake).principals("acme", "x")
    assert info.value.reason == "the Chef principals endpoint sent a malformed answer"


# ---- groups ----------------------------------------------------------------------------------


async def test_group_members_sorted_and_absent_group() -> None:
    fake = FakeChef()
    fake.groups[("acme", "admins")] = {
        "users": ["zed", "amy"],
        "clients": ["node2", "node1"],
        "groups": ["ops"],
    }
    fake.groups[("acme", "ops")] = {"users": ["bob"]}  # no clients/groups keys
    chef = backend(fake)
    assert await chef.group("acme", "admins") == Group(
        "admins", ["amy", "zed"], ["node1", "node2"], ["ops"]
    )
    assert await chef.group("acme", "ops") == Group("ops", ["bob"], [], [])
    assert await chef.group("acme", "pushy_job_readers") is None
    assert all(r.headers["x-ops-userid"] == SUPERUSER for r in fake.requests)


async def test_group_with_bad_member_list_is_malformed() -> None:
    fake = FakeChef()
    fake.groups[("acme", "admins")] = {"users": "amy"}
    with pytest.raises(PrincipalBackendUnavailable) as info:
        await backend(fake).group("acme", "admins")
    assert info.value.reason == "the Chef Server sent a malformed answer"


async def test_transitive_membership_with_cycle() -> None:
    fake = FakeChef()
    fake.groups[("acme", "pushy_job_writers")] = {"groups": ["a"]}
    fake.groups[("acme", "a")] = {"groups": ["b", "pushy_job_writers"]}
    fake.groups[("acme", "b")] = {"clients": ["node1"], "groups": ["a"]}
    chef = backend(fake)
    node1 = Requestor("node1", "client", None)
    other = Requestor("node1", "user", None)
    assert await chef.is_member("acme", "pushy_job_writers", node1)
    assert not await chef.is_member("acme", "pushy_job_writers", other)


# ---- caching ---------------------------------------------------------------------------------


async def test_positive_answers_are_cached_for_ttl() -> None:
    fake = FakeChef()
    fake.add_principal("acme", "alice", "user", 1)
    clock = FakeClock()
    chef = backend(fake, clock, ttl=30.0)
    for _ in range(3):
        await chef.org("acme")
        await chef.principals("acme", "alice")
    assert len(fake.requests) == 2
    clock.now += 29.0
    await chef.org("acme")
    assert len(fake.requests) == 2
    clock.now += 1.0
    await chef.org("acme")
    await chef.principals("acme", "alice")
    assert len(fake.requests) == 4


async def test_negative_answers_expire_sooner() -> None:
    fake = FakeChef()
    clock = FakeClock()
    chef = backend(fake, clock, ttl=60.0)
    assert await chef.principals("acme", "newbie") == []
    assert await chef.group("acme", "pushy_job_readers") is None
    assert len(fake.requests) == 2
    fake.add_principal("acme", "newbie", "user", 1)
    clock.now += NEGATIVE_TTL_MAX
    assert len(await chef.principals("acme", "newbie")) == 1
    assert len(fake.requests) == 3


async def test_returned_principal_list_is_a_copy() -> None:
    fake = FakeChef()
    fake.add_principal("acme", "alice", "user", 1)
    chef = backend(fake)
    (await chef.principals("acme", "alice")).clear()
    assert len(await chef.principals("acme", "alice")) == 1


async def test_concurrent_lookups_share_one_request() -> None:
    fake = FakeChef()
    fake.gate = trio.Event()
    chef = backend(fake)
    results: list[Any] = []

    async def look() -> None:
        results.append(await chef.org("acme"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(look)
        await trio.testing.wait_all_tasks_blocked()
        fake.gate.set()
    assert len(fake.requests) == 1
    assert len(results) == 5 and all(r is not None and r.id == GUID for r in results)


async def test_concurrent_lookups_share_the_failure() -> None:
    fake = FakeChef()
    fake.gate = trio.Event()
    fake.fail = "connect"
    chef = backend(fake)
    reasons: list[str] = []

    async def look() -> None:
        try:
            await chef.org("acme")
        except PrincipalBackendUnavailable as exc:
            reasons.append(exc.reason)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(look)
        await trio.testing.wait_all_tasks_blocked()
        fake.gate.set()
    assert len(fake.requests) == 1
    assert reasons == ["cannot connect to the Chef Server"] * 3


def test_ttl_cache_bounded() -> None:
    clock = FakeClock()
    cache = TTLCache(clock, max_entries=3)
    cache.put("a", 1, 10)
    cache.put("b", 2, 1)
    cache.put("c", 3, 10)
    clock.now += 2  # "b" expired: room is made by dropping it
    cache.put("d", 4, 10)
    assert len(cache) == 3 and cache.get("a") == (True, 1) and cache.get("b") == (False, None)
    assert cache.get("a") == (True, 1)  # "a" used: "c" is now the least recently used
    cache.put("e", 5, 10)  # nothing expired: only the least recently used entry goes
    assert len(cache) == 3 and cache.get("c") == (False, None)
    assert cache.get("a") == (True, 1) and cache.get("d") == (True, 4)
    assert cache.get("e") == (True, 5)


# ---- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail", "reason"),
    [
        ("connect", "cannot connect to the Chef Server"),
        ("timeout", "timed out waiting for the Chef Server"),
        ("read", "request to the Chef Server failed"),
        ("500", "the Chef Server answered HTTP 500"),
        ("503", "the Chef Server answered HTTP 503"),
    ],
)
async def test_unavailable_reasons(fail: str, reason: str) -> None:
    fake = FakeChef()
    fake.fail = fail
    with pytest.raises(PrincipalBackendUnavailable) as info:
        await backend(fake).org("acme")
    assert info.value.reason == reason


async def test_principals_endpoint_failure_names_it() -> None:
    fake = FakeChef()
    fake.fail = "connect"
    with pytest.raises(PrincipalBackendUnavailable) as info:
        await backend(fake).principals("acme", "alice")
    assert info.value.reason == "cannot connect to the Chef principals endpoint"


async def test_wrong_superuser_key_is_unavailable_not_unknown() -> None:
    fake = FakeChef()
    chef = ChefServerPrincipals(
        settings(),
        superuser_key=rsa_key(3),
        transport=httpx.MockTransport(fake),
    )
    with pytest.raises(PrincipalBackendUnavailable) as info:
        await chef.org("acme")
    assert info.value.reason == "the Chef Server answered HTTP 401"


async def test_failures_are_not_cached() -> None:
    fake = FakeChef()
    chef = backend(fake)
    fake.fail = "503"
    with pytest.raises(PrincipalBackendUnavailable):
        await chef.group("acme", "admins")
    fake.fail = None
    fake.groups[("acme", "admins")] = {"users": ["amy"]}
    assert await chef.group("acme", "admins") == Group("admins", ["amy"], [], [])


# ---- authentication and authorization through the backend ------------------------------------


async def test_authenticate_and_authorize_with_chef_principals() -> None:
    fake = FakeChef()
    fake.add_principal("acme", "alice", "user", 1)
    fake.add_principal("acme", "mallory", "user", 2)
    fake.groups[("acme", "pushy_job_readers")] = {"users": ["alice"]}
    chef = backend(fake)
    org = await chef.org("acme")
    assert org is not None
    path = "/organizations/acme/pushy/node_states"

    async def auth_as(user: str, key_index: int) -> Requestor:
        headers = sign_request(
            method="GET", path=path, body=b"", user_id=user, private_key=rsa_key(key_index)
        )
        auth = validate_auth_headers({k.lower(): v for k, v in headers.items()}, time.time())
        return await authenticate(chef, org, auth, method="GET", path=path, body=b"")

    alice = await auth_as("alice", 1)
    assert (alice.name, alice.type) == ("alice", "user")
    await authorize(chef, "acme", AccessRule.READ, alice)
    mallory = await auth_as("mallory", 2)
    with pytest.raises(AccessDenied) as denied:
        await authorize(chef, "acme", AccessRule.READ, mallory)
    assert denied.value.status == 403
    with pytest.raises(AuthenticationFailed) as bad:
        await auth_as("alice", 2)
    assert bad.value.status == 401


# ---- configuration ---------------------------------------------------------------------------


def test_load_superuser_key(tmp_path: Path) -> None:
    good = tmp_path / "pivotal.pem"
    good.write_bytes(private_key_pem(rsa_key(0)))
    assert load_superuser_key(good).private_numbers() == rsa_key(0).private_numbers()
    with pytest.raises(ChefBackendConfigError, match="is required"):
        load_superuser_key(None)
    with pytest.raises(ChefBackendConfigError, match=r"missing\.pem not found"):
        load_superuser_key(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ChefBackendConfigError, match="is not an RSA private key"):
        load_superuser_key(junk)
    with pytest.raises(ChefBackendConfigError, match="cannot read superuser key"):
        load_superuser_key(tmp_path)  # a directory


def test_build_principals_startup_errors(tmp_path: Path) -> None:
    s = settings()
    s.principals.superuser_key = tmp_path / "missing.pem"
    with pytest.raises(StartupError, match="not found"):
        build_principals(s, None)
    s.principals.chef_server_url = None
    with pytest.raises(StartupError, match=r"'principals\.chef_server_url' is required"):
        build_principals(s, None)


def test_build_principals_chooses_backend(tmp_path: Path) -> None:
    key = tmp_path / "pivotal.pem"
    key.write_bytes(private_key_pem(rsa_key(0)))
    s = settings()
    s.principals.superuser_key = key
    assert isinstance(build_principals(s, None), ChefServerPrincipals)
    assert type(build_principals(Settings(), None)).__name__ == "EmbeddedPrincipals"


async def test_outage_warned_once_and_recovery_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pushjobs.server.principals.chef_server")
    fake = FakeChef()
    chef = backend(fake)
    fake.fail = "connect"
    for _ in range(3):
        with pytest.raises(PrincipalBackendUnavailable):
            await chef.org("acme")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "GET https://chef.test/organizations/acme: cannot connect" in warnings[0].getMessage()
    fake.fail = None
    assert await chef.org("acme") is not None
    assert "the Chef Server answers again" in caplog.records[-1].getMessage()

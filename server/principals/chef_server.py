"""The Chef Server principal backend (http-api.md §9, `[principals] backend = "chef-server"`).

Organizations and groups are read from the Chef Server API, signed as the superuser; principals
from Chef's internal, unsigned principals endpoint. Answers are cached for `cache_ttl` seconds
(negative answers for at most `NEGATIVE_TTL_MAX`); concurrent look-ups of one key share a single
request. Anything that keeps a definite answer from arriving (unreachable, timeout, 5xx,
unexpected status, malformed body) raises `PrincipalBackendUnavailable`, which the pipeline turns
into a 502. Errors are never cached.

Jobs reference their organization by a row in the server's own database, so an organization
found in Chef is mirrored there (by name) on first sight when a store is given.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
import trio

from pushjobs.protocol.chef_auth import sign_request
from pushjobs.protocol.errors import KeyFormatError
from pushjobs.protocol.keys import load_private_key
from pushjobs.protocol.vocabulary import MediaType
from pushjobs.server.lru import LruCache
from pushjobs.server.principals.errors import PrincipalBackendUnavailable
from pushjobs.server.principals.rules import transitive_member
from pushjobs.server.store.interfaces import AlreadyExistsError, AsyncPrincipalStore
from pushjobs.server.store.records import PRINCIPAL_CLIENT, PRINCIPAL_USER, Group, Org, Principal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from pushjobs.server.config import Settings
    from pushjobs.server.principals.requestor import Requestor

log = logging.getLogger("pushjobs.server.principals.chef_server")

NEGATIVE_TTL_MAX = 5.0  # "does not exist" is re-asked sooner, so new principals work quickly
CACHE_MAX_ENTRIES = 20_000
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SIGN_VERSION = "1.3"  # supported by every Chef Server since 12.4
CHEF_API_VERSION = "1"  # principals answer as {"principals": [...]} from version 1 on
CHEF_SERVER = "the Chef Server"
PRINCIPALS_ENDPOINT = "the Chef principals endpoint"
_PRINCIPAL_TYPES = (PRINCIPAL_USER, PRINCIPAL_CLIENT)


class ChefBackendConfigError(Exception):
    """The chef-server backend cannot be set up (missing URL or unusable superuser key)."""


def load_superuser_key(path: Path | None) -> RSAPrivateKey:
    """Read the superuser's private key; `ChefBackendConfigError` when missing or unusable."""
    if path is None:
        raise ChefBackendConfigError(
            "setting 'principals.superuser_key' is required with backend 'chef-server'"
        )
    try:
        pem = Path(path).read_bytes()
    except FileNotFoundError:
        raise ChefBackendConfigError(f"superuser key {path} not found") from None
    except OSError as exc:
        raise ChefBackendConfigError(
            f"cannot read superuser key {path}: {exc.strerror or exc}"
        ) from None
    try:
        return load_private_key(pem)
    except KeyFormatError as exc:
        raise ChefBackendConfigError(
            f"superuser key {path} is not an RSA private key: {exc}"
        ) from None


class TTLCache:
    """A bounded map whose entries expire; `clock` is a monotonic time source.

    When full, the least recently used entry gives way, never the whole cache: a flood of
    look-ups for made-up names cannot evict the entries real nodes and users depend on.
    """

    def __init__(self, clock: Callable[[], float], max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self._clock = clock
        self._entries: LruCache[Hashable, tuple[float, Any]] = LruCache(max_entries)

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """(True, value) for a live entry, else (False, None)."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if self._clock() >= expires:
            self._entries.pop(key)
            return False, None
        return True, value

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Store `value` for `ttl` seconds; when full, expired entries go first, then the LRU."""
        now = self._clock()
        entries = self._entries
        if len(entries) >= entries.capacity and key not in entries:
            entries.prune(lambda entry: entry[0] <= now)
        entries.put(key, (now + ttl, value))

    def clear(self) -> None:
        self._entries.prune(lambda _entry: True)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class _Flight:
    """One look-up in progress; waiters share its outcome."""

    done: trio.Event = field(default_factory=trio.Event)
    error: PrincipalBackendUnavailable | None = None


def _segment(name: str) -> str | None:
    """`name` as one URL path segment, or None for names no Chef object can have."""
    if name in ("", ".", ".."):
        return None
    return quote(name, safe="")


class MalformedAnswer(PrincipalBackendUnavailable):
    """An answer that does not have the documented shape."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source} sent a malformed answer")
        self.source = source
        self.detail = detail


def _malformed(source: str, detail: str = "unexpected shape") -> MalformedAnswer:
    return MalformedAnswer(source, detail)


def _string_list(body: dict[str, Any], key: str, source: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _malformed(source)
    return sorted(set(value))


def _principal(entry: Any, source: str) -> Principal | None:
    """One entry of the principals answer; None for a type we do not know."""
    if not isinstance(entry, dict):
        raise _malformed(source)
    name = entry.get("name")
    kind = entry.get("type")
    public_key = entry.get("public_key")
    member = entry.get("org_member")
    if not isinstance(name, str) or not isinstance(kind, str) or not isinstance(public_key, str):
        raise _malformed(source)
    if kind not in _PRINCIPAL_TYPES:
        log.warning("ignoring principal '%s' of unknown type %r", name, kind)
        return None
    if not isinstance(member, bool):
        raise _malformed(source)
    return Principal(name=name, type=kind, public_key=public_key, org_member=member)


class ChefServerPrincipals:
    """Principals, organizations and groups from a Chef Server (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: AsyncPrincipalStore | None = None,
        superuser_key: RSAPrivateKey | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        conf = settings.principals
        if not conf.chef_server_url:
            raise ChefBackendConfigError(
                "setting 'principals.chef_server_url' is required with backend 'chef-server'"
            )
        self._chef_url = conf.chef_server_url.rstrip("/")
        self._chef_path = urlsplit(self._chef_url).path.rstrip("/")
        self._principals_url = conf.principals_url.rstrip("/")
        self._superuser = conf.superuser_name
        self._key = (
            superuser_key if superuser_key is not None else load_superuser_key(conf.superuser_key)
        )
        self._ttl = float(conf.cache_ttl)
        self._negative_ttl = min(self._ttl, NEGATIVE_TTL_MAX)
        self._store = store
        self._cache = TTLCache(clock)
        self._flights: dict[Hashable, _Flight] = {}
        self._failing: set[str] = set()  # sources whose last request failed (log once)
        self._client = httpx.AsyncClient(
            transport=transport, timeout=TIMEOUT, follow_redirects=False
        )
        log.info(
            "principals: chef-server backend, Chef Server %s, principals endpoint %s, "
            "superuser %s, cache %gs",
            self._chef_url,
            self._principals_url,
            self._superuser,
            self._ttl,
        )

    # -- the backend interface (http-api.md §9) ------------------------------------------------
    async def org(self, name: str) -> Org | None:
        """The organization named `name` (mirrored into the store when one is set), or None."""
        return await self._cached(("org", name), CHEF_SERVER, lambda: self._fetch_org(name))

    async def principals(self, org_name: str, name: str) -> list[Principal]:
        """The user and/or client called `name`, as Chef's principals endpoint reports them."""
        found = await self._cached(
            ("principals", org_name, name),
            PRINCIPALS_ENDPOINT,
            lambda: self._fetch_principals(org_name, name),
        )
        return list(found)

    async def group(self, org_name: str, name: str) -> Group | None:
        """A group of the organization, or None when Chef says it does not exist."""
        return await self._cached(
            ("group", org_name, name), CHEF_SERVER, lambda: self._fetch_group(org_name, name)
        )

    async def is_member(self, org_name: str, group: str, requestor: Requestor) -> bool:
        """True when the requestor is a transitive member of the group."""
        return await transitive_member(self, org_name, group, requestor)

    def clear_cache(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    # -- caching -------------------------------------------------------------------------------
    async def _cached(self, key: Hashable, source: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        hit, value = self._cache.get(key)
        if hit:
            return value
        flight = self._flights.get(key)
        if flight is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise PrincipalBackendUnavailable(flight.error.reason)
            hit, value = self._cache.get(key)
            if hit:
                return value
            # Expired already (tiny TTL): ask again ourselves.
        flight = _Flight()
        self._flights[key] = flight
        try:
            value = await fetch()
            self._remember(key, source, value)
        except MalformedAnswer as exc:
            self._note_failure(exc.source, f"{exc.reason} for {key!r}", exc.detail)
            flight.error = exc
            raise
        except PrincipalBackendUnavailable as exc:
            flight.error = exc
            raise
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()
        return value

    def _remember(self, key: Hashable, source: str, value: Any) -> None:
        """Cache a definite answer (negative ones briefly) and note that `source` answers."""
        if source in self._failing:
            self._failing.discard(source)
            log.info("principal backend: %s answers again", source)
        negative = value is None or value == []
        self._cache.put(key, value, self._negative_ttl if negative else self._ttl)

    # -- look-ups ------------------------------------------------------------------------------
    async def _fetch_org(self, name: str) -> Org | None:
        segment = _segment(name)
        if segment is None:
            return None
        status, body = await self._chef_get(f"/organizations/{segment}")
        if status == 404:
            return None
        if not isinstance(body, dict):
            raise _malformed(CHEF_SERVER)
        guid = body.get("guid")
        full_name = body.get("full_name")
        if not isinstance(guid, str) or not guid:
            raise _malformed(CHEF_SERVER)
        full_name = full_name if isinstance(full_name, str) else ""
        if self._store is None:
            return Org(id=guid, name=name, full_name=full_name, created_at=0.0)
        return await self._local_org(self._store, name, full_name, guid)

    async def _local_org(
        self, store: AsyncPrincipalStore, name: str, full_name: str, guid: str
    ) -> Org:
        """The store's row for the organization, created on first sight."""
        org = await store.get_org(name)
        if org is not None:
            return org
        try:
            org = await store.create_org(name, full_name)
        except AlreadyExistsError:  # created meanwhile (e.g. by the operator CLI)
            org = await store.get_org(name)
        else:
            log.info("mirrored Chef organization '%s' (guid %s) into the database", name, guid)
        return (
            org if org is not None else Org(id=guid, name=name, full_name=full_name, created_at=0.0)
        )

    async def _fetch_principals(self, org_name: str, name: str) -> list[Principal]:
        org_segment, name_segment = _segment(org_name), _segment(name)
        if org_segment is None or name_segment is None:
            return []
        url = f"{self._principals_url}/organizations/{org_segment}/principals/{name_segment}"
        headers = {"Accept": MediaType.JSON, "X-Ops-Server-API-Version": CHEF_API_VERSION}
        status, body = await self._get(url, headers, PRINCIPALS_ENDPOINT)
        if status == 404:
            what = body.get("not_found") if isinstance(body, dict) else None
            if what not in ("org", "principal"):
                raise _malformed(PRINCIPALS_ENDPOINT)
            log.debug("principals endpoint: %s not found for '%s' in '%s'", what, name, org_name)
            return []
        if not isinstance(body, dict):
            raise _malformed(PRINCIPALS_ENDPOINT)
        entries = body.get("principals")
        if entries is None and "public_key" in body:
            entries = [body]  # API version 0 shape: one principal object
        if not isinstance(entries, list):
            raise _malformed(PRINCIPALS_ENDPOINT)
        found = [_principal(entry, PRINCIPALS_ENDPOINT) for entry in entries]
        return [p for p in found if p is not None]

    async def _fetch_group(self, org_name: str, name: str) -> Group | None:
        org_segment, name_segment = _segment(org_name), _segment(name)
        if org_segment is None or name_segment is None:
            return None
        status, body = await self._chef_get(f"/organizations/{org_segment}/groups/{name_segment}")
        if status == 404:
            return None
        if not isinstance(body, dict):
            raise _malformed(CHEF_SERVER)
        return Group(
            name=name,
            users=_string_list(body, "users", CHEF_SERVER),
            clients=_string_list(body, "clients", CHEF_SERVER),
            groups=_string_list(body, "groups", CHEF_SERVER),
        )

    # -- HTTP ----------------------------------------------------------------------------------
    async def _chef_get(self, path: str) -> tuple[int, Any]:
        """A GET on the Chef Server API signed as the superuser."""
        headers = sign_request(
            method="GET",
            path=self._chef_path + path,
            body=b"",
            user_id=self._superuser,
            private_key=self._key,
            version=SIGN_VERSION,
            server_api_version=CHEF_API_VERSION,
        )
        headers["Accept"] = MediaType.JSON
        return await self._get(self._chef_url + path, headers, CHEF_SERVER)

    async def _get(self, url: str, headers: dict[str, str], source: str) -> tuple[int, Any]:
        """(status, parsed JSON or None) for 200 and 404; every other outcome raises."""
        try:
            response = await self._client.get(url, headers=headers)
        except httpx.TimeoutException as exc:
            raise self._failed(source, f"timed out waiting for {source}", url, exc) from None
        except httpx.ConnectError as exc:
            raise self._failed(source, f"cannot connect to {source}", url, exc) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._failed(source, f"request to {source} failed", url, exc) from None
        status = response.status_code
        if status not in (200, 404):
            detail = response.text[:200].replace("\n", " ")
            raise self._failed(source, f"{source} answered HTTP {status}", url, detail)
        try:
            body = json.loads(response.content) if response.content else None
        except (ValueError, UnicodeDecodeError):
            if status != 404:
                raise _malformed(source, f"GET {url}: body is not JSON") from None
            body = None
        return status, body

    def _failed(
        self, source: str, reason: str, url: str, detail: Any
    ) -> PrincipalBackendUnavailable:
        """Log a failed request and build the exception the pipeline turns into a 502."""
        if isinstance(detail, BaseException):
            detail = f"{type(detail).__name__}: {detail}"
        self._note_failure(source, f"GET {url}: {reason}", detail)
        return PrincipalBackendUnavailable(reason)

    def _note_failure(self, source: str, what: str, detail: str) -> None:
        """Warn once per outage of `source`, then log at debug until it answers again."""
        level = logging.DEBUG if source in self._failing else logging.WARNING
        self._failing.add(source)
        log.log(level, "principal backend: %s (%s)", what, detail)

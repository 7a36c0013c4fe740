"""Principals: the embedded backend, authentication (http-api.md §4.5) and authorization (§5).

A backend answers three questions (`org`, `principals`, `group`); everything else here is
backend-independent and works with any object offering those coroutines.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import TYPE_CHECKING, Any, Protocol

from pushjobs.protocol.chef_auth import verify_request
from pushjobs.protocol.errors import ProtocolError
from pushjobs.protocol.keys import load_public_key
from pushjobs.server.http.errors import WWW_AUTHENTICATE, HttpError, Requestor
from pushjobs.server.store.records import ADMINS_GROUP, PRINCIPAL_CLIENT, PRINCIPAL_USER

if TYPE_CHECKING:
    from pushjobs.protocol.chef_auth import AuthHeaders
    from pushjobs.server.store.records import Group, Org, Principal

log = logging.getLogger("pushjobs.server.principals.rules")

READERS_GROUP = "pushy_job_readers"
WRITERS_GROUP = "pushy_job_writers"


class PrincipalBackendUnavailable(Exception):
    """The principal backend cannot be reached; the pipeline answers 502 with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PrincipalBackend(Protocol):
    """What authentication and authorization read (http-api.md §9)."""

    async def org(self, name: str) -> Org | None: ...
    async def principals(self, org_name: str, name: str) -> list[Principal]: ...
    async def group(self, org_name: str, name: str) -> Group | None: ...
    async def is_member(self, org_name: str, group: str, requestor: Requestor) -> bool: ...


async def _call(method: Any, *args: Any) -> Any:
    """Call a store method that may be sync (SqliteStore) or async (AsyncStore)."""
    result = method(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class EmbeddedPrincipals:
    """Principals from the server's own database (the default backend)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def org(self, name: str) -> Org | None:
        """The organization named `name`, or None."""
        return await _call(self._store.get_org, name)

    async def principals(self, org_name: str, name: str) -> list[Principal]:
        """The user (global) and the client of `org_name` called `name`, whichever exist."""
        return list(await _call(self._store.principals, org_name, name))

    async def group(self, org_name: str, name: str) -> Group | None:
        """A group of the organization, or None when it does not exist."""
        return await _call(self._store.get_group, org_name, name)

    async def is_member(self, org_name: str, group: str, requestor: Requestor) -> bool:
        """True when the requestor is a transitive member of the group."""
        return await transitive_member(self, org_name, group, requestor)

    async def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]:
        """Clients whose key changed or who were deleted since `after` (see `revocation.py`)."""
        return await _call(self._store.client_key_changes, after)

    async def prune_client_key_changes(self, before: float) -> int:
        """Forget key changes recorded before the epoch time `before`."""
        return await _call(self._store.prune_client_key_changes, before)


async def transitive_member(backend: Any, org_name: str, group: str, requestor: Requestor) -> bool:
    """Depth-first search through nested groups; each group is read at most once (cycles)."""
    seen: set[str] = set()
    stack = [group]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        found = await backend.group(org_name, name)
        if found is None:
            continue
        members = found.users if requestor.type == PRINCIPAL_USER else found.clients
        if requestor.name in members:
            return True
        # Reversed so the first listed subgroup is searched first.
        stack.extend(g for g in reversed(found.groups) if g not in seen)
    return False


@functools.lru_cache(maxsize=4096)
def _public_key(pem: str) -> Any:
    return load_public_key(pem)


def _unauthorized(message: str) -> HttpError:
    return HttpError(401, message, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


async def authenticate(
    backend: PrincipalBackend,
    org: Org,
    auth: AuthHeaders,
    *,
    method: str,
    path: str,
    body: bytes,
) -> Requestor:
    """Pipeline step 7 after the organization check: candidates, membership, signature."""
    name = auth.user_id
    candidates = await backend.principals(org.name, name)
    if not candidates:
        raise _unauthorized(
            f"Failed to authenticate as '{name}'. "
            "Ensure that your node_name and client key are correct."
        )
    members = [p for p in candidates if p.org_member]
    if not members:
        raise HttpError(403, f"'{name}' is not associated with organization '{org.name}'")
    # Users first, then clients (http-api.md §4.5 step 4).
    members.sort(key=lambda p: 0 if p.type == PRINCIPAL_USER else 1)
    for principal in members:
        try:
            key = _public_key(principal.public_key)
        except ProtocolError as exc:
            log.warning(
                "unusable public key for %s '%s' in org %s: %s",
                principal.type,
                principal.name,
                org.name,
                exc,
            )
            continue
        if verify_request(auth, method=method, path=path, body=body, public_key=key):
            return Requestor(principal.name, principal.type, key)
    raise _unauthorized(f"Invalid signature for user or client '{name}'")


def _denied(requestor: Requestor) -> HttpError:
    return HttpError(
        403,
        f"User or client '{requestor.name}' does not have access to that action on this server.",
    )


async def may_read(backend: PrincipalBackend, org_name: str, requestor: Requestor) -> bool:
    """The read rule: a transitive member of the readers group when it exists; else every
    user, but a client only as a member of the writers or admins group.

    Clients are node keys: one compromised node must not read every job's env, file and
    output (security issue 15, F4).
    """
    if await backend.group(org_name, READERS_GROUP) is not None:
        return await backend.is_member(org_name, READERS_GROUP, requestor)
    if requestor.type != PRINCIPAL_CLIENT:
        return True
    for group in (WRITERS_GROUP, ADMINS_GROUP):
        if await backend.is_member(org_name, group, requestor):
            return True
    return False


async def may_write(backend: PrincipalBackend, org_name: str, requestor: Requestor) -> bool:
    """The write rule: member of the writers group if it exists, else of `admins`."""
    if await backend.group(org_name, WRITERS_GROUP) is not None:
        return await backend.is_member(org_name, WRITERS_GROUP, requestor)
    # A missing admins group makes is_member False: denied.
    return await backend.is_member(org_name, ADMINS_GROUP, requestor)


async def authorize(
    backend: PrincipalBackend,
    org_name: str,
    rule: str,
    requestor: Requestor,
    node: str | None = None,
) -> None:
    """Pipeline step 8: raise the 403 of http-api.md §5 unless `rule` allows the requestor."""
    if rule == "none":
        return
    if rule == "config" and requestor.type == PRINCIPAL_CLIENT:
        if requestor.name != node:
            raise HttpError(403, "Client and node name must match")
        return
    if rule in ("read", "config"):
        allowed = await may_read(backend, org_name, requestor)
    elif rule == "write":
        allowed = await may_write(backend, org_name, requestor)
    else:
        raise ValueError(f"unknown authorization rule {rule!r}")
    if not allowed:
        raise _denied(requestor)

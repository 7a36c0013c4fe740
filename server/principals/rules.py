"""Authentication (http-api.md §4.5) and authorization (§5), for any principal backend.

A backend answers a few questions (`org`, `principals`, `group`, `is_member`); everything here
works with any object offering those coroutines. Refusals raise `AuthenticationFailed` or
`AccessDenied` with the status the HTTP pipeline answers; a backend that cannot answer raises
`PrincipalBackendUnavailable`.
"""

from __future__ import annotations

import functools
import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from pushjobs.protocol.chef_auth import verify_request
from pushjobs.protocol.errors import ProtocolError
from pushjobs.protocol.keys import key_fingerprint, load_public_key
from pushjobs.server.principals.errors import AccessDenied, AuthenticationFailed
from pushjobs.server.principals.requestor import Requestor
from pushjobs.server.store.records import ADMINS_GROUP, PRINCIPAL_CLIENT, PRINCIPAL_USER

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    from pushjobs.protocol.chef_auth import AuthHeaders
    from pushjobs.server.store.records import Group, Org, Principal

log = logging.getLogger("pushjobs.server.principals.rules")

READERS_GROUP = "pushy_job_readers"
WRITERS_GROUP = "pushy_job_writers"


class AccessRule(StrEnum):
    """The authorization rule of a route (http-api.md §5)."""

    NONE = "none"
    READ = "read"
    WRITE = "write"
    CONFIG = "config"


class GroupSource(Protocol):
    """What the transitive membership search reads."""

    async def group(self, org_name: str, name: str) -> Group | None: ...


class PrincipalBackend(GroupSource, Protocol):
    """What authentication and authorization read (http-api.md §9)."""

    async def org(self, name: str) -> Org | None: ...
    async def principals(self, org_name: str, name: str) -> list[Principal]: ...
    async def is_member(self, org_name: str, group: str, requestor: Requestor) -> bool: ...


async def transitive_member(
    backend: GroupSource, org_name: str, group: str, requestor: Requestor
) -> bool:
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
def _public_key(pem: str) -> tuple[RSAPublicKey, str]:
    """The parsed key and its fingerprint (parsed once per PEM, not per request)."""
    key = load_public_key(pem)
    return key, key_fingerprint(key)


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
        raise AuthenticationFailed(
            f"Failed to authenticate as '{name}'. "
            "Ensure that your node_name and client key are correct."
        )
    members = [p for p in candidates if p.org_member]
    if not members:
        raise AuthenticationFailed(
            f"'{name}' is not associated with organization '{org.name}'", status=403
        )
    # Users first, then clients (http-api.md §4.5 step 4).
    members.sort(key=lambda p: 0 if p.type == PRINCIPAL_USER else 1)
    for principal in members:
        try:
            key, fingerprint = _public_key(principal.public_key)
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
            return Requestor(principal.name, principal.type, key, fingerprint)
    raise AuthenticationFailed(f"Invalid signature for user or client '{name}'")


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
    rule: AccessRule,
    requestor: Requestor,
    node: str | None = None,
) -> None:
    """Pipeline step 8: raise the `AccessDenied` of http-api.md §5 unless `rule` allows the
    requestor."""
    if rule == AccessRule.NONE:
        return
    if rule == AccessRule.CONFIG and requestor.type == PRINCIPAL_CLIENT:
        if requestor.name != node:
            raise AccessDenied("Client and node name must match")
        return
    if rule in (AccessRule.READ, AccessRule.CONFIG):
        allowed = await may_read(backend, org_name, requestor)
    elif rule == AccessRule.WRITE:
        allowed = await may_write(backend, org_name, requestor)
    else:
        raise ValueError(f"unknown authorization rule {rule!r}")
    if not allowed:
        who = requestor.name
        raise AccessDenied(
            f"User or client '{who}' does not have access to that action on this server."
        )

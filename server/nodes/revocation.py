"""Revocation: a node whose client key changed, or whose client was deleted, loses its session.

A session key is issued to one client key (its owner, see `sessions.py`). `KeyWatch` polls every
`POLL_INTERVAL` seconds for owners that may have gone stale and re-reads their client's key
through the principal backend; a session whose client is gone or has another key is revoked:
its session key and CURVE keys are dropped and its node state ends (offline), so messages on
the old connection fail the HMAC check and a new config fetch gets a new session key.

- Embedded backend: the database records every key change and client deletion, whichever
  process made it (migration v3), so only the clients named there are re-read.
- Other backends (chef-server): every session is re-read each round; the backend's cache makes
  that one real request per node per `cache_ttl`, so a change is seen within `cache_ttl` plus
  one interval.

The config endpoint also revokes at once when a node's client fetches config with a key other
than the session's owner (`revoke_if_new_owner`).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from pushjobs.protocol.keys import key_fingerprint, load_public_key
from pushjobs.server.principals.rules import PrincipalBackendUnavailable
from pushjobs.server.store.records import PRINCIPAL_CLIENT

if TYPE_CHECKING:
    from pushjobs.server.nodes.sessions import SessionOwner
    from pushjobs.server.runtime import ServerRuntime
    from pushjobs.server.store.records import Principal

log = logging.getLogger("pushjobs.server.nodes.revocation")

POLL_INTERVAL = 10.0
CHECK_CONCURRENCY = 8  # principal look-ups in flight at once (chef-server backend)
PRUNE_INTERVAL = 3600.0
PRUNE_AGE = 86400.0  # recorded key changes are kept this long


def revoke_node(rt: ServerRuntime, org: str, node: str, reason: str) -> bool:
    """Drop the node's session key and CURVE keys and end its node state."""
    dropped = rt.sessions.revoke(org, node)
    ended = rt.nodes.end(org, node, f"session revoked ({reason})")
    if dropped or ended:
        log.warning("revoked the session of node %r/%r: %s", org, node, reason)
    return dropped or ended


def revoke_if_new_owner(rt: ServerRuntime, org: str, node: str, owner: SessionOwner) -> bool:
    """Config endpoint: revoke a session issued to another key (or org row) than `owner`."""
    previous = rt.sessions.owner(org, node)
    if previous is None or previous == owner:
        return False
    return revoke_node(rt, org, node, "config fetched with a new client key")


@functools.lru_cache(maxsize=4096)
def _fingerprint_of_pem(pem: str) -> str:
    return key_fingerprint(load_public_key(pem))


def client_fingerprint(found: list[Principal]) -> str | None:
    """Fingerprint of the client among the principals; None when there is no usable one."""
    for principal in found:
        if principal.type == PRINCIPAL_CLIENT:
            try:
                return _fingerprint_of_pem(principal.public_key)
            except Exception:
                return None  # an unusable key cannot sign a config request either
    return None


class KeyWatch:
    """The background task that revokes stale sessions (see the module docstring)."""

    def __init__(self, rt: ServerRuntime, interval: float = POLL_INTERVAL) -> None:
        self.rt = rt
        self.interval = interval
        self._cursor: int | None = None
        self._next_prune = 0.0
        self._failing = False

    @property
    def _changes(self) -> Any:
        return getattr(self.rt.principals, "client_key_changes", None)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Take the baseline, report started, then poll until cancelled."""
        if self._changes is not None:
            self._cursor = await self._poll_changes(None)
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            try:
                await self.check_once()
            except Exception:
                log.exception("revocation check failed")

    async def check_once(self) -> int:
        """One round; returns how many sessions were revoked."""
        # Sessions are listed after each poll returns: one issued while the poll ran is then
        # checked against the change rows that poll consumed.
        if self._changes is None:
            suspects = self.rt.sessions.owned_sessions()
        elif self._cursor is None:  # no baseline yet (the store failed): re-check everyone once
            cursor = await self._poll_changes(None)
            if cursor is None:
                return 0
            self._cursor, suspects = cursor, self.rt.sessions.owned_sessions()
        else:
            changed = await self._poll_changes(self._cursor)
            if changed is None:
                return 0
            self._cursor, names = changed
            sessions = self.rt.sessions.owned_sessions()
            suspects = [s for s in sessions if (s[2].org_id, s[1]) in names]
            await self._maybe_prune()
        if not suspects:
            return 0
        limiter = trio.CapacityLimiter(CHECK_CONCURRENCY)
        results: list[bool] = []

        async def check(org: str, node: str, owner: SessionOwner) -> None:
            async with limiter:
                results.append(await self.check_session(org, node, owner))

        async with trio.open_nursery() as nursery:
            for org, node, owner in suspects:
                nursery.start_soon(check, org, node, owner)
        return sum(results)

    async def check_session(self, org: str, node: str, owner: SessionOwner) -> bool:
        """Re-read the client's key; revoke when it is gone or another. True when revoked."""
        try:
            found = await self.rt.principals.principals(org, node)
        except PrincipalBackendUnavailable as exc:
            self._note_failure(f"cannot re-check the key of {org!r}/{node!r}: {exc.reason}")
            return False
        self._note_success()
        current = client_fingerprint(found)
        if current == owner.fingerprint:
            return False
        if self.rt.sessions.owner(org, node) != owner:
            return False  # re-issued meanwhile by the config endpoint (which checked the key)
        reason = "client deleted" if current is None else "client key changed"
        return revoke_node(self.rt, org, node, reason)

    async def _poll_changes(self, after: int | None) -> Any:
        """Embedded backend: `(cursor, {(org id, name)})`, or the cursor alone for None."""
        try:
            cursor, rows = await self._changes(after)
        except Exception as exc:
            self._note_failure(f"cannot read client key changes: {exc}")
            return None
        self._note_success()
        if after is None:
            return cursor
        return cursor, set(rows)

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        prune = getattr(self.rt.principals, "prune_client_key_changes", None)
        if prune is None:
            return
        try:
            pruned = await prune(time.time() - PRUNE_AGE)
        except Exception as exc:
            log.warning("cannot prune recorded client key changes: %s", exc)
            return
        if pruned:
            log.debug("pruned %d recorded client key changes", pruned)

    def _note_failure(self, message: str) -> None:
        log.log(logging.DEBUG if self._failing else logging.WARNING, "revocation: %s", message)
        self._failing = True

    def _note_success(self) -> None:
        if self._failing:
            log.info("revocation: key checks work again")
        self._failing = False

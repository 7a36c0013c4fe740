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
from typing import TYPE_CHECKING, Protocol

import trio

from pushjobs.protocol.keys import key_fingerprint, load_public_key
from pushjobs.server.principals.errors import PrincipalBackendUnavailable
from pushjobs.server.store.records import PRINCIPAL_CLIENT

if TYPE_CHECKING:
    from pushjobs.server.nodes.sessions import SessionOwner
    from pushjobs.server.store.records import Principal

log = logging.getLogger("pushjobs.server.nodes.revocation")

POLL_INTERVAL = 10.0
CHECK_CONCURRENCY = 8  # principal look-ups in flight at once (chef-server backend)
PRUNE_INTERVAL = 3600.0
PRUNE_AGE = 86400.0  # recorded key changes are kept this long


class RevocableSessions(Protocol):
    """What revoking needs of the session keys."""

    def owner(self, org: str, node: str) -> SessionOwner | None: ...
    def revoke(self, org: str, node: str) -> bool: ...


class WatchedSessions(RevocableSessions, Protocol):
    """What `KeyWatch` needs of the session keys: also the list of owned sessions."""

    def owned_sessions(self) -> list[tuple[str, str, SessionOwner]]: ...


class EndableNodes(Protocol):
    """What revoking needs of the node registry: ending a node's state."""

    def end(self, org: str, node: str, reason: str) -> bool: ...


class ClientKeys(Protocol):
    """What `KeyWatch` needs of the principal backend: a client's current key."""

    async def principals(self, org_name: str, name: str) -> list[Principal]: ...


class KeyChangeLog(Protocol):
    """The record of client key changes and deletions (the embedded backend's database)."""

    async def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]: ...
    async def prune_client_key_changes(self, before: float) -> int: ...


def revoke_node(
    sessions: RevocableSessions, nodes: EndableNodes, org: str, node: str, reason: str
) -> bool:
    """Drop the node's session key and CURVE keys and end its node state."""
    dropped = sessions.revoke(org, node)
    ended = nodes.end(org, node, f"session revoked ({reason})")
    if dropped or ended:
        log.warning("revoked the session of node %r/%r: %s", org, node, reason)
    return dropped or ended


def revoke_if_new_owner(
    sessions: RevocableSessions, nodes: EndableNodes, org: str, node: str, owner: SessionOwner
) -> bool:
    """Config endpoint: revoke a session issued to another key (or org row) than `owner`."""
    previous = sessions.owner(org, node)
    if previous is None or previous == owner:
        return False
    return revoke_node(sessions, nodes, org, node, "config fetched with a new client key")


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
    """The background task that revokes stale sessions (see the module docstring).

    `changes` is the key change log when the backend keeps one (embedded), else None: every
    session is then re-read each round.
    """

    def __init__(
        self,
        *,
        principals: ClientKeys,
        sessions: WatchedSessions,
        nodes: EndableNodes,
        changes: KeyChangeLog | None = None,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._principals = principals
        self._sessions = sessions
        self._nodes = nodes
        self._changes = changes
        self.interval = interval
        self._cursor: int | None = None
        self._next_prune = 0.0
        self._failing = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take the baseline, report started, then poll until cancelled."""
        await self.take_baseline()
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            try:
                await self.check_once()
            except Exception:
                log.exception("revocation check failed")

    async def take_baseline(self) -> None:
        """With a change log: start from its current cursor (changes before it are not news)."""
        if self._changes is not None:
            self._cursor = await self._baseline(self._changes)

    async def check_once(self) -> int:
        """One round; returns how many sessions were revoked."""
        # Sessions are listed after each poll returns: one issued while the poll ran is then
        # checked against the change rows that poll consumed.
        changes = self._changes
        if changes is None:
            suspects = self._sessions.owned_sessions()
        elif self._cursor is None:  # no baseline yet (the store failed): re-check everyone once
            cursor = await self._baseline(changes)
            if cursor is None:
                return 0
            self._cursor, suspects = cursor, self._sessions.owned_sessions()
        else:
            changed = await self._poll_changes(changes, self._cursor)
            if changed is None:
                return 0
            self._cursor, names = changed
            sessions = self._sessions.owned_sessions()
            suspects = [s for s in sessions if (s[2].org_id, s[1]) in names]
            await self._maybe_prune(changes)
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
            found = await self._principals.principals(org, node)
        except PrincipalBackendUnavailable as exc:
            self._note_failure(f"cannot re-check the key of {org!r}/{node!r}: {exc.reason}")
            return False
        self._note_success()
        current = client_fingerprint(found)
        if current == owner.fingerprint:
            return False
        if self._sessions.owner(org, node) != owner:
            return False  # re-issued meanwhile by the config endpoint (which checked the key)
        reason = "client deleted" if current is None else "client key changed"
        return revoke_node(self._sessions, self._nodes, org, node, reason)

    async def _baseline(self, changes: KeyChangeLog) -> int | None:
        """The change log's current cursor, or None when it cannot be read."""
        try:
            cursor, _ = await changes.client_key_changes(None)
        except Exception as exc:
            self._note_failure(f"cannot read client key changes: {exc}")
            return None
        self._note_success()
        return cursor

    async def _poll_changes(
        self, changes: KeyChangeLog, after: int
    ) -> tuple[int, set[tuple[str, str]]] | None:
        """`(cursor, {(org id, name)})` of the changes after `after`; None when unreadable."""
        try:
            cursor, rows = await changes.client_key_changes(after)
        except Exception as exc:
            self._note_failure(f"cannot read client key changes: {exc}")
            return None
        self._note_success()
        return cursor, set(rows)

    async def _maybe_prune(self, changes: KeyChangeLog) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        try:
            pruned = await changes.prune_client_key_changes(time.time() - PRUNE_AGE)
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

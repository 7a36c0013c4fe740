"""Per-node HMAC session keys and the ZAP allow-list of CURVE client keys.

Nothing here is ever stored on disk (lifecycle.md §10): a server restart loses every session key
and every allow-list entry, and agents fetch config again when they see the new incarnation.

Each session key remembers its owner: the fingerprint of the client key it was issued to (and
the organization's row id). When that client's key changes or the client is deleted, `revoke`
drops the session key and every CURVE key of the node (see `revocation.py`).

Times passed to `lookup_curve` / `sweep` / `register_curve_key` are `time.monotonic()` values
(the default when omitted), so wall-clock jumps cannot expire or revive entries.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from pushjobs.protocol.signing import HmacKey

SESSION_KEY_BYTES = 32
CURVE_KEY_BYTES = 32
# Live CURVE keys per node. An agent uses one key per process and re-registers it on every
# reconfigure (which renews it), so a few cover restarts within one config lifetime; a fifth
# registration evicts the node's oldest key (established connections are not affected).
MAX_CURVE_KEYS_PER_NODE = 4

Key = tuple[str, str]


class CurveKeyConflict(Exception):
    """The CURVE key is bound, unexpired, to another (org, node)."""


@dataclass(frozen=True, slots=True)
class SessionOwner:
    """Who a session key was issued to: the org's row id and the client key's fingerprint."""

    org_id: str
    fingerprint: str


class SessionKeys:
    """Session keys per (org, node) and the allow-list raw CURVE key → (org, node, expiry)."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = float(lifetime)
        self._keys: dict[Key, HmacKey] = {}
        self._owners: dict[Key, SessionOwner] = {}
        self._curve: dict[bytes, tuple[str, str, float]] = {}
        self._node_curve: dict[Key, dict[bytes, None]] = {}  # registration order, oldest first

    # -- session keys (wire-protocol.md §11) ------------------------------------------------

    def session_key(self, org: str, node: str, owner: SessionOwner | None = None) -> bytes:
        """The node's 32-byte HMAC key: created on first use, the same until revoked.

        `owner` records who it was issued to (the config endpoint always passes it).
        """
        key = self._keys.get((org, node))
        if key is None:
            key = HmacKey(secrets.token_bytes(SESSION_KEY_BYTES))
            self._keys[(org, node)] = key
        if owner is not None:
            self._owners[(org, node)] = owner
        return key.raw

    def existing_key(self, org: str, node: str) -> HmacKey | None:
        """The node's session key if one was ever handed out, else None (broker hot path)."""
        return self._keys.get((org, node))

    def owner(self, org: str, node: str) -> SessionOwner | None:
        """Who the node's session key was issued to, or None."""
        return self._owners.get((org, node))

    def owned_sessions(self) -> list[tuple[str, str, SessionOwner]]:
        """(org, node, owner) of every session key with a recorded owner."""
        return [(org, node, owner) for (org, node), owner in self._owners.items()]

    def revoke(self, org: str, node: str) -> bool:
        """Drop the node's session key, owner and CURVE keys; True when there was anything."""
        key = (org, node)
        had = self._keys.pop(key, None) is not None
        had = self._owners.pop(key, None) is not None or had
        for curve_key in self._node_curve.pop(key, {}):
            self._curve.pop(curve_key, None)
            had = True
        return had

    # -- ZAP allow-list (wire-protocol.md §10) ----------------------------------------------

    def register_curve_key(
        self, org: str, node: str, public_key: bytes, now: float | None = None
    ) -> None:
        """Bind a raw 32-byte CURVE key to (org, node); registering again renews it.

        Raises `CurveKeyConflict` when the key is bound, unexpired, to another node. Beyond
        `MAX_CURVE_KEYS_PER_NODE` the node's oldest key is evicted.
        """
        if len(public_key) != CURVE_KEY_BYTES:
            raise ValueError("a CURVE public key is 32 bytes")
        if now is None:
            now = time.monotonic()
        raw = bytes(public_key)
        node_key = (org, node)
        entry = self._curve.get(raw)
        if entry is not None and (entry[0], entry[1]) != node_key:
            if now < entry[2]:
                raise CurveKeyConflict("ccpk is registered to another node")
            self._unbind(raw)
        keys = self._node_curve.setdefault(node_key, {})
        keys.pop(raw, None)
        keys[raw] = None
        self._curve[raw] = (org, node, now + self.lifetime)
        while len(keys) > MAX_CURVE_KEYS_PER_NODE:
            self._unbind(next(iter(keys)))

    def lookup_curve(self, public_key: bytes, now: float | None = None) -> tuple[str, str] | None:
        """(org, node) bound to the key, or None when unknown or expired."""
        entry = self._curve.get(public_key)
        if entry is None:
            return None
        if now is None:
            now = time.monotonic()
        org, node, expiry = entry
        if now >= expiry:
            return None
        return org, node

    def sweep(self, now: float | None = None) -> int:
        """Drop expired allow-list entries; return how many were dropped."""
        if now is None:
            now = time.monotonic()
        expired = [key for key, (_, _, expiry) in self._curve.items() if now >= expiry]
        for key in expired:
            self._unbind(key)
        return len(expired)

    def curve_entry_count(self) -> int:
        """Number of allow-list entries (expired ones included until the next sweep)."""
        return len(self._curve)

    def curve_keys_of(self, org: str, node: str) -> list[bytes]:
        """The node's CURVE keys, oldest registration first (expired ones until the sweep)."""
        return list(self._node_curve.get((org, node), ()))

    def _unbind(self, raw: bytes) -> None:
        entry = self._curve.pop(raw, None)
        if entry is None:
            return
        node_key = (entry[0], entry[1])
        keys = self._node_curve.get(node_key)
        if keys is not None:
            keys.pop(raw, None)
            if not keys:
                del self._node_curve[node_key]

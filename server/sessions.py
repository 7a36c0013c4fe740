"""Per-node HMAC session keys and the ZAP allow-list of CURVE client keys.

Nothing here is ever stored on disk (lifecycle.md §10): a server restart loses every session key
and every allow-list entry, and agents fetch config again when they see the new incarnation.

Times passed to `lookup_curve` / `sweep` / `register_curve_key` are `time.monotonic()` values
(the default when omitted), so wall-clock jumps cannot expire or revive entries.
"""

from __future__ import annotations

import secrets
import time

SESSION_KEY_BYTES = 32
CURVE_KEY_BYTES = 32


class SessionKeys:
    """Session keys per (org, node) and the allow-list raw CURVE key → (org, node, expiry)."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = float(lifetime)
        self._keys: dict[tuple[str, str], bytes] = {}
        self._curve: dict[bytes, tuple[str, str, float]] = {}

    # -- session keys (wire-protocol.md §11) ------------------------------------------------

    def session_key(self, org: str, node: str) -> bytes:
        """The node's 32-byte HMAC key: created on first use, the same for the process's life."""
        key = self._keys.get((org, node))
        if key is None:
            key = secrets.token_bytes(SESSION_KEY_BYTES)
            self._keys[(org, node)] = key
        return key

    def existing_key(self, org: str, node: str) -> bytes | None:
        """The node's session key if one was ever handed out, else None (broker hot path)."""
        return self._keys.get((org, node))

    # -- ZAP allow-list (wire-protocol.md §10) ----------------------------------------------

    def register_curve_key(
        self, org: str, node: str, public_key: bytes, now: float | None = None
    ) -> None:
        """Bind a raw 32-byte CURVE key to (org, node); registering again replaces and renews."""
        if len(public_key) != CURVE_KEY_BYTES:
            raise ValueError("a CURVE public key is 32 bytes")
        if now is None:
            now = time.monotonic()
        self._curve[bytes(public_key)] = (org, node, now + self.lifetime)

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
            del self._curve[key]
        return len(expired)

    def curve_entry_count(self) -> int:
        """Number of allow-list entries (expired ones included until the next sweep)."""
        return len(self._curve)

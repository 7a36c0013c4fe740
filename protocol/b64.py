"""Strict standard base64: padded, standard alphabet, no whitespace, canonical encoding only."""

from __future__ import annotations

import base64
import binascii


def b64encode(data: bytes) -> str:
    """Encode as standard padded base64 text without line breaks."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str | bytes) -> bytes | None:
    """Decode strict base64, or return None.

    Only the canonical encoding is accepted (unused trailing bits must be zero), so that no two
    signature strings decode to the same bytes.
    """
    try:
        raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
    if base64.b64encode(decoded) != raw:
        return None
    return decoded

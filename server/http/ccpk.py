"""The agent's CURVE public key in the `ccpk` query parameter of config requests (pipeline
step 6, http-api.md §3, §7.2)."""

from __future__ import annotations

from urllib.parse import unquote

from pushjobs.protocol.errors import KeyFormatError
from pushjobs.protocol.keys import z85_decode_key
from pushjobs.server.http.errors import HttpError


def query_param(query_string: bytes | str, name: str) -> str | None:
    """The first value of a query parameter, percent-decoded; None when absent.

    Only `%XX` escapes are decoded: a literal `+` stays `+` (it is a Z85 character, and an
    agent that forgot to escape it should still work).
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    for pair in query_string.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == name:
            return unquote(value)
    return None


def decode_ccpk(query_string: bytes | str) -> bytes:
    """The raw 32-byte key from `ccpk` (400 when missing, 401 when it is no Z85 key)."""
    text = query_param(query_string, "ccpk")
    if not text:
        raise HttpError(400, "Missing ccpk")
    try:
        return z85_decode_key(text)
    except KeyFormatError:
        raise HttpError(401, "Bad ccpk") from None

"""The ZeroMQ header frame `Version:<v>;SigningMethod:<m>;Signature:<b64>` (wire-protocol.md §4)."""

from __future__ import annotations

from .compat import dataclass
from .errors import HeaderError
from .limits import HEADER_LIMIT

VERSIONS = ("2.0", "3.0")

_VERSION = "Version:"
_METHOD = "SigningMethod:"
_SIGNATURE = ("Signature:", "SignedChecksum:")
_CANONICAL_VERSIONS = {f"{_VERSION}{v}": v for v in VERSIONS}


@dataclass(frozen=True, slots=True)
class Header:
    version: str
    signing_method: str
    signature: str


def parse_header(raw: bytes) -> Header:
    """Parse a header frame; raise HeaderError when too long, incomplete or of unknown version.

    Parts are recognised by their exact prefix; unknown parts are ignored and nothing is
    trimmed. When a part occurs more than once, the last occurrence wins.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise HeaderError("header must be bytes")
    raw = bytes(raw)
    if len(raw) > HEADER_LIMIT:
        raise HeaderError(f"header longer than {HEADER_LIMIT} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise HeaderError("header is not ASCII") from None
    parts = text.split(";")
    # The canonical form, which every known sender writes, parsed without the general loop
    # (the broker parses a header for every message it receives).
    if (
        len(parts) == 3
        and parts[0] in _CANONICAL_VERSIONS
        and parts[1].startswith(_METHOD)
        and parts[2].startswith(_SIGNATURE[0])
    ):
        fast_method = parts[1][len(_METHOD) :]
        fast_signature = parts[2][len(_SIGNATURE[0]) :]
        if fast_method and fast_signature:
            return Header(_CANONICAL_VERSIONS[parts[0]], fast_method, fast_signature)
    version = method = signature = None
    for part in parts:
        if part.startswith(_VERSION):
            version = part[len(_VERSION) :]
        elif part.startswith(_METHOD):
            method = part[len(_METHOD) :]
        else:
            for prefix in _SIGNATURE:
                if part.startswith(prefix):
                    signature = part[len(prefix) :]
    if version is None:
        raise HeaderError("header has no Version")
    if not method:
        raise HeaderError("header has no SigningMethod")
    if not signature:
        raise HeaderError("header has no Signature")
    if version not in VERSIONS:
        raise HeaderError(f"unsupported protocol version {version!r}")
    return Header(version=version, signing_method=method, signature=signature)


def format_header(version: str, signing_method: str, signature: str) -> bytes:
    """Format the three parts in the canonical order."""
    if version not in VERSIONS:
        raise HeaderError(f"unsupported protocol version {version!r}")
    for name, value in (("signing method", signing_method), ("signature", signature)):
        if not value or ";" in value or not value.isascii():
            raise HeaderError(f"invalid {name} {value!r}")
    raw = f"Version:{version};SigningMethod:{signing_method};Signature:{signature}".encode("ascii")
    if len(raw) > HEADER_LIMIT:
        raise HeaderError(f"header longer than {HEADER_LIMIT} bytes")
    return raw

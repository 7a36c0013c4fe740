"""The ZeroMQ header frame: `Version:<v>;SigningMethod:<m>;Signature:<b64>` (wire-protocol.md §4)."""

from dataclasses import dataclass

MAX_HEADER_BYTES = 2048
VERSIONS = ("2.0", "3.0")


@dataclass(frozen=True, slots=True)
class Header:
    version: str
    signing_method: str
    signature: str


def parse_header(raw: bytes) -> Header:
    """Parse a header frame; raise HeaderError when too long, incomplete or of unknown version."""
    raise NotImplementedError


def format_header(version: str, signing_method: str, signature: str) -> bytes:
    """Format the three parts in the canonical order."""
    raise NotImplementedError

"""A whole ZeroMQ message (header frame + body frame): seal and open (wire-protocol.md §3–§6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from .codec import decode_body, encode_body
from .compat import dataclass
from .errors import HeaderError
from .header import Header, format_header, parse_header
from .limits import HEADER_LIMIT
from .signing import (
    HMAC_SHA256,
    RSA2048_SHA1,
    HmacKey,
    hmac_signature,
    rsa_sha1_signature,
    verify_hmac,
    verify_rsa_sha1,
)


@dataclass(slots=True)
class Envelope:
    version: str
    header: Header
    body: bytes
    fields: dict[str, Any]


def seal_hmac(version: str, fields: Mapping[str, Any], key: bytes | HmacKey) -> tuple[bytes, bytes]:
    """Encode `fields` in `version` and sign with hmac_sha256 → (header, body)."""
    body = encode_body(version, fields)
    return format_header(version, HMAC_SHA256, hmac_signature(key, body)), body


def seal_heartbeat(fields: Mapping[str, Any], private_key: RSAPrivateKey) -> tuple[bytes, bytes]:
    """Encode a server heartbeat as 2.0 JSON signed with rsa2048_sha1 → (header, body)."""
    body = encode_body("2.0", fields)
    return format_header("2.0", RSA2048_SHA1, rsa_sha1_signature(private_key, body)), body


def open_envelope(header: bytes, body: bytes, max_body: int, signing_method: str) -> Envelope:
    """Check header (size, syntax, version, signing method) and body (size, map).

    The signature is not checked here: the key depends on the decoded fields.
    """
    if not isinstance(header, (bytes, bytearray, memoryview)):
        raise HeaderError("header must be bytes")
    if len(header) > HEADER_LIMIT:
        raise HeaderError(f"header longer than {HEADER_LIMIT} bytes")
    parsed = parse_header(header)
    if parsed.signing_method != signing_method:
        raise HeaderError(f"signing method {parsed.signing_method!r} not accepted here")
    fields = decode_body(parsed.version, body, max_body)  # checks type and size first
    return Envelope(version=parsed.version, header=parsed, body=bytes(body), fields=fields)


def verify_envelope_hmac(env: Envelope, key: bytes | HmacKey) -> bool:
    """True when the envelope is hmac_sha256-signed and verifies with `key`."""
    if env.header.signing_method != HMAC_SHA256:
        return False
    return verify_hmac(key, env.body, env.header.signature)


def verify_envelope_rsa(env: Envelope, public_key: RSAPublicKey) -> bool:
    """True when the envelope is rsa2048_sha1-signed and verifies with `public_key`."""
    if env.header.signing_method != RSA2048_SHA1:
        return False
    return verify_rsa_sha1(public_key, env.body, env.header.signature)

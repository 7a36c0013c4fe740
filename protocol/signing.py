"""Message signatures: `hmac_sha256` and `rsa2048_sha1` (wire-protocol.md §6).

`rsa2048_sha1` (and Chef request signing 1.0/1.1) is RSA "private encrypt": a PKCS#1 v1.5
block type 1 around the raw data, no DigestInfo. `cryptography` cannot produce it, so the
private-key operation is computed here from the key's numbers (CRT, with blinding).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from .b64 import b64decode_strict, b64encode
from .errors import SignatureError

HMAC_SHA256 = "hmac_sha256"
RSA2048_SHA1 = "rsa2048_sha1"


_SHA256_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class HmacKey:
    """An HMAC-SHA256 key with its padded inner and outer blocks computed once (RFC 2104).

    For the server's per-node session keys: a digest is then two plain SHA-256 calls, about
    twice as fast as `hmac.digest`, which also drops and retakes the GIL on every call — costly
    on the broker's hot path while another thread (the store's) waits for it.
    """

    __slots__ = ("_inner", "_outer", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        block = hashlib.sha256(raw).digest() if len(raw) > _SHA256_BLOCK else raw
        block = block.ljust(_SHA256_BLOCK, b"\0")
        self._inner = block.translate(_IPAD)
        self._outer = block.translate(_OPAD)

    def digest(self, body: bytes) -> bytes:
        sha256 = hashlib.sha256
        return sha256(self._outer + sha256(self._inner + body).digest()).digest()


def _digest(key: bytes | HmacKey, body: bytes) -> bytes:
    if isinstance(key, HmacKey):
        return key.digest(body)
    return hmac.digest(key, body, hashlib.sha256)


def hmac_signature(key: bytes | HmacKey, body: bytes) -> str:
    """Return base64(HMAC-SHA256(key, body)) (44 characters)."""
    return b64encode(_digest(key, body))


def verify_hmac(key: bytes | HmacKey, body: bytes, signature: str) -> bool:
    """Check an hmac_sha256 signature in constant time; False on malformed base64."""
    given = b64decode_strict(signature)
    if given is None:
        return False
    return hmac.compare_digest(_digest(key, body), given)


def rsa_private_encrypt(private_key: RSAPrivateKey, data: bytes) -> bytes:
    """RSA private-key operation over a PKCS#1 v1.5 type-1 block around `data` (no DigestInfo)."""
    nums = private_key.private_numbers()
    pub = nums.public_numbers
    n, e = pub.n, pub.e
    k = (n.bit_length() + 7) // 8
    if len(data) > k - 11:
        raise SignatureError(f"data too long for a {k * 8}-bit RSA key ({len(data)} bytes)")
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data
    m = int.from_bytes(block, "big")
    # Blinding: the exponentiation runs on m*r^e, so its timing does not depend on `data`.
    while True:
        r = secrets.randbelow(n - 2) + 2
        try:
            r_inv = pow(r, -1, n)
        except ValueError:
            continue
        break
    c = (m * pow(r, e, n)) % n
    p, q = nums.p, nums.q
    s1 = pow(c % p, nums.dmp1, p)
    s2 = pow(c % q, nums.dmq1, q)
    h = (nums.iqmp * (s1 - s2)) % p
    s = ((s2 + h * q) * r_inv) % n
    return s.to_bytes(k, "big")


def rsa_public_recover(public_key: RSAPublicKey, signature: bytes) -> bytes | None:
    """Undo `rsa_private_encrypt` with the public key; None when the block is invalid."""
    try:
        return public_key.recover_data_from_signature(signature, PKCS1v15(), None)
    except (InvalidSignature, ValueError, TypeError):
        return None


def _sha1_checksum(body: bytes) -> bytes:
    return b64encode(hashlib.sha1(body).digest()).encode("ascii")


def rsa_sha1_signature(private_key: RSAPrivateKey, body: bytes) -> str:
    """rsa2048_sha1: base64 of the private-encrypted text base64(SHA-1(body))."""
    return b64encode(rsa_private_encrypt(private_key, _sha1_checksum(body)))


def verify_rsa_sha1(public_key: RSAPublicKey, body: bytes, signature: str) -> bool:
    """Check an rsa2048_sha1 signature; False on malformed base64 or any mismatch."""
    raw = b64decode_strict(signature)
    if not raw:
        return False
    recovered = rsa_public_recover(public_key, raw)
    if recovered is None:
        return False
    return hmac.compare_digest(recovered, _sha1_checksum(body))

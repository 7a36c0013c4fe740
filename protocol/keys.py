"""Keys: RSA PEM load/generate, session-key encryption, CURVE key pairs and Z85."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from .b64 import b64decode_strict, b64encode
from .errors import KeyFormatError

Z85_ALPHABET = (
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_Z85_INDEX = {c: i for i, c in enumerate(Z85_ALPHABET)}


def generate_rsa_key(bits: int = 2048) -> RSAPrivateKey:
    """Generate an RSA private key (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _as_bytes(pem: bytes | str) -> bytes:
    if isinstance(pem, str):
        try:
            return pem.encode("ascii")
        except UnicodeEncodeError:
            raise KeyFormatError("PEM text is not ASCII") from None
    if isinstance(pem, (bytes, bytearray, memoryview)):
        return bytes(pem)
    raise KeyFormatError("PEM must be bytes or str")


def load_private_key(pem: bytes | str) -> RSAPrivateKey:
    """Load an unencrypted RSA private key (PKCS#1 or PKCS#8 PEM)."""
    try:
        key = serialization.load_pem_private_key(_as_bytes(pem), password=None)
    except KeyFormatError:
        raise
    except Exception:
        raise KeyFormatError("not a valid unencrypted PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise KeyFormatError("private key is not an RSA key")
    return key


def load_public_key(pem: bytes | str) -> RSAPublicKey:
    """Load an RSA public key from `PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE` PEM."""
    data = _as_bytes(pem)
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            from cryptography import x509  # only here: it costs the agent ~1.4 MB when idle

            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except Exception:
        raise KeyFormatError("not a valid PEM public key or certificate") from None
    if not isinstance(key, RSAPublicKey):
        raise KeyFormatError("public key is not an RSA key")
    return key


def private_key_pem(key: RSAPrivateKey) -> bytes:
    """Serialise as PKCS#1 `RSA PRIVATE KEY` PEM, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_key_pem(key: RSAPublicKey | RSAPrivateKey) -> str:
    """Serialise the public half as SubjectPublicKeyInfo `PUBLIC KEY` PEM text."""
    if isinstance(key, RSAPrivateKey):
        key = key.public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_fingerprint(public_key: RSAPublicKey | RSAPrivateKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo DER as lower-case hex pairs joined by `:`."""
    if isinstance(public_key, RSAPrivateKey):
        public_key = public_key.public_key()
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def encrypt_session_key(public_key: RSAPublicKey, session_key: bytes) -> str:
    """RSAES-PKCS1-v1_5 encrypt the session key for a client; base64 text."""
    return b64encode(public_key.encrypt(session_key, PKCS1v15()))


def decrypt_session_key(private_key: RSAPrivateKey, encoded: str) -> bytes:
    """Decrypt a base64 RSAES-PKCS1-v1_5 session key; KeyFormatError when it cannot be."""
    raw = b64decode_strict(encoded) if isinstance(encoded, (str, bytes)) else None
    if not raw:
        raise KeyFormatError("encoded session key is not valid base64")
    try:
        key = private_key.decrypt(raw, PKCS1v15())
    except Exception:
        raise KeyFormatError("cannot decrypt the session key") from None
    if not key:
        raise KeyFormatError("session key is empty")
    return key


def z85_encode(data: bytes) -> str:
    """Z85-encode bytes whose length is a multiple of 4."""
    if len(data) % 4:
        raise KeyFormatError("Z85 input length must be a multiple of 4")
    out: list[str] = []
    for i in range(0, len(data), 4):
        value = int.from_bytes(data[i : i + 4], "big")
        chunk = []
        for _ in range(5):
            value, digit = divmod(value, 85)
            chunk.append(Z85_ALPHABET[digit])
        out.extend(reversed(chunk))
    return "".join(out)


def z85_decode_key(text: str) -> bytes:
    """Decode a Z85 CURVE key: exactly 40 valid Z85 characters → 32 bytes."""
    if not isinstance(text, str) or len(text) != 40:
        raise KeyFormatError("a Z85 key must be exactly 40 characters")
    out = bytearray()
    for i in range(0, 40, 5):
        value = 0
        for ch in text[i : i + 5]:
            digit = _Z85_INDEX.get(ch)
            if digit is None:
                raise KeyFormatError("invalid character in Z85 key")
            value = value * 85 + digit
        if value > 0xFFFFFFFF:
            raise KeyFormatError("invalid Z85 group (value too large)")
        out += value.to_bytes(4, "big")
    return bytes(out)


def curve_keypair() -> tuple[str, str]:
    """Generate a CurveZMQ key pair: (Z85 public, Z85 secret)."""
    secret = x25519.X25519PrivateKey.generate()
    secret_raw = secret.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public_raw = secret.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return z85_encode(public_raw), z85_encode(secret_raw)

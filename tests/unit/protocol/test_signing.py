"""hmac_sha256 and rsa2048_sha1 signatures (wire-protocol.md §6)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushjobs.protocol.errors import SignatureError
from pushjobs.protocol.keys import generate_rsa_key
from pushjobs.protocol.signing import (
    HMAC_SHA256,
    RSA2048_SHA1,
    HmacKey,
    hmac_signature,
    rsa_private_encrypt,
    rsa_public_recover,
    rsa_sha1_signature,
    verify_hmac,
    verify_rsa_sha1,
)

# too_slow: generation speed depends on machine load, not on the code under test
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@functools.cache
def rsa_key() -> RSAPrivateKey:
    return generate_rsa_key(2048)


def test_method_names() -> None:
    assert HMAC_SHA256 == "hmac_sha256"
    assert RSA2048_SHA1 == "rsa2048_sha1"


def test_hmac_known_answer() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    sig = hmac_signature(b"Jefe", b"what do ya want for nothing?")
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert base64.b64decode(sig).hex() == expected
    assert len(sig) == 44 and sig.endswith("=")
    assert verify_hmac(b"Jefe", b"what do ya want for nothing?", sig)


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!", "====", "é" * 44, "AAAA", "A" * 43, " " + "A" * 43 + "="],
)
def test_hmac_malformed_signatures_fail(signature: str) -> None:
    assert verify_hmac(b"k", b"body", signature) is False


def test_hmac_rejects_non_canonical_base64() -> None:
    sig = hmac_signature(b"k", b"body")
    # The last character before "=" carries 2 unused bits; flipping them keeps the bytes equal.
    last = B64_CHARS.index(sig[42])
    alias = sig[:42] + B64_CHARS[last ^ 1] + "="
    assert base64.b64decode(alias) == base64.b64decode(sig)
    assert verify_hmac(b"k", b"body", sig)
    assert not verify_hmac(b"k", b"body", alias)


def test_hmac_wrong_key_fails() -> None:
    sig = hmac_signature(b"key-a", b"body")
    assert not verify_hmac(b"key-b", b"body", sig)


@FAST
@given(
    key=st.binary(min_size=1, max_size=64),
    body=st.binary(min_size=1, max_size=512),
    data=st.data(),
)
def test_hmac_every_body_byte_mutation_fails(key: bytes, body: bytes, data: st.DataObject) -> None:
    sig = hmac_signature(key, body)
    assert verify_hmac(key, body, sig)
    i = data.draw(st.integers(0, len(body) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda v: v != body[i]))
    assert not verify_hmac(key, body[:i] + bytes([b]) + body[i + 1 :], sig)


@FAST
@given(key=st.binary(min_size=1, max_size=64), body=st.binary(max_size=256), data=st.data())
def test_hmac_every_signature_mutation_fails(key: bytes, body: bytes, data: st.DataObject) -> None:
    sig = hmac_signature(key, body)
    # one character of the base64 text ...
    i = data.draw(st.integers(0, len(sig) - 1))
    c = data.draw(st.characters(codec="utf-8").filter(lambda ch: ch != sig[i]))
    assert not verify_hmac(key, body, sig[:i] + c + sig[i + 1 :])
    # ... or one byte of the raw MAC
    raw = base64.b64decode(sig)
    j = data.draw(st.integers(0, len(raw) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda v: v != raw[j]))
    mutated = base64.b64encode(raw[:j] + bytes([b]) + raw[j + 1 :]).decode()
    assert not verify_hmac(key, body, mutated)


def test_rsa_sha1_scheme_is_private_encrypt_of_checksum_text() -> None:
    key = rsa_key()
    body = b'{"type":"heartbeat"}'
    sig = rsa_sha1_signature(key, body)
    assert len(sig) == 344
    recovered = rsa_public_recover(key.public_key(), base64.b64decode(sig))
    assert recovered == base64.b64encode(hashlib.sha1(body).digest())
    assert verify_rsa_sha1(key.public_key(), body, sig)


def test_private_encrypt_block_layout() -> None:
    key = rsa_key()
    data = b"hello"
    s = int.from_bytes(rsa_private_encrypt(key, data), "big")
    pub = key.public_key().public_numbers()
    block = pow(s, pub.e, pub.n).to_bytes(256, "big")
    assert block == b"\x00\x01" + b"\xff" * (256 - 3 - len(data)) + b"\x00" + data


def test_private_encrypt_is_deterministic_despite_blinding() -> None:
    key = rsa_key()
    assert rsa_private_encrypt(key, b"x" * 100) == rsa_private_encrypt(key, b"x" * 100)


def test_private_encrypt_length_limit() -> None:
    key = rsa_key()
    assert rsa_public_recover(key.public_key(), rsa_private_encrypt(key, b"a" * 245)) == b"a" * 245
    with pytest.raises(SignatureError):
        rsa_private_encrypt(key, b"a" * 246)


def test_public_recover_rejects_garbage_and_standard_signatures() -> None:
    pub = rsa_key().public_key()
    assert rsa_public_recover(pub, b"") is None
    assert rsa_public_recover(pub, b"\x01" * 256) is None
    assert rsa_public_recover(pub, b"\x01" * 10) is None
    # A standard PKCS#1 v1.5 SHA-256 signature recovers to DigestInfo+hash, not the checksum.
    body = b"body"
    std = rsa_key().sign(base64.b64encode(hashlib.sha1(body).digest()), PKCS1v15(), SHA256())
    assert not verify_rsa_sha1(pub, body, base64.b64encode(std).decode())


@pytest.mark.parametrize("signature", ["", "x", "not base64", "A" * 344, "é"])
def test_rsa_malformed_signatures_fail(signature: str) -> None:
    assert verify_rsa_sha1(rsa_key().public_key(), b"body", signature) is False


def test_rsa_wrong_key_fails() -> None:
    sig = rsa_sha1_signature(rsa_key(), b"body")
    assert not verify_rsa_sha1(generate_rsa_key(1024).public_key(), b"body", sig)


@FAST
@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_rsa_every_body_byte_mutation_fails(body: bytes, data: st.DataObject) -> None:
    key = rsa_key()
    sig = rsa_sha1_signature(key, body)
    assert verify_rsa_sha1(key.public_key(), body, sig)
    i = data.draw(st.integers(0, len(body) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda v: v != body[i]))
    assert not verify_rsa_sha1(key.public_key(), body[:i] + bytes([b]) + body[i + 1 :], sig)


@functools.cache
def fixed_rsa_signature() -> tuple[bytes, str]:
    body = b'{"sequence":1,"type":"heartbeat"}'
    return body, rsa_sha1_signature(rsa_key(), body)


@FAST
@given(data=st.data())
def test_rsa_every_signature_mutation_fails(data: st.DataObject) -> None:
    body, sig = fixed_rsa_signature()
    pub = rsa_key().public_key()
    i = data.draw(st.integers(0, len(sig) - 1))
    c = data.draw(st.characters(codec="utf-8").filter(lambda ch: ch != sig[i]))
    assert not verify_rsa_sha1(pub, body, sig[:i] + c + sig[i + 1 :])
    raw = base64.b64decode(sig)
    j = data.draw(st.integers(0, len(raw) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda v: v != raw[j]))
    mutated = base64.b64encode(raw[:j] + bytes([b]) + raw[j + 1 :]).decode()
    assert not verify_rsa_sha1(pub, body, mutated)


@pytest.mark.parametrize("size", [0, 16, 32, 64, 65, 200])
def test_a_precomputed_hmac_key_signs_and_verifies_like_hmac(size: int) -> None:
    raw = bytes(range(256))[:size]
    key = HmacKey(raw)
    for body in (b"", b"x", b"{}" * 700):
        expected = hmac.new(raw, body, hashlib.sha256).digest()
        assert key.digest(body) == expected
        signature = hmac_signature(key, body)
        assert signature == hmac_signature(raw, body)
        assert verify_hmac(key, body, signature)
        assert not verify_hmac(key, body + b"!", signature)

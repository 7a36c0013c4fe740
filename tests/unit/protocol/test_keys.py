"""Keys: RSA PEM forms, session-key exchange, CURVE key pairs, Z85 (wire-protocol.md §10–11)."""

from __future__ import annotations

import datetime
import functools
import os

import pytest
import zmq
import zmq.utils.z85
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import NameOID

from pushjobs.protocol.errors import KeyFormatError
from pushjobs.protocol.keys import (
    curve_keypair,
    decrypt_session_key,
    encrypt_session_key,
    generate_rsa_key,
    key_fingerprint,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    z85_decode_key,
    z85_encode,
)


@functools.cache
def key() -> RSAPrivateKey:
    return generate_rsa_key()


def same_public(a, b) -> bool:
    return a.public_numbers() == b.public_numbers()


def test_generate_save_load_round_trip(tmp_path) -> None:
    k = key()
    assert k.key_size == 2048 and k.public_key().public_numbers().e == 65537
    pem = private_key_pem(k)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    loaded = load_private_key(path.read_bytes())
    assert loaded.private_numbers() == k.private_numbers()
    assert load_private_key(pem.decode()).private_numbers() == k.private_numbers()
    pub_pem = public_key_pem(k.public_key())
    assert pub_pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert public_key_pem(k) == pub_pem  # the public half of a private key
    assert same_public(load_public_key(pub_pem), k.public_key())
    assert same_public(load_public_key(pub_pem.encode()), k.public_key())


def test_pkcs8_private_key_loads() -> None:
    pem = key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert load_private_key(pem).private_numbers() == key().private_numbers()


def test_rsa_public_key_pkcs1_form_loads() -> None:
    pem = (
        key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    )
    assert pem.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    assert same_public(load_public_key(pem), key().public_key())


def test_certificate_form_loads() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key().public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key(), hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert same_public(load_public_key(pem), key().public_key())
    assert same_public(load_public_key(pem.decode()), key().public_key())


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"garbage",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "ünicode",
    ],
)
def test_bad_public_keys(pem: bytes | str) -> None:
    with pytest.raises(KeyFormatError):
        load_public_key(pem)


def test_non_rsa_keys_rejected() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError):
        load_public_key(ec_pub)
    ec_priv = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFormatError):
        load_private_key(ec_priv)


def test_bad_private_keys() -> None:
    for pem in (b"", b"junk", public_key_pem(key()).encode()):
        with pytest.raises(KeyFormatError):
            load_private_key(pem)
    encrypted = key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyFormatError):
        load_private_key(encrypted)


def test_fingerprint() -> None:
    fp = key_fingerprint(key().public_key())
    parts = fp.split(":")
    assert len(parts) == 32 and all(len(p) == 2 for p in parts)
    assert fp == fp.lower()
    assert key_fingerprint(key()) == fp
    assert key_fingerprint(generate_rsa_key(1024).public_key()) != fp


def test_session_key_encrypt_decrypt() -> None:
    session = os.urandom(32)
    encoded = encrypt_session_key(key().public_key(), session)
    assert isinstance(encoded, str) and "\n" not in encoded
    assert decrypt_session_key(key(), encoded) == session
    # randomised padding: two encryptions differ, both decrypt
    again = encrypt_session_key(key().public_key(), session)
    assert again != encoded and decrypt_session_key(key(), again) == session


@pytest.mark.parametrize("encoded", ["", "not base64!", "AAAA", "QUJD" * 100])
def test_session_key_bad_input(encoded: str) -> None:
    with pytest.raises(KeyFormatError):
        decrypt_session_key(key(), encoded)


def test_z85_matches_libzmq() -> None:
    for _ in range(20):
        raw = os.urandom(32)
        text = z85_encode(raw)
        assert text == zmq.utils.z85.encode(raw).decode()
        assert len(text) == 40
        assert z85_decode_key(text) == raw
    # the Z85 reference test vector from the ZeroMQ RFC 32
    assert z85_encode(bytes.fromhex("864FD26FB559F75B")) == "HelloWorld"


def test_curve_keypair_is_a_real_curve_pair() -> None:
    public, secret = curve_keypair()
    assert len(public) == 40 and len(secret) == 40
    assert len(z85_decode_key(public)) == 32 and len(z85_decode_key(secret)) == 32
    # libzmq derives the same public key from the secret
    assert zmq.curve_public(secret.encode()).decode() == public
    assert curve_keypair() != (public, secret)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a" * 39,
        "a" * 41,
        "a" * 80,
        "a" * 39 + " ",
        "a" * 39 + '"',
        "a" * 39 + "~",
        "a" * 39 + ",",
        "a" * 39 + "é",
        "#" * 40,  # every group overflows 32 bits
    ],
)
def test_z85_key_validation(text: str) -> None:
    with pytest.raises(KeyFormatError):
        z85_decode_key(text)


def test_z85_encode_needs_multiple_of_four() -> None:
    with pytest.raises(KeyFormatError):
        z85_encode(b"abc")

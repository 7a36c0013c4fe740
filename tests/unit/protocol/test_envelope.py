"""Whole ZeroMQ messages: seal, open, verify (wire-protocol.md §3–§6, §16 steps 2–4, 8)."""

from __future__ import annotations

import functools

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from pushjobs.protocol.envelope import (
    Envelope,
    open_envelope,
    seal_heartbeat,
    seal_hmac,
    verify_envelope_hmac,
    verify_envelope_rsa,
)
from pushjobs.protocol.errors import BodyError, HeaderError
from pushjobs.protocol.header import Header, format_header
from pushjobs.protocol.keys import generate_rsa_key
from pushjobs.protocol.messages import Output, ServerHeartbeat, parse_agent_message

KEY = b"\x01" * 32
TS = "Fri, 27 Nov 2026 05:56:29 GMT"


@functools.cache
def server_key() -> RSAPrivateKey:
    return generate_rsa_key()


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_hmac_seal_open_verify(version: str) -> None:
    fields = {"type": "abort", "sequence": 3, "timestamp": TS}
    header, body = seal_hmac(version, fields, KEY)
    assert header.startswith(f"Version:{version};SigningMethod:hmac_sha256;Signature:".encode())
    env = open_envelope(header, body, 65536, "hmac_sha256")
    assert isinstance(env, Envelope)
    assert env.version == version and env.body == body and env.fields == fields
    assert isinstance(env.header, Header)
    assert verify_envelope_hmac(env, KEY)
    assert not verify_envelope_hmac(env, b"\x02" * 32)
    assert not verify_envelope_rsa(env, server_key().public_key())


def test_3_0_output_envelope_keeps_bytes() -> None:
    msg = Output(
        "stdout",
        0,
        b"\xff\x00",
        node="n",
        org="o",
        timestamp=TS,
        incarnation_id="i",
        sequence=1,
        job_id="j",
        protocol_version="3.0",
    )
    env = open_envelope(*seal_hmac("3.0", msg.to_dict(), KEY), 65536, "hmac_sha256")
    assert verify_envelope_hmac(env, KEY)
    assert parse_agent_message(env.fields, env.version) == msg


def test_heartbeat_seal_open_verify() -> None:
    hb = ServerHeartbeat("push1", "inc-1", sequence=0, timestamp=TS)
    header, body = seal_heartbeat(hb.to_dict(), server_key())
    assert header.startswith(b"Version:2.0;SigningMethod:rsa2048_sha1;Signature:")
    assert body.startswith(b'{"sequence":0,')  # always 2.0 JSON
    env = open_envelope(header, body, 65536, "rsa2048_sha1")
    assert verify_envelope_rsa(env, server_key().public_key())
    assert not verify_envelope_rsa(env, generate_rsa_key(1024).public_key())
    assert not verify_envelope_hmac(env, KEY)


def test_signing_method_must_match() -> None:
    header, body = seal_heartbeat({"type": "heartbeat"}, server_key())
    with pytest.raises(HeaderError):
        open_envelope(header, body, 65536, "hmac_sha256")
    header, body = seal_hmac("2.0", {"type": "x"}, KEY)
    with pytest.raises(HeaderError):
        open_envelope(header, body, 65536, "rsa2048_sha1")


def test_limits_and_malformed_parts() -> None:
    header, body = seal_hmac("2.0", {"type": "x", "pad": "y" * 100}, KEY)
    with pytest.raises(BodyError):
        open_envelope(header, body, len(body) - 1, "hmac_sha256")
    assert open_envelope(header, body, len(body), "hmac_sha256").fields["pad"] == "y" * 100
    with pytest.raises(HeaderError):
        open_envelope(header + b";" + b"x" * 2048, body, 65536, "hmac_sha256")
    with pytest.raises(HeaderError):
        open_envelope(b"garbage", body, 65536, "hmac_sha256")
    with pytest.raises(BodyError):
        open_envelope(header, b"[1,2]", 65536, "hmac_sha256")
    # the header's version decides the codec: a JSON body under Version:3.0 is not a map
    v3 = format_header("3.0", "hmac_sha256", "x")
    with pytest.raises(BodyError):
        open_envelope(v3, body, 65536, "hmac_sha256")


def test_tampered_body_fails_verification() -> None:
    header, body = seal_hmac("2.0", {"type": "abort", "sequence": 1}, KEY)
    env = open_envelope(header, body.replace(b"1", b"2"), 65536, "hmac_sha256")
    assert not verify_envelope_hmac(env, KEY)

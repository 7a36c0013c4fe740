"""Fuzzing: random input to any parser raises only ProtocolError subclasses, nothing else."""

from __future__ import annotations

import functools
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushjobs.protocol.chef_auth import sign_request, validate_auth_headers, verify_request
from pushjobs.protocol.codec import decode_body
from pushjobs.protocol.envelope import open_envelope, verify_envelope_hmac, verify_envelope_rsa
from pushjobs.protocol.errors import (
    BodyError,
    ChefAuthError,
    HeaderError,
    MessageError,
    ProtocolError,
)
from pushjobs.protocol.header import parse_header
from pushjobs.protocol.keys import generate_rsa_key, load_public_key, z85_decode_key
from pushjobs.protocol.messages import parse_agent_message, parse_server_message
from pushjobs.protocol.timestamps import parse_rfc1123, parse_xops_timestamp

# too_slow: generation speed depends on machine load, not on the code under test
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AGENT_FIELDS = [
    "node",
    "client",
    "org",
    "type",
    "sequence",
    "timestamp",
    "incarnation_id",
    "job_id",
    "protocol_version",
    "job_state",
    "exit_status",
    "signal",
    "stdout_bytes",
    "stderr_bytes",
    "stdout",
    "stderr",
    "channel",
    "offset",
    "data",
    "omitted_bytes",
]
SERVER_FIELDS = ["type", "sequence", "timestamp", "server", "incarnation_id", "job_id"]
SERVER_FIELDS += ["command", "capture", "user", "dir", "env", "file", "run_timeout"]
TYPES = ["heartbeat", "abort", "ack", "commit", "run", "ack_commit", "nack_commit", "ack_run"]
TYPES += ["nack_run", "succeeded", "failed", "aborted", "output", "bogus", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.sampled_from(TYPES)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=6,
)


def message_dicts(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(names) | st.text(max_size=8), values, max_size=10)


@functools.cache
def rsa_key() -> RSAPrivateKey:
    return generate_rsa_key()


@FUZZ
@given(st.binary(max_size=3000))
def test_header_bytes(raw: bytes) -> None:
    try:
        parse_header(raw)
    except HeaderError:
        pass


@FUZZ
@given(
    st.lists(
        st.sampled_from(
            ["Version:", "SigningMethod:", "Signature:", "SignedChecksum:", ""]
        ).flatmap(lambda p: st.text(max_size=12).map(lambda t: p + t)),
        max_size=6,
    )
)
def test_header_structured(parts: list[str]) -> None:
    try:
        h = parse_header(";".join(parts).encode("utf-8"))
        assert h.version in ("2.0", "3.0")
    except HeaderError:
        pass


@FUZZ
@given(st.sampled_from(["2.0", "3.0"]), st.binary(max_size=2000))
def test_body_bytes(version: str, raw: bytes) -> None:
    try:
        assert isinstance(decode_body(version, raw, 1000), dict)
    except BodyError:
        pass


@FUZZ
@given(values)
def test_body_packed_values(value: Any) -> None:
    try:
        raw = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    try:
        decode_body("3.0", raw, 100_000)
    except BodyError:
        pass


@FUZZ
@given(message_dicts(AGENT_FIELDS), st.sampled_from(["2.0", "3.0"]))
def test_agent_message_dicts(fields: dict[str, Any], version: str) -> None:
    try:
        msg = parse_agent_message(fields, version)
    except MessageError:
        return
    # whatever parses must survive its own round trip
    assert type(msg).from_dict(msg.to_dict()) == msg


@FUZZ
@given(message_dicts(SERVER_FIELDS))
def test_server_message_dicts(fields: dict[str, Any]) -> None:
    try:
        msg = parse_server_message(fields)
    except MessageError:
        return
    assert type(msg).from_dict(msg.to_dict()) == msg


VALID_AGENT = {
    "node": "n",
    "client": "c",
    "protocol_version": "3.0",
    "org": "o",
    "type": "output",
    "sequence": 1,
    "timestamp": "Fri, 27 Nov 2026 05:56:29 GMT",
    "incarnation_id": "i",
    "job_id": "j",
    "channel": "stdout",
    "offset": 0,
    "data": b"x",
}


@FUZZ
@given(st.sampled_from(sorted(VALID_AGENT)), values, st.sampled_from(TYPES))
def test_one_field_replaced(name: str, value: Any, msg_type: str) -> None:
    fields = dict(VALID_AGENT, type=msg_type)
    fields[name] = value
    for version in ("2.0", "3.0"):
        try:
            parse_agent_message(fields, version)
        except MessageError:
            pass
        try:
            parse_server_message(fields)
        except MessageError:
            pass


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=300), st.sampled_from(["2.0", "3.0"]))
def test_whole_inbound_pipeline(header: bytes, body: bytes, version: str) -> None:
    # half of the time give the header a valid prefix so the body gets decoded
    if header[:1] < b"\x80":
        header = f"Version:{version};SigningMethod:hmac_sha256;Signature:".encode() + header
    try:
        env = open_envelope(header, body, 1000, "hmac_sha256")
        verify_envelope_hmac(env, b"k" * 32)
        verify_envelope_rsa(env, rsa_key().public_key())
        parse_agent_message(env.fields, env.version)
    except ProtocolError:
        pass


header_names = st.sampled_from(
    [
        "x-ops-userid",
        "x-ops-timestamp",
        "x-ops-sign",
        "x-ops-content-hash",
        "x-ops-server-api-version",
        "x-ops-authorization-1",
        "x-ops-authorization-2",
        "x-ops-authorization-3",
    ]
)
header_values = st.text(max_size=80) | st.sampled_from(
    [
        "2026-11-27T05:56:29Z",
        "algorithm=sha1;version=1.1;",
        "version=1.0",
        "algorithm=sha256;version=1.3",
        "2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
        "AAAA",
        "",
    ]
)


@FUZZ
@given(st.dictionaries(header_names, header_values, max_size=8), st.binary(max_size=50))
def test_chef_header_maps(headers: dict[str, str], body: bytes) -> None:
    try:
        auth = validate_auth_headers(headers, 1795758989.0)
    except ChefAuthError as err:
        assert err.status in (400, 401) and err.message
        return
    result = verify_request(
        auth, method="GET", path="/x", body=body, public_key=rsa_key().public_key()
    )
    assert result is False


@functools.cache
def signed_headers() -> dict[str, str]:
    h = sign_request(
        method="POST",
        path="/organizations/o/pushy/jobs",
        body=b"{}",
        user_id="u",
        private_key=rsa_key(),
        version="1.3",
        timestamp="2026-11-27T05:56:29Z",
        server_api_version="1",
    )
    return {k.lower(): v for k, v in h.items()}


@FUZZ
@given(st.sampled_from(sorted(signed_headers())), header_values)
def test_chef_one_header_replaced(name: str, value: str) -> None:
    headers = dict(signed_headers())
    original = headers[name]
    headers[name] = value
    try:
        auth = validate_auth_headers(headers, 1795758989.0)
    except ChefAuthError:
        return
    ok = verify_request(
        auth,
        method="POST",
        path="/organizations/o/pushy/jobs",
        body=b"{}",
        public_key=rsa_key().public_key(),
    )
    if name == "x-ops-sign":  # any description of version 1.3 is equivalent
        assert ok is (auth.sign_version == "1.3")
    else:
        assert ok is (value == original)


@FUZZ
@given(st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_text_parsers(text: str) -> None:
    for parse in (parse_rfc1123, parse_xops_timestamp, z85_decode_key, load_public_key):
        try:
            parse(text)
        except ProtocolError:
            pass

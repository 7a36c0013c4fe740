"""Known-answer vectors.

(a) The Ruby push client 3.0.13 frames, keys and config request (vectors_ruby_client.py, copied
    from docs/spec/vectors/ruby-client-2.0-frames.md).
(b) The published fixed examples of mixlib-authentication (vectors_chef_auth.py).
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from pushjobs.protocol.chef_auth import (
    canonical_request,
    sign_request,
    validate_auth_headers,
    verify_request,
)
from pushjobs.protocol.codec import encode_body
from pushjobs.protocol.envelope import (
    open_envelope,
    verify_envelope_hmac,
    verify_envelope_rsa,
)
from pushjobs.protocol.keys import load_private_key, load_public_key, z85_decode_key
from pushjobs.protocol.messages import (
    AgentHeartbeat,
    Commit,
    Failed,
    Succeeded,
    parse_agent_message,
    parse_server_message,
)
from pushjobs.protocol.signing import hmac_signature, rsa_private_encrypt, rsa_public_recover
from pushjobs.protocol.timestamps import parse_rfc1123, parse_xops_timestamp

from . import vectors_chef_auth as mixlib
from . import vectors_ruby_client as ruby

SESSION_KEY = base64.b64decode(ruby.SESSION_KEY_B64)
CLIENT_FRAMES = [f for f in ruby.FRAMES if f[1] == "C"]
SERVER_FRAMES = [f for f in ruby.FRAMES if f[1] == "S"]
# The vector's test server left `capture` out of commits without capture; we always send it.
COMMITS_WITHOUT_CAPTURE = {10, 19}


def frame_id(frame: tuple) -> str:
    return f"frame{frame[0]}"


def test_vector_counts() -> None:
    assert len(ruby.FRAMES) == 27
    assert len(CLIENT_FRAMES) == 16
    assert len(SESSION_KEY) == 32


# ---------------------------------------------------------------- (a) ZeroMQ frames


@pytest.mark.parametrize("frame", ruby.FRAMES, ids=frame_id)
def test_hmac_signature_verifies_and_re_signs_identically(frame: tuple) -> None:
    _, _, header, body = frame
    env = open_envelope(header, body, 65536, "hmac_sha256")
    assert env.version == "2.0"
    assert verify_envelope_hmac(env, SESSION_KEY)
    assert hmac_signature(SESSION_KEY, body) == env.header.signature
    assert not verify_envelope_hmac(env, SESSION_KEY[::-1])


@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=frame_id)
def test_client_bodies_parse_and_re_encode_byte_identically(frame: tuple) -> None:
    _, _, header, body = frame
    env = open_envelope(header, body, 65536, "hmac_sha256")
    msg = parse_agent_message(env.fields, env.version)
    assert msg.node == "node1" and msg.org == "testorg" and msg.client == "node1host"
    assert encode_body("2.0", msg.to_dict()) == body


@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=frame_id)
def test_server_bodies_parse_and_re_encode(frame: tuple) -> None:
    number, _, header, body = frame
    env = open_envelope(header, body, 65536, "hmac_sha256")
    msg = parse_server_message(env.fields)
    encoded = encode_body("2.0", msg.to_dict())
    if number in COMMITS_WITHOUT_CAPTURE:
        assert isinstance(msg, Commit) and msg.capture is False
        assert encoded == body[:-1] + b',"capture":false}'
    else:
        assert encoded == body


def test_typed_content_of_some_frames() -> None:
    by_number = {f[0]: f for f in ruby.FRAMES}

    def agent(n: int):
        return parse_agent_message(
            open_envelope(*by_number[n][2:], 65536, "hmac_sha256").fields, "2.0"
        )

    first = agent(1)
    assert isinstance(first, AgentHeartbeat)
    assert (first.job_state, first.job_id, first.sequence) == ("idle", None, 1)
    ok = agent(9)
    assert isinstance(ok, Succeeded)
    assert ok.stdout == "hello from node1 FOO=bar\nfile-contents\n/tmp\n"
    assert ok.stderr == "to-stderr\n"
    failed = agent(16)
    assert isinstance(failed, Failed) and failed.exit_status is None and failed.stderr == ""
    commit = parse_server_message(open_envelope(*by_number[4][2:], 65536, "hmac_sha256").fields)
    assert isinstance(commit, Commit)
    assert commit.env == {"FOO": "bar"} and commit.file == "raw:file-contents\n"
    assert commit.capture is True and commit.dir == "/tmp"
    parse_rfc1123(first.timestamp)


def test_server_heartbeat_rsa2048_sha1_verifies() -> None:
    header, body = ruby.SERVER_HEARTBEAT
    server_pub = load_public_key(ruby.SERVER_PUBLIC_KEY_PEM)
    env = open_envelope(header, body, 65536, "rsa2048_sha1")
    assert verify_envelope_rsa(env, server_pub)
    # the scheme: the signature recovers to the ASCII text base64(SHA-1(body))
    recovered = rsa_public_recover(server_pub, base64.b64decode(env.header.signature))
    assert recovered == base64.b64encode(hashlib.sha1(body).digest())
    assert not verify_envelope_rsa(env, load_public_key(ruby.CLIENT_PUBLIC_KEY_PEM))
    msg = parse_server_message(env.fields)
    assert encode_body("2.0", msg.to_dict()) == body
    tampered = open_envelope(header, body.replace(b"stubhost", b"stubhosT"), 65536, "rsa2048_sha1")
    assert not verify_envelope_rsa(tampered, server_pub)


def test_curve_keys_decode() -> None:
    assert len(z85_decode_key(ruby.SERVER_CURVE_PUBLIC)) == 32
    assert len(z85_decode_key(ruby.CLIENT_CURVE_PUBLIC)) == 32


# ---------------------------------------------------------------- (a) config request


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
def test_canonical_strings_of_the_config_request(version: str) -> None:
    timestamp, api_version, expected = ruby.CANONICAL[version]
    got = canonical_request(
        method=ruby.CONFIG_METHOD,
        path=ruby.CONFIG_PATH,
        body=b"",
        user_id=ruby.CONFIG_USER_ID,
        timestamp=timestamp,
        version=version,
        server_api_version=api_version,
    )
    assert got == expected.encode()
    # the signed path excludes the query string
    with_query = canonical_request(
        method="get",
        path=f"{ruby.CONFIG_PATH}?{ruby.CONFIG_QUERY}",
        body=b"",
        user_id=ruby.CONFIG_USER_ID,
        timestamp=timestamp,
        version=version,
        server_api_version=api_version,
    )
    assert with_query == expected.encode()


def test_config_request_1_1_signature_verifies() -> None:
    headers = {k.lower(): v for k, v in ruby.CONFIG_HEADERS_1_1.items()}
    now = parse_xops_timestamp(headers["x-ops-timestamp"]) + 30
    auth = validate_auth_headers(headers, now)
    assert auth.sign_version == "1.1" and auth.user_id == "node1"
    assert auth.server_api_version == "2"
    client_pub = load_public_key(ruby.CLIENT_PUBLIC_KEY_PEM)
    kwargs = {"method": "GET", "path": ruby.CONFIG_PATH, "body": b""}
    assert verify_request(auth, public_key=client_pub, **kwargs)
    assert not verify_request(
        auth, public_key=load_public_key(ruby.SERVER_PUBLIC_KEY_PEM), **kwargs
    )
    assert not verify_request(
        auth, public_key=client_pub, method="POST", path=ruby.CONFIG_PATH, body=b""
    )
    assert not verify_request(
        auth, public_key=client_pub, method="GET", path=ruby.CONFIG_PATH + "x", body=b""
    )
    assert not verify_request(
        auth, public_key=client_pub, method="GET", path=ruby.CONFIG_PATH, body=b"x"
    )
    recovered = rsa_public_recover(client_pub, auth.signature or b"")
    assert recovered == ruby.CANONICAL["1.1"][2].encode()


# ---------------------------------------------------------------- (b) mixlib-authentication


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
def test_mixlib_published_signatures(version: str) -> None:
    key = load_private_key(mixlib.PRIVATE_KEY_PEM)
    api = mixlib.SERVER_API_VERSION_1_3 if version == "1.3" else None
    headers = sign_request(
        method=mixlib.METHOD,
        path=mixlib.PATH,
        body=mixlib.BODY,
        user_id=mixlib.USER_ID,
        private_key=key,
        version=version,
        timestamp=mixlib.TIMESTAMP,
        server_api_version=api,
    )
    lines = mixlib.AUTHORIZATION_LINES[version]
    expected = {
        "X-Ops-Sign": mixlib.X_OPS_SIGN[version],
        "X-Ops-Userid": mixlib.USER_ID,
        "X-Ops-Timestamp": mixlib.TIMESTAMP,
        "X-Ops-Content-Hash": (
            mixlib.HASHED_BODY_SHA256 if version == "1.3" else mixlib.HASHED_BODY_SHA1
        ),
        **{f"X-Ops-Authorization-{i + 1}": line for i, line in enumerate(lines)},
    }
    if api is not None:
        expected["X-Ops-Server-API-Version"] = api
    assert headers == expected


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
def test_mixlib_published_signatures_verify(version: str) -> None:
    headers = {
        "x-ops-sign": mixlib.X_OPS_SIGN[version],
        "x-ops-userid": mixlib.USER_ID,
        "x-ops-timestamp": mixlib.TIMESTAMP,
        "x-ops-content-hash": (
            mixlib.HASHED_BODY_SHA256 if version == "1.3" else mixlib.HASHED_BODY_SHA1
        ),
    }
    for i, line in enumerate(mixlib.AUTHORIZATION_LINES[version]):
        headers[f"x-ops-authorization-{i + 1}"] = line
    if version == "1.3":
        headers["x-ops-server-api-version"] = mixlib.SERVER_API_VERSION_1_3
    auth = validate_auth_headers(headers, parse_xops_timestamp(mixlib.TIMESTAMP))
    pub = load_public_key(mixlib.PUBLIC_KEY_PEM)
    assert verify_request(auth, method="POST", path=mixlib.PATH, body=mixlib.BODY, public_key=pub)
    assert not verify_request(
        auth, method="POST", path=mixlib.PATH, body=b"Spec Bodz", public_key=pub
    )


def test_mixlib_canonical_strings() -> None:
    common = {
        "method": "post",
        "path": mixlib.PATH,
        "body": mixlib.BODY,
        "user_id": mixlib.USER_ID,
        "timestamp": mixlib.TIMESTAMP,
    }
    assert canonical_request(version="1.0", **common) == mixlib.CANONICAL_1_0.encode()
    digested_user = base64.b64encode(hashlib.sha1(b"spec-user").digest()).decode()
    expected_1_1 = mixlib.CANONICAL_1_0.replace("UserId:spec-user", f"UserId:{digested_user}")
    assert canonical_request(version="1.1", **common) == expected_1_1.encode()
    assert (
        canonical_request(version="1.3", server_api_version="1", **common)
        == mixlib.CANONICAL_1_3.encode()
    )
    # 1.0/1.1 signatures are the raw private-key operation over the canonical text
    key = load_private_key(mixlib.PRIVATE_KEY_PEM)
    sig = rsa_private_encrypt(key, mixlib.CANONICAL_1_0.encode())
    assert base64.b64encode(sig).decode() == "".join(mixlib.AUTHORIZATION_LINES["1.0"])

"""Chef X-Ops request authentication: header validation, signing, verification (http-api.md §4)."""

from __future__ import annotations

import base64
import functools

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from pushjobs.protocol.chef_auth import (
    AuthHeaders,
    canonical_path,
    canonical_request,
    sign_request,
    validate_auth_headers,
    verify_request,
)
from pushjobs.protocol.errors import ChefAuthError, ProtocolError
from pushjobs.protocol.keys import generate_rsa_key
from pushjobs.protocol.timestamps import parse_xops_timestamp

TS = "2026-11-27T05:56:29Z"
NOW = parse_xops_timestamp(TS)
PATH = "/organizations/acme/pushy/jobs"


@functools.cache
def key() -> RSAPrivateKey:
    return generate_rsa_key()


@functools.cache
def other_key() -> RSAPrivateKey:
    return generate_rsa_key()


def signed(version: str = "1.3", body: bytes = b'{"a":1}', **kw: str) -> dict[str, str]:
    headers = sign_request(
        method="POST",
        path=PATH,
        body=body,
        user_id="alice",
        private_key=key(),
        version=version,
        timestamp=TS,
        **kw,
    )
    return {k.lower(): v for k, v in headers.items()}


def auth_error(headers: dict[str, str], now: float = NOW) -> ChefAuthError:
    with pytest.raises(ChefAuthError) as info:
        validate_auth_headers(headers, now)
    return info.value


# ---------------------------------------------------------------- §4.2 validation


def test_valid_headers() -> None:
    auth = validate_auth_headers(signed("1.3", server_api_version="2"), NOW)
    assert isinstance(auth, AuthHeaders)
    assert auth.user_id == "alice" and auth.timestamp == TS and auth.sign_version == "1.3"
    assert auth.server_api_version == "2"
    assert isinstance(auth.signature, bytes) and len(auth.signature) == 256


@pytest.mark.parametrize(
    ("drop", "names"),
    [
        (["x-ops-userid"], "'X-Ops-UserId'"),
        (["x-ops-userid", "x-ops-sign"], "'X-Ops-UserId', 'X-Ops-Sign'"),
        (["x-ops-content-hash", "x-ops-timestamp"], "'X-Ops-Timestamp', 'X-Ops-Content-Hash'"),
        (
            ["x-ops-sign", "x-ops-content-hash", "x-ops-timestamp", "x-ops-userid"],
            "'X-Ops-UserId', 'X-Ops-Timestamp', 'X-Ops-Sign', 'X-Ops-Content-Hash'",
        ),
    ],
)
def test_missing_headers_listed_in_fixed_order(drop: list[str], names: str) -> None:
    headers = signed()
    for name in drop:
        del headers[name]
    err = auth_error(headers)
    assert err.status == 400
    assert err.message == f"missing required authentication header(s) {names}"
    assert err.www_authenticate is False
    assert isinstance(err, ProtocolError)


def test_empty_value_counts_as_missing() -> None:
    headers = signed() | {"x-ops-sign": "", "x-ops-userid": ""}
    err = auth_error(headers)
    assert (err.status, err.message) == (
        400,
        "missing required authentication header(s) 'X-Ops-UserId', 'X-Ops-Sign'",
    )


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-11-27 05:56:29Z",
        "2026-11-27T05:56:29",
        "2026-11-27T05:56:29+00:00",
        "2026-11-27T05:56:29.123Z",
        "2026-13-27T05:56:29Z",
        "2026-02-30T05:56:29Z",
        "2026-11-27T24:00:00Z",
        "Fri, 27 Nov 2026 05:56:29 GMT",
        "2026-11-27T05:56:29Z\n",
        "٢٠٢٦-11-27T05:56:29Z",
        "junk",
    ],
)
def test_bad_timestamp(timestamp: str) -> None:
    err = auth_error(signed() | {"x-ops-timestamp": timestamp})
    assert (err.status, err.message, err.www_authenticate) == (
        401,
        "bad header(s) 'X-Ops-Timestamp'",
        False,
    )


def test_lenient_digit_counts_in_timestamp() -> None:
    # The spec's pattern is \d+ per field: single digits form a valid date-time.
    auth = validate_auth_headers(signed() | {"x-ops-timestamp": "2026-11-27T5:56:29Z"}, NOW)
    assert auth.timestamp == "2026-11-27T5:56:29Z"


@pytest.mark.parametrize("offset", [-900, 900, 901, -5000, 10**6])
def test_clock_skew_rejected(offset: float) -> None:
    err = auth_error(signed(), NOW + offset)
    assert (err.status, err.message) == (
        401,
        "Failed to authenticate as alice. Synchronize the clock on your host.",
    )


@pytest.mark.parametrize("offset", [-899.9, 0, 899.9])
def test_clock_skew_accepted(offset: float) -> None:
    validate_auth_headers(signed(), NOW + offset)


def test_skew_checked_before_version() -> None:
    headers = signed() | {"x-ops-sign": "version=9.9"}
    assert auth_error(headers, NOW + 1000).status == 401


@pytest.mark.parametrize(
    "sign",
    [
        "version=1.2",
        "algorithm=sha1;version=1.2;",
        "version=2.0",
        "algorithm=sha256;version=1.1",
        "algorithm=sha1;version=1.3",
        "algorithm=md5;version=1.0",
        "algorithm=sha1",
        "version=",
        "version",
        "VERSION=1.1",
        "version=1.1 ;algorithm=SHA1",
    ],
)
def test_unsupported_signing_description(sign: str) -> None:
    err = auth_error(signed() | {"x-ops-sign": sign})
    assert (err.status, err.message) == (400, "Unsupported authentication protocol version")


@pytest.mark.parametrize(
    ("sign", "version"),
    [
        ("version=1.0", "1.0"),
        ("algorithm=sha1;version=1.0;", "1.0"),
        ("algorithm=sha1;version=1.1;", "1.1"),
        ("version=1.1", "1.1"),
        ("algorithm=sha256;version=1.3", "1.3"),
        (" algorithm = sha256 ; version = 1.3 ;; ", "1.3"),
        ("foo=bar;version=1.3;x=1=2", "1.3"),
    ],
)
def test_supported_signing_descriptions(sign: str, version: str) -> None:
    assert validate_auth_headers(signed() | {"x-ops-sign": sign}, NOW).sign_version == version


def test_authorization_lines_stop_at_first_gap() -> None:
    headers = signed()
    full = validate_auth_headers(headers, NOW).signature
    del headers["x-ops-authorization-3"]
    partial = validate_auth_headers(headers, NOW).signature
    assert partial != full


def test_signature_missing_or_not_base64_is_none() -> None:
    headers = signed()
    for name in [k for k in headers if k.startswith("x-ops-authorization-")]:
        del headers[name]
    assert validate_auth_headers(headers, NOW).signature is None
    bad = signed() | {"x-ops-authorization-1": "epicfail!"}
    assert validate_auth_headers(bad, NOW).signature is None


# ---------------------------------------------------------------- signing + §4.5 step 4


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
def test_sign_verify_round_trip(version: str) -> None:
    headers = signed(version)
    assert len([h for h in headers if h.startswith("x-ops-authorization-")]) == 6
    assert all(len(v) <= 60 for k, v in headers.items() if k.startswith("x-ops-authorization"))
    auth = validate_auth_headers(headers, NOW)
    ok = {"method": "POST", "path": PATH, "body": b'{"a":1}'}
    assert verify_request(auth, public_key=key().public_key(), **ok)
    assert verify_request(auth, public_key=key().public_key(), **(ok | {"method": "post"}))
    assert not verify_request(auth, public_key=other_key().public_key(), **ok)
    assert not verify_request(auth, public_key=key().public_key(), **(ok | {"method": "GET"}))
    assert not verify_request(auth, public_key=key().public_key(), **(ok | {"path": PATH + "/x"}))


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
def test_wrong_content_hash_fails(version: str) -> None:
    headers = signed(version)
    auth = validate_auth_headers(headers, NOW)
    pub = key().public_key()
    # body differs from the one signed
    assert not verify_request(auth, method="POST", path=PATH, body=b'{"a":2}', public_key=pub)
    # header hash differs from the received body's hash (even though the signature matches it)
    forged = validate_auth_headers(headers | {"x-ops-content-hash": "AAAA"}, NOW)
    assert not verify_request(forged, method="POST", path=PATH, body=b'{"a":1}', public_key=pub)


def test_server_api_version_must_be_decimal_integer() -> None:
    pub = key().public_key()
    ok = {"method": "POST", "path": PATH, "body": b'{"a":1}', "public_key": pub}
    for value in ("abc", "1.5", "-1", " 2", "2 ", "٢", "0x2"):
        auth = validate_auth_headers(signed("1.3", server_api_version=value), NOW)
        assert not verify_request(auth, **ok), value
    auth = validate_auth_headers(signed("1.3", server_api_version="12"), NOW)
    assert verify_request(auth, **ok)
    # absent means 0
    auth = validate_auth_headers(signed("1.3"), NOW)
    assert auth.server_api_version is None and verify_request(auth, **ok)
    zero = validate_auth_headers(signed("1.3", server_api_version="0"), NOW)
    assert verify_request(zero, **ok)
    # the version is covered by the 1.3 signature
    changed = validate_auth_headers(
        signed("1.3", server_api_version="1") | {"x-ops-server-api-version": "2"}, NOW
    )
    assert not verify_request(changed, **ok)
    # and ignored by 1.0/1.1
    old = validate_auth_headers(signed("1.1") | {"x-ops-server-api-version": "junk"}, NOW)
    assert verify_request(old, **ok)


def test_empty_or_bad_signature_fails() -> None:
    pub = key().public_key()
    ok = {"method": "POST", "path": PATH, "body": b'{"a":1}', "public_key": pub}
    auth = validate_auth_headers(signed("1.1"), NOW)
    for sig in (None, b"", b"\x00" * 256, auth.signature[:-1]):  # type: ignore[index]
        fake = AuthHeaders(
            auth.user_id, auth.timestamp, auth.sign_version, auth.content_hash, sig, None
        )
        assert not verify_request(fake, **ok)
    bad = validate_auth_headers(signed("1.3") | {"x-ops-authorization-1": "epicfail"}, NOW)
    assert not verify_request(bad, **ok)


def test_version_confusion_fails() -> None:
    # a 1.1 signature presented as 1.0 (different user id line) does not verify
    headers = signed("1.1") | {"x-ops-sign": "version=1.0"}
    auth = validate_auth_headers(headers, NOW)
    assert not verify_request(
        auth, method="POST", path=PATH, body=b'{"a":1}', public_key=key().public_key()
    )


def test_signature_covers_user_id_and_timestamp() -> None:
    pub = key().public_key()
    ok = {"method": "POST", "path": PATH, "body": b'{"a":1}', "public_key": pub}
    for version in ("1.0", "1.1", "1.3"):
        headers = signed(version)
        assert not verify_request(
            validate_auth_headers(headers | {"x-ops-userid": "mallory"}, NOW), **ok
        )
        assert not verify_request(
            validate_auth_headers(headers | {"x-ops-timestamp": "2026-11-27T05:56:30Z"}, NOW),
            **ok,
        )


def test_signed_path_is_canonicalised_on_both_sides() -> None:
    headers = signed("1.3")
    auth = validate_auth_headers(headers, NOW)
    for path in (PATH + "/", "//organizations//acme/pushy/jobs//", PATH + "?x=1"):
        assert verify_request(
            auth, method="POST", path=path, body=b'{"a":1}', public_key=key().public_key()
        )


def test_sign_request_headers() -> None:
    headers = sign_request(
        method="GET", path="/", body=b"", user_id="u", private_key=key(), version="1.1"
    )
    assert headers["X-Ops-Sign"] == "algorithm=sha1;version=1.1;"
    assert headers["X-Ops-Content-Hash"] == "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
    assert "X-Ops-Server-API-Version" not in headers
    parse_xops_timestamp(headers["X-Ops-Timestamp"])  # defaults to now
    h13 = sign_request(
        method="GET",
        path="/",
        body=b"",
        user_id="u",
        private_key=key(),
        server_api_version="2",
    )
    assert h13["X-Ops-Sign"] == "algorithm=sha256;version=1.3;"
    assert h13["X-Ops-Content-Hash"] == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert h13["X-Ops-Server-API-Version"] == "2"
    signature = "".join(h13[f"X-Ops-Authorization-{i}"] for i in range(1, 7))
    assert len(base64.b64decode(signature)) == 256


def test_sign_request_rejects_unknown_versions() -> None:
    for version in ("1.2", "2.0", ""):
        with pytest.raises(ChefAuthError):
            sign_request(
                method="GET", path="/", body=b"", user_id="u", private_key=key(), version=version
            )


def test_long_user_id_in_1_0_is_an_error_not_a_crash() -> None:
    with pytest.raises(ProtocolError):
        sign_request(
            method="GET", path="/", body=b"", user_id="A" * 200, private_key=key(), version="1.0"
        )
    # 1.1 hashes the user id, so any length signs
    sign_request(
        method="GET", path="/", body=b"", user_id="A" * 200, private_key=key(), version="1.1"
    )


# ---------------------------------------------------------------- canonical path / string


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("//", "/"),
        ("///", "/"),
        ("/organizations/acme/pushy/jobs", "/organizations/acme/pushy/jobs"),
        ("/organizations/acme/pushy/jobs/", "/organizations/acme/pushy/jobs"),
        ("//organizations///acme//pushy/jobs//", "/organizations/acme/pushy/jobs"),
        (
            "/organizations/acme/pushy/config/n1?ccpk=a%2Fb&v=2.0",
            "/organizations/acme/pushy/config/n1",
        ),
        ("/a%2Fb/c%20d/", "/a%2Fb/c%20d"),
        ("/?q=1", "/"),
    ],
)
def test_canonical_path(path: str, expected: str) -> None:
    assert canonical_path(path) == expected


def test_canonical_request_rejects_unknown_version() -> None:
    with pytest.raises(ChefAuthError):
        canonical_request(
            method="GET", path="/", body=b"", user_id="u", timestamp=TS, version="1.2"
        )

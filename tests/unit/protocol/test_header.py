"""Header frame parsing and formatting (wire-protocol.md §4)."""

from __future__ import annotations

import pytest

from pushjobs.protocol.errors import HeaderError, ProtocolError
from pushjobs.protocol.header import (
    VERSIONS,
    Header,
    format_header,
    parse_header,
)
from pushjobs.protocol.limits import HEADER_LIMIT

SIG = "GE+WAYYw7VOZ7+m/adJaZj2J5U8mHygV/m+Dd7nbuCI="


def test_constants() -> None:
    assert HEADER_LIMIT == 2048
    assert VERSIONS == ("2.0", "3.0")
    assert issubclass(HeaderError, ProtocolError)


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_format_is_exact_and_round_trips(version: str) -> None:
    raw = format_header(version, "hmac_sha256", SIG)
    assert raw == f"Version:{version};SigningMethod:hmac_sha256;Signature:{SIG}".encode()
    assert parse_header(raw) == Header(version, "hmac_sha256", SIG)


def test_signed_checksum_is_a_synonym() -> None:
    raw = f"Version:2.0;SigningMethod:rsa2048_sha1;SignedChecksum:{SIG}".encode()
    assert parse_header(raw) == Header("2.0", "rsa2048_sha1", SIG)


def test_parts_in_any_order_and_unknown_parts_ignored() -> None:
    raw = f"Foo:bar;Signature:{SIG};;junk;SigningMethod:hmac_sha256;Version:3.0;X".encode()
    assert parse_header(raw) == Header("3.0", "hmac_sha256", SIG)


def test_no_trimming() -> None:
    # The value keeps its whitespace: " hmac_sha256" is a different signing method ...
    h = parse_header(f"Version:2.0;SigningMethod: hmac_sha256;Signature:{SIG} ".encode())
    assert h.signing_method == " hmac_sha256"
    assert h.signature == SIG + " "
    # ... and " 2.0" is not a known version.
    with pytest.raises(HeaderError):
        parse_header(f"Version: 2.0;SigningMethod:hmac_sha256;Signature:{SIG}".encode())


@pytest.mark.parametrize(
    "raw",
    [
        # prefixes are exact (case and leading whitespace matter)
        f"version:2.0;SigningMethod:hmac_sha256;Signature:{SIG}",
        f" Version:2.0;SigningMethod:hmac_sha256;Signature:{SIG}",
        f"Version:2.0;signingmethod:hmac_sha256;Signature:{SIG}",
        f"Version:2.0;SigningMethod:hmac_sha256; Signature:{SIG}",
        f"Version:2.0;SigningMethod:hmac_sha256;signature:{SIG}",
        f"Version=2.0;SigningMethod:hmac_sha256;Signature:{SIG}",
    ],
)
def test_prefixes_are_exact(raw: str) -> None:
    with pytest.raises(HeaderError):
        parse_header(raw.encode())


@pytest.mark.parametrize(
    "raw",
    [
        f"SigningMethod:hmac_sha256;Signature:{SIG}",
        f"Version:2.0;Signature:{SIG}",
        "Version:2.0;SigningMethod:hmac_sha256",
        "Version:2.0;SigningMethod:hmac_sha256;Signature:",
        f"Version:2.0;SigningMethod:;Signature:{SIG}",
        "",
        ";;;",
    ],
)
def test_missing_parts_are_invalid(raw: str) -> None:
    with pytest.raises(HeaderError):
        parse_header(raw.encode())


@pytest.mark.parametrize("version", ["1.0", "2", "3", "2.1", "4.0", ""])
def test_unknown_versions_are_invalid(version: str) -> None:
    with pytest.raises(HeaderError):
        parse_header(f"Version:{version};SigningMethod:hmac_sha256;Signature:{SIG}".encode())


def test_size_limit() -> None:
    base = f"Version:2.0;SigningMethod:hmac_sha256;Signature:{SIG};".encode()
    at_limit = base + b"x" * (HEADER_LIMIT - len(base))
    assert len(at_limit) == HEADER_LIMIT
    assert parse_header(at_limit).signature == SIG
    with pytest.raises(HeaderError):
        parse_header(at_limit + b"x")


def test_non_ascii_is_invalid() -> None:
    with pytest.raises(HeaderError):
        parse_header(f"Version:2.0;SigningMethod:hmac_sha256;Signature:{SIG}é".encode())
    with pytest.raises(HeaderError):
        parse_header(b"Version:2.0;SigningMethod:hmac_sha256;Signature:\xff")


def test_format_rejects_bad_input() -> None:
    with pytest.raises(HeaderError):
        format_header("1.0", "hmac_sha256", SIG)
    with pytest.raises(HeaderError):
        format_header("2.0", "hmac_sha256", "a;b")
    with pytest.raises(HeaderError):
        format_header("2.0", "", SIG)
    with pytest.raises(HeaderError):
        format_header("2.0", "hmac_sha256", "x" * HEADER_LIMIT)

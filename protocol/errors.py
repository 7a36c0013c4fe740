"""Typed errors of the protocol library: bad input raises one of these, never anything else."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Base of every error raised for bad protocol input."""


class HeaderError(ProtocolError):
    """The ZeroMQ header frame is missing parts, too long, or has an unknown version."""


class BodyError(ProtocolError):
    """The body is too large or does not decode to an object/map."""


class MessageError(ProtocolError):
    """The decoded body is not a valid message (unknown type, missing or mistyped field)."""


class SignatureError(ProtocolError):
    """A signature is malformed or does not verify."""


class TimestampError(ProtocolError):
    """A timestamp is missing, unparsable, or outside the allowed skew."""


class KeyFormatError(ProtocolError):
    """A key (PEM, Z85, encrypted session key) cannot be loaded or decoded."""


class ChefAuthError(ProtocolError):
    """A Chef-signed HTTP request fails validation.

    `status` and `message` are exactly what the server answers (http-api.md §4, §6.2);
    `www_authenticate` tells whether the 401 carries the `WWW-Authenticate` header.
    """

    def __init__(self, status: int, message: str, www_authenticate: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.www_authenticate = www_authenticate

"""The authenticated principal of a request (http-api.md §4.5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


@dataclass
class Requestor:
    """The authenticated principal: its name and kind (`user` or `client`).

    `public_key` is the key that verified the request's signature (the config endpoint encrypts
    the session key to it), `fingerprint` its `key_fingerprint`; None when not known.
    """

    name: str
    type: str
    public_key: RSAPublicKey | None = field(default=None, repr=False, compare=False)
    fingerprint: str | None = field(default=None, repr=False, compare=False)

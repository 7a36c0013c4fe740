"""HTTP error and request-context types shared by the pipeline and every handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

    from pushjobs.server.store.records import Org

WWW_AUTHENTICATE = 'X-Ops-Sign version="1.0" version="1.1"'


@dataclass
class Requestor:
    """The authenticated principal: its name and kind (`user` or `client`).

    `public_key` is the key that verified the request's signature (the config endpoint encrypts
    the session key to it); None when not known.
    """

    name: str
    type: str
    public_key: Any = field(default=None, repr=False, compare=False)


@dataclass
class RequestContext:
    """Everything a handler needs about a request that passed pipeline steps 1-9."""

    request: Request
    org: Org | None
    params: dict[str, str]
    requestor: Requestor | None
    body: bytes
    media_type: str


class HttpError(Exception):
    """An error answer: status, the spec's text, and the body shape.

    The body is `{"error": [message]}`, or `{"error": message}` with `string_shape=True`
    (413 and job body validation, http-api.md §6.1).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        string_shape: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.string_shape = string_shape
        self.headers = dict(headers) if headers else {}

    def body(self) -> dict[str, Any]:
        """The JSON object sent for this error."""
        return {"error": self.message if self.string_shape else [self.message]}

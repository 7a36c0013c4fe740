"""What a handler gets to know about a request that passed pipeline steps 1-9 (http-api.md §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request

    from pushjobs.server.principals.requestor import Requestor
    from pushjobs.server.store.records import Org


@dataclass
class RequestContext:
    """The request, its route parameters, body and negotiated media type.

    `org` and `requestor` are None only on `/pushy/_status`, which skips authentication; every
    other handler reads them through `authorized()`. `ccpk` is the decoded `ccpk` parameter
    when pipeline step 6 checked it (config and connect with CURVE), else None.
    """

    request: Request
    org: Org | None
    params: dict[str, str]
    requestor: Requestor | None
    body: bytes
    media_type: str
    ccpk: bytes | None = None

    def authorized(self) -> tuple[Org, Requestor]:
        """The organization and the requestor that steps 7 and 8 let through."""
        if self.org is None or self.requestor is None:
            raise RuntimeError("the route skips authentication: no organization or requestor")
        return self.org, self.requestor

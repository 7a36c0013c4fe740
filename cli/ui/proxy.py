"""Forward one dashboard request to the pushjobs server, signed with the operator's key.

Like `kubectl proxy`: the page never sees the key; each request is signed (Chef `X-Ops-*`
headers over the exact path and body sent, http-api.md §4) and the answer comes back with its
status, type and body. Bodies are streamed chunk by chunk, so SSE feeds arrive unbuffered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from pushjobs.cli.client import TIMEOUT, describe_network_error, tls_verify
from pushjobs.cli.settings import Settings
from pushjobs.protocol.version import installed_version

# Request headers the page may pass on; everything else (cookies, the token) stays here.
REQUEST_HEADERS = ("accept", "content-type", "last-event-id")
# Response headers passed back; `Link` carries the next page of `GET jobs`.
RESPONSE_HEADERS = ("content-type", "cache-control", "link", "location", "x-accel-buffering")


@dataclass(frozen=True)
class Answer:
    """An upstream answer: status, headers to pass back and the body as it arrives."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]
    close: Any  # async callable that releases the upstream connection


class Upstream:
    """The signed connection to `settings.server_url`."""

    def __init__(
        self,
        settings: Settings,
        private_key: Any,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.key = private_key
        self.http = httpx.AsyncClient(
            verify=tls_verify(settings),
            timeout=TIMEOUT,
            headers={"User-Agent": f"pushjobs-ui/{installed_version()}"},
            follow_redirects=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def build(
        self, method: str, rel: str, query: str, body: bytes, headers: Mapping[str, str]
    ) -> httpx.Request:
        """The signed request for `<server_url>/pushy/<rel>?<query>` (rel still encoded)."""
        from pushjobs.protocol.chef_auth import sign_request

        url = f"{self.settings.server_url}/pushy/{rel}" + (f"?{query}" if query else "")
        wanted = {k: v for k, v in headers.items() if k.lower() in REQUEST_HEADERS}
        request = self.http.build_request(method, url, content=body, headers=wanted)
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        request.headers.update(
            sign_request(
                method=method,
                path=path,
                body=body,
                user_id=self.settings.user,
                private_key=self.key,
                version=self.settings.sign_version,
            )
        )
        return request

    async def forward(
        self, method: str, rel: str, query: str, body: bytes, headers: Mapping[str, str]
    ) -> Answer:
        """Send the signed request; an unreachable server is a 502 with a readable text."""
        request = self.build(method, rel, query, body, headers)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as e:
            text = f"pushjobs ui: cannot reach {self.settings.server_url}: "
            text += describe_network_error(e)
            return Answer(502, {"content-type": "text/plain; charset=utf-8"}, _once(text), _noop)
        passed = {k: v for k, v in response.headers.items() if k.lower() in RESPONSE_HEADERS}
        return Answer(response.status_code, passed, _chunks(response), response.aclose)


async def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives; a connection that breaks mid-stream just ends it."""
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.HTTPError:
        return


async def _once(text: str) -> AsyncIterator[bytes]:
    yield text.encode()


async def _noop() -> None:
    return None

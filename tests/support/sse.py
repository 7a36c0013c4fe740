"""Server-sent event streams of a test server, read from trio code as its org admin.

`read_sse` reads a whole stream that ends by itself (a finished job's feed); `SseReader` reads
one in the background (a live feed) and lets the test wait for an event or the end. `parse_sse`
is strict about the server's layout: every event is exactly `event:`, `id:`, `data:` lines.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from tests.support.api import org_path, prepare
from tests.support.server import ServerProcess


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Events as {"event", "id", "data"}; keep-alive comments dropped; strict line layout."""
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        assert [line.split(": ", 1)[0] for line in lines] == ["event", "id", "data"], block
        events.append(
            {
                "event": lines[0][len("event: ") :],
                "id": lines[1][len("id: ") :],
                "data": json.loads(lines[2][len("data: ") :]),
            }
        )
    return events


def compact(events: list[dict[str, Any]]) -> list[tuple]:
    """(event, node?, status?) per event, like the spec's stream tables."""
    out = []
    for event in events:
        data = event["data"]
        parts = [event["event"]]
        if "node" in data:
            parts.append(data["node"])
        if "status" in data and event["event"] != "summary":
            parts.append(data["status"])
        out.append(tuple(parts))
    return out


def _stream_get(
    srv: ServerProcess, path: str, headers: dict[str, str] | None
) -> tuple[str, dict[str, str]]:
    """URL and headers of a signed `GET` asking for an event stream (`headers` win)."""
    p = prepare(
        srv.http_url,
        "GET",
        org_path(srv.org, path),
        user=srv.admin_user,
        key=srv.admin_key,
        headers={"Accept": "text/event-stream", **(headers or {})},
    )
    return p.url, p.headers


class SseReader:
    """Reads one SSE response in the background and collects its events."""

    def __init__(self) -> None:
        self.text = ""
        self.events: list[dict[str, Any]] = []
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.ended = trio.Event()
        self._changed = trio.Event()
        self.scope = trio.CancelScope()

    async def run(
        self,
        srv: ServerProcess,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        url, all_headers = _stream_get(srv, path, headers)
        with self.scope:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as client,
                client.stream("GET", url, headers=all_headers) as response,
            ):
                self.status = response.status_code
                self.headers = response.headers
                task_status.started()
                async for chunk in response.aiter_text():
                    self.text += chunk
                    complete = self.text[: self.text.rfind("\n\n") + 2]
                    self.events = parse_sse(complete)
                    self._changed.set()
                    self._changed = trio.Event()
        self.ended.set()
        self._changed.set()

    async def wait_event(self, name: str, timeout: float = 20) -> dict[str, Any]:
        with trio.move_on_after(timeout):
            while True:
                for event in self.events:
                    if event["event"] == name:
                        return event
                if self.ended.is_set():
                    break
                await self._changed.wait()
        raise AssertionError(f"no {name} event; got {self.names()}")

    async def wait_end(self, timeout: float = 20) -> None:
        with trio.move_on_after(timeout):
            await self.ended.wait()
            return
        raise AssertionError(f"stream did not end; events {self.names()}")

    def names(self) -> list[str]:
        return [event["event"] for event in self.events]


async def read_sse(
    srv: ServerProcess, path: str, headers: dict[str, str] | None = None, timeout: float = 20
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """A whole SSE response (the stream must end by itself)."""
    url, all_headers = _stream_get(srv, path, headers)
    with trio.fail_after(timeout):
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url, headers=all_headers)
    return response, parse_sse(response.text)

"""Reading one SSE stream across drops: reopen it with `Last-Event-ID` (http-api.md §7.9, §7.12).

Used by `job start`/`job watch` (the job feed, cli.md §3.5) and `job output --follow` (the live
output, cli.md §7). The caller iterates over the events and stops when it has what it needs; a
dropped stream is reopened after `REOPEN_DELAY`, and `StreamFailed` ends the iteration once
`MAX_REOPEN` reopen attempts in a row brought no event. HTTP errors propagate unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Protocol

import httpx

from pushjobs.cli.client import NetworkError
from pushjobs.cli.sse import SseEvent, SseParser
from pushjobs.protocol.vocabulary import MediaType

log = logging.getLogger("pushjobs.cli")

MAX_REOPEN = 3
REOPEN_DELAY = 1.0


class EventStreamClient(Protocol):
    """What reopening needs of the signed client: a streaming GET."""

    def stream(
        self, url: str, accept: str, headers: dict[str, str] | None = None
    ) -> AbstractContextManager[httpx.Response]: ...


class StreamFailed(Exception):
    """The stream dropped again after `MAX_REOPEN` fruitless reopens; `reason` is the last drop."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotEventStream(Exception):
    """The server answered with another media type (only when one was required)."""

    def __init__(self, content_type: str) -> None:
        super().__init__(content_type)
        self.content_type = content_type


def reopened_events(
    client: EventStreamClient,
    url: str,
    *,
    what: str,
    ended: str,
    resume_from: Callable[[SseEvent], bool] | None = None,
    require_event_stream: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[SseEvent, None, None]:
    """The events of the stream at `url`, reopened after every drop.

    A reopen sends the last event id the parser saw, or, with `resume_from`, the id of the
    last event handed out for which `resume_from` is true (and that has an id). `what` names
    the stream in log lines; `ended` is the reason when the server ends the stream itself.
    """
    parser = SseParser()
    resume: str | None = None
    reopens = 0
    while True:
        last_id = parser.last_event_id if resume_from is None else resume
        headers = {"Last-Event-ID": last_id} if last_id else None
        parser = SseParser(last_id)
        delivered = False
        try:
            with client.stream(url, MediaType.EVENT_STREAM, headers) as response:
                if require_event_stream:
                    ctype = response.headers.get("content-type", "")
                    if ctype.split(";")[0].strip().lower() != MediaType.EVENT_STREAM:
                        raise NotEventStream(ctype)
                for chunk in response.iter_bytes():
                    for ev in parser.feed(chunk):
                        delivered = True
                        yield ev
                        if resume_from is not None and ev.id and resume_from(ev):
                            resume = ev.id
            reason = ended
        except NetworkError as e:
            reason = e.message
        except httpx.HTTPError as e:
            reason = str(e) or type(e).__name__
        if delivered:
            reopens = 0
        if reopens >= MAX_REOPEN:
            raise StreamFailed(reason)
        reopens += 1
        log.debug(
            "%s dropped (%s); reopening (%d/%d) with Last-Event-ID %s",
            what,
            reason,
            reopens,
            MAX_REOPEN,
            parser.last_event_id if resume_from is None else resume,
        )
        sleep(REOPEN_DELAY)

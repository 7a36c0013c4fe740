"""Following a job until it finishes (cli.md §3.5): the SSE job feed, falling back to polling."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from pushjobs.cli.client import SSE, HttpError, NetworkError, SignedClient, segment
from pushjobs.cli.display import Display
from pushjobs.cli.follow import FINAL_JOB_STATUSES, JobProgress
from pushjobs.cli.sse import SseParser

log = logging.getLogger("pushjobs.cli")

MAX_REOPEN = 3
REOPEN_DELAY = 1.0
END_EVENTS = ("job_complete", "summary")


def follow_sse(
    client: SignedClient,
    progress: JobProgress,
    display: Display,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Follow the job feed until `job_complete` (or `summary`).

    Returns False when the caller should poll instead: 404/406 or any other HTTP error on the
    feed, a non-SSE response, or MAX_REOPEN failed reopen attempts in a row.
    """
    url = client.push_url(f"job_status_feed/{segment(progress.job_id)}")
    parser = SseParser()
    reopens = 0
    while True:
        got_events = False
        last_id = parser.last_event_id
        headers = {"Last-Event-ID": last_id} if last_id else None
        parser = SseParser(last_id)
        try:
            with client.stream(url, SSE, headers) as response:
                ctype = response.headers.get("content-type", "")
                if ctype.split(";")[0].strip().lower() != SSE:
                    log.debug("feed answered %r, not an event stream: polling instead", ctype)
                    return False
                for chunk in response.iter_bytes():
                    for ev in parser.feed(chunk):
                        got_events = True
                        display.event(ev)
                        progress.apply_event(ev.event, ev.json())
                        display.update(progress)
                        if ev.event in END_EVENTS:
                            return True
            reason = "the server ended the stream before job_complete"
        except HttpError as e:
            log.debug("feed request failed (%s): polling instead", e.message)
            return False
        except NetworkError as e:
            reason = e.message
        except httpx.HTTPError as e:
            reason = f"stream broken: {str(e) or type(e).__name__}"
        if got_events:
            reopens = 0
        if reopens >= MAX_REOPEN:
            log.debug("feed failed again (%s): polling instead", reason)
            return False
        reopens += 1
        log.debug(
            "feed dropped (%s); reopening (%d/%d) with Last-Event-ID %s",
            reason,
            reopens,
            MAX_REOPEN,
            parser.last_event_id,
        )
        sleep(REOPEN_DELAY)


def poll_job(
    client: SignedClient,
    progress: JobProgress,
    display: Display,
    interval: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """GET the job every `interval` seconds until its status is final; return the final object."""
    rel = f"jobs/{segment(progress.job_id)}"
    while True:
        job = client.get_json(rel)
        progress.apply_job(job)
        display.update(progress)
        if isinstance(job, dict) and job.get("status") in FINAL_JOB_STATUSES:
            return job
        sleep(interval)


def follow_job(
    client: SignedClient,
    progress: JobProgress,
    display: Display,
    *,
    poll: bool,
    poll_interval: float,
) -> dict[str, Any]:
    """Follow until the job is final and return the job object from `GET pushy/jobs/<id>`."""
    try:
        if not poll:
            if follow_sse(client, progress, display):
                # The final object always comes from GET; poll quietly through the short window
                # in which job_complete was sent but the final status is not stored yet.
                return poll_job(client, progress, Display(), min(poll_interval, 0.5))
            log.debug("following job %s by polling every %ss", progress.job_id, poll_interval)
        return poll_job(client, progress, display, poll_interval)
    finally:
        display.close(progress)

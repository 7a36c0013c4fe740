"""Following a job until it finishes (cli.md §3.5): the SSE job feed, falling back to polling."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pushjobs.cli.client import HttpError, SignedClient, segment
from pushjobs.cli.display import Display
from pushjobs.cli.follow import JobProgress
from pushjobs.cli.reopen import NotEventStream, StreamFailed, reopened_events
from pushjobs.protocol.vocabulary import FINAL_JOB_STATUSES

log = logging.getLogger("pushjobs.cli")

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
    events = reopened_events(
        client,
        url,
        what="feed",
        ended="the server ended the stream before job_complete",
        require_event_stream=True,
        sleep=sleep,
    )
    try:
        for ev in events:
            display.event(ev)
            progress.apply_event(ev.event, ev.json())
            display.update(progress)
            if ev.event in END_EVENTS:
                return True
    except NotEventStream as e:
        log.debug("feed answered %r, not an event stream: polling instead", e.content_type)
    except HttpError as e:
        log.debug("feed request failed (%s): polling instead", e.message)
    except StreamFailed as e:
        log.debug("feed failed again (%s): polling instead", e.reason)
    finally:
        events.close()
    return False


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

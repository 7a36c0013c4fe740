"""The route table of http-api.md §2: path, methods, media types, authorization, handler."""

from __future__ import annotations

from pushjobs.protocol.vocabulary import MediaType, OutputChannel
from pushjobs.server.http import feeds, jobs, nodes, output_feed
from pushjobs.server.http.routing import Endpoint, Handler, Route
from pushjobs.server.principals.rules import AccessRule

JSON = (MediaType.JSON,)
EVENT_STREAM = (MediaType.EVENT_STREAM,)


def _org(*rest: str) -> tuple[str, ...]:
    return ("organizations", "{org}", "pushy", *rest)


def _get(authz: AccessRule, handler: Handler) -> dict[str, Endpoint]:
    return {"GET": Endpoint(authz, handler)}


READ, WRITE, CONFIG = AccessRule.READ, AccessRule.WRITE, AccessRule.CONFIG

ROUTES: tuple[Route, ...] = (
    Route(("pushy", "_status"), _get(AccessRule.NONE, nodes.get_status), JSON),
    Route(_org("config", "{node}"), _get(CONFIG, nodes.get_config), JSON),
    Route(_org("connect", "{node}"), _get(CONFIG, nodes.get_config), JSON),
    Route(
        _org("jobs"),
        {"GET": Endpoint(READ, jobs.list_jobs), "POST": Endpoint(WRITE, jobs.create_job)},
        JSON,
    ),
    Route(_org("jobs", "{id}"), _get(READ, jobs.get_job), JSON),
    Route(
        _org("jobs", "{id}", "output", "{node}", "{channel}"),
        _get(READ, jobs.get_output),
        (MediaType.OCTET_STREAM, MediaType.EVENT_STREAM),
        {"channel": frozenset(OutputChannel)},
    ),
    Route(_org("jobs", "{id}", "output"), _get(READ, output_feed.job_output_feed), EVENT_STREAM),
    Route(_org("node_states"), _get(READ, nodes.get_node_states), JSON),
    Route(_org("node_states", "{node}"), _get(READ, nodes.get_node_state), JSON),
    Route(_org("job_status_feed"), _get(READ, feeds.org_feed), EVENT_STREAM),
    Route(_org("jobs_status_feed"), _get(READ, feeds.org_feed), EVENT_STREAM),
    Route(_org("job_status_feed", "{id}"), _get(READ, feeds.job_feed), EVENT_STREAM),
    Route(_org("jobs_status_feed", "{id}"), _get(READ, feeds.job_feed), EVENT_STREAM),
    Route(_org("jobs", "{id}", "abort"), {"POST": Endpoint(WRITE, jobs.abort_job)}, JSON),
    Route(_org("jobs", "{id}", "nodes"), _get(READ, jobs.job_nodes), JSON),
)

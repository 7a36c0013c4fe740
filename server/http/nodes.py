"""Handlers for `/pushy/_status`, the config document (http-api.md §7.1, §7.2) and node states
(§7.7, §7.8)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pushjobs.protocol.keys import encrypt_session_key, key_fingerprint
from pushjobs.protocol.limits import OFFLINE_THRESHOLD, ONLINE_THRESHOLD
from pushjobs.protocol.selector import SelectorError, parse_selector
from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.protocol.vocabulary import Availability, NodePresence
from pushjobs.server.http.ccpk import decode_ccpk
from pushjobs.server.http.errors import HttpError
from pushjobs.server.http.inventory import known_nodes
from pushjobs.server.http.responses import json_response
from pushjobs.server.nodes.revocation import revoke_if_new_owner
from pushjobs.server.nodes.sessions import CurveKeyConflict, SessionOwner
from pushjobs.server.nodes.state import NodePhase
from pushjobs.server.store.records import PRINCIPAL_CLIENT

if TYPE_CHECKING:
    from starlette.datastructures import QueryParams
    from starlette.responses import Response

    from pushjobs.server.http.context import RequestContext
    from pushjobs.server.http.deps import HttpDeps

log = logging.getLogger("pushjobs.server.http.nodes")

PROTOCOL_VERSIONS = ["2.0", "3.0"]


async def get_status(ctx: RequestContext, deps: HttpDeps) -> Response:
    """`GET /pushy/_status`: liveness, incarnation, online node count, live job ids."""
    return json_response(
        {
            "status": "it's alive",
            "incarnation_id": deps.incarnation_id,
            "node_fsm_count": deps.nodes.online_count(),
            "job_processes": list(deps.jobs.live_job_ids()),
        }
    )


def _tcp_addr(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"tcp://{host}:{port}"


def config_document(deps: HttpDeps, org_name: str, node: str) -> dict[str, Any]:
    """The §7.2 document without `encoded_session_key`, keys in the documented order."""
    settings = deps.settings
    timing = settings.timing
    host = settings.server_name
    doc: dict[str, Any] = {
        "type": "config",
        "host": host,
        "push_jobs": {
            "heartbeat": {
                "out_addr": _tcp_addr(host, deps.heartbeat_port),
                "command_addr": _tcp_addr(host, deps.command_port),
                "interval": float(timing.heartbeat_interval),
                "offline_threshold": OFFLINE_THRESHOLD,
                "online_threshold": ONLINE_THRESHOLD,
            }
        },
        "node": node,
        "organization": org_name,
        "public_key": deps.server_public_pem,
    }
    if deps.curve_public is not None:
        doc["curve_public_key"] = deps.curve_public
    doc.update(
        {
            "lifetime": int(timing.config_lifetime),
            "max_message_skew": int(timing.max_message_skew),
            "max_body_size": int(settings.limits.max_body_size),
            "incarnation_id": deps.incarnation_id,
            "protocol_versions": list(PROTOCOL_VERSIONS),
            "max_output_bytes": int(settings.limits.max_output_bytes),
        }
    )
    return doc


async def get_config(ctx: RequestContext, deps: HttpDeps) -> Response:
    """`GET org/config/{node}`: the config document; the node's own client also gets its
    session key, and its `ccpk` is allowed on the command socket for that node only.

    A session key issued to another key of the client is revoked first (a new key gets a new
    session); a `ccpk` bound, unexpired, to another node is refused with 409.
    """
    org, requestor = ctx.authorized()
    node = ctx.params["node"]
    doc = config_document(deps, org.name, node)
    if requestor.type == PRINCIPAL_CLIENT and requestor.name == node:
        public_key = requestor.public_key
        if public_key is None:
            raise RuntimeError("an authenticated requestor has the key that verified it")
        owner = SessionOwner(org.id, requestor.fingerprint or key_fingerprint(public_key))
        revoke_if_new_owner(deps.sessions, deps.nodes, org.name, node, owner)
        if deps.curve_enabled:
            ccpk = ctx.ccpk
            if ccpk is None:
                ccpk = decode_ccpk(ctx.request.scope.get("query_string", b""))
            try:
                deps.sessions.register_curve_key(org.name, node, ccpk)
            except CurveKeyConflict:
                log.warning(
                    "config for node %r/%r refused: its ccpk is registered to another node",
                    org.name,
                    node,
                )
                raise HttpError(409, "ccpk is registered to another node") from None
        session_key = deps.sessions.session_key(org.name, node, owner)
        encoded = {
            "method": "hmac_sha256",
            "key": encrypt_session_key(public_key, session_key),
        }
        # Keep the documented key order: the session key follows curve_public_key.
        items = list(doc.items())
        at = next(i for i, (k, _) in enumerate(items) if k == "lifetime")
        doc = dict([*items[:at], ("encoded_session_key", encoded), *items[at:]])
        log.info("config for node %r/%r: session key issued", org.name, node)
    return json_response(doc)


async def get_node_states(ctx: RequestContext, deps: HttpDeps) -> Response:
    """`GET org/node_states`: every online node of the organization, sorted by name; the
    Extensions `labels=true`, `selector=...` and `all=true` (§7.7) add labels, filter, and list
    offline and never-connected nodes too."""
    org, _ = ctx.authorized()
    query = ctx.request.query_params
    with_labels, every = _flag(query, "labels"), _flag(query, "all")
    selector = None
    if "selector" in query:
        try:
            selector = parse_selector(query["selector"])
        except SelectorError as exc:
            raise HttpError(400, str(exc)) from None
    if not (with_labels or every or selector is not None):
        return json_response(
            [
                {"node_name": name, "availability": _availability(state)}
                for name, state in sorted(deps.nodes.online_nodes(org.name))
            ]
        )
    listing = []
    for node in await known_nodes(deps, org.name, registered=every):
        if node.phase is None and not every:
            continue
        if selector is not None and not selector.matches(node.labels):
            continue
        item: dict[str, Any] = {"node_name": node.name, "availability": _availability(node.phase)}
        if every:
            item["status"] = NodePresence.OFFLINE if node.phase is None else NodePresence.ONLINE
            item["last_seen"] = None if node.last_seen is None else format_rfc1123(node.last_seen)
        if with_labels:
            item["labels"] = node.labels
        listing.append(item)
    return json_response(listing)


def _flag(query: QueryParams, name: str) -> bool:
    """A `true`/`false` query parameter (absent: false); 400 for anything else."""
    value = query.get(name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise HttpError(400, f"invalid {name} parameter '{value}' (expected true or false)")


async def get_node_state(ctx: RequestContext, deps: HttpDeps) -> Response:
    """`GET org/node_states/{node}`: always 200, also for nodes never seen."""
    org, _ = ctx.authorized()
    node = ctx.params["node"]
    state = deps.nodes.state(org.name, node)
    return json_response(
        {
            "node_name": node,
            "status": NodePresence.OFFLINE if state is None else NodePresence.ONLINE,
            "availability": _availability(state),
        }
    )


def _availability(state: str | None) -> Availability:
    return Availability.AVAILABLE if state == NodePhase.IDLE else Availability.UNAVAILABLE

"""Handlers for `/pushy/_status`, the config document (http-api.md §7.1, §7.2) and node states
(§7.7, §7.8)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from starlette.responses import Response

from pushjobs.protocol.errors import KeyFormatError
from pushjobs.protocol.keys import encrypt_session_key, key_fingerprint, z85_decode_key
from pushjobs.server.http.errors import HttpError, RequestContext
from pushjobs.server.http.responses import json_response
from pushjobs.server.nodes.revocation import revoke_if_new_owner
from pushjobs.server.nodes.sessions import CurveKeyConflict, SessionOwner
from pushjobs.server.store.records import PRINCIPAL_CLIENT

if TYPE_CHECKING:
    from pushjobs.server.runtime import ServerRuntime

log = logging.getLogger("pushjobs.server.http.nodes")

PROTOCOL_VERSIONS = ["2.0", "3.0"]
OFFLINE_THRESHOLD = 3
ONLINE_THRESHOLD = 2


def curve_enabled(rt: ServerRuntime) -> bool:
    """True when the command socket uses CURVE (the config document then carries its key)."""
    return rt.curve_public is not None


def query_param(query_string: bytes | str, name: str) -> str | None:
    """The first value of a query parameter, percent-decoded; None when absent.

    Only `%XX` escapes are decoded: a literal `+` stays `+` (it is a Z85 character, and an
    agent that forgot to escape it should still work).
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    for pair in query_string.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == name:
            return unquote(value)
    return None


def decode_ccpk(query_string: bytes | str) -> bytes:
    """Pipeline step 6: the agent's CURVE public key from `ccpk` (400 / 401 when unusable)."""
    text = query_param(query_string, "ccpk")
    if not text:
        raise HttpError(400, "Missing ccpk")
    try:
        return z85_decode_key(text)
    except KeyFormatError:
        raise HttpError(401, "Bad ccpk") from None


async def get_status(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """`GET /pushy/_status`: liveness, incarnation, online node count, live job ids."""
    return json_response(
        {
            "status": "it's alive",
            "incarnation_id": rt.incarnation_id,
            "node_fsm_count": rt.nodes.online_count(),
            "job_processes": list(rt.jobs.live_job_ids()),
        }
    )


def _tcp_addr(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"tcp://{host}:{port}"


def config_document(rt: ServerRuntime, org_name: str, node: str) -> dict[str, Any]:
    """The §7.2 document without `encoded_session_key`, keys in the documented order."""
    settings = rt.settings
    timing = settings.timing
    host = settings.server_name
    heartbeat_port = rt.heartbeat_port or settings.zeromq.heartbeat_port
    command_port = rt.command_port or settings.zeromq.command_port
    doc: dict[str, Any] = {
        "type": "config",
        "host": host,
        "push_jobs": {
            "heartbeat": {
                "out_addr": _tcp_addr(host, heartbeat_port),
                "command_addr": _tcp_addr(host, command_port),
                "interval": float(timing.heartbeat_interval),
                "offline_threshold": OFFLINE_THRESHOLD,
                "online_threshold": ONLINE_THRESHOLD,
            }
        },
        "node": node,
        "organization": org_name,
        "public_key": rt.server_public_pem,
    }
    if rt.curve_public is not None:
        doc["curve_public_key"] = rt.curve_public
    doc.update(
        {
            "lifetime": int(timing.config_lifetime),
            "max_message_skew": int(timing.max_message_skew),
            "max_body_size": int(settings.limits.max_body_size),
            "incarnation_id": rt.incarnation_id,
            "protocol_versions": list(PROTOCOL_VERSIONS),
            "max_output_bytes": int(settings.limits.max_output_bytes),
        }
    )
    return doc


async def get_config(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """`GET org/config/{node}`: the config document; the node's own client also gets its
    session key, and its `ccpk` is allowed on the command socket for that node only.

    A session key issued to another key of the client is revoked first (a new key gets a new
    session); a `ccpk` bound, unexpired, to another node is refused with 409.
    """
    assert ctx.org is not None and ctx.requestor is not None
    org_name = ctx.org.name
    node = ctx.params["node"]
    doc = config_document(rt, org_name, node)
    requestor = ctx.requestor
    if requestor.type == PRINCIPAL_CLIENT and requestor.name == node:
        owner = SessionOwner(ctx.org.id, key_fingerprint(requestor.public_key))
        revoke_if_new_owner(rt, org_name, node, owner)
        if curve_enabled(rt):
            ccpk = decode_ccpk(ctx.request.scope.get("query_string", b""))
            try:
                rt.sessions.register_curve_key(org_name, node, ccpk)
            except CurveKeyConflict:
                log.warning(
                    "config for node %r/%r refused: its ccpk is registered to another node",
                    org_name,
                    node,
                )
                raise HttpError(409, "ccpk is registered to another node") from None
        session_key = rt.sessions.session_key(org_name, node, owner)
        encoded = {
            "method": "hmac_sha256",
            "key": encrypt_session_key(requestor.public_key, session_key),
        }
        # Keep the documented key order: the session key follows curve_public_key.
        items = list(doc.items())
        at = next(i for i, (k, _) in enumerate(items) if k == "lifetime")
        doc = dict([*items[:at], ("encoded_session_key", encoded), *items[at:]])
        log.info("config for node %r/%r: session key issued", org_name, node)
    return json_response(doc)


async def get_node_states(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """`GET org/node_states`: every online node of the organization, sorted by name."""
    assert ctx.org is not None
    return json_response(
        [
            {"node_name": name, "availability": _availability(state)}
            for name, state in sorted(rt.nodes.online_nodes(ctx.org.name))
        ]
    )


async def get_node_state(ctx: RequestContext, rt: ServerRuntime) -> Response:
    """`GET org/node_states/{node}`: always 200, also for nodes never seen."""
    assert ctx.org is not None
    node = ctx.params["node"]
    state = rt.nodes.state(ctx.org.name, node)
    return json_response(
        {
            "node_name": node,
            "status": "offline" if state is None else "online",
            "availability": _availability(state),
        }
    )


def _availability(state: str | None) -> str:
    return "available" if state == "idle" else "unavailable"

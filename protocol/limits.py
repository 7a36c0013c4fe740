"""The fixed limits of the protocol: not settable, the same for server, agent and CLI.

The settable ones (`max_body_size`, `max_output_bytes`, timings) live in the server settings
(cli.md §12) and reach agents through the config document (http-api.md §7.2).
"""

from __future__ import annotations

# ---- HTTP API -------------------------------------------------------------------------

HTTP_BODY_LIMIT = 1_000_000  # largest request body, bytes (http-api.md §3 step 5, cli.md §12)
HTTP_MAX_SKEW = 900  # Chef signature clock skew, seconds, exclusive (http-api.md §4.2, cli.md §12)
JOB_FILE_LIMIT = 100_000  # decoded job `file`, bytes (http-api.md §7.4, agent.md §9, cli.md §3.1)
JOB_INT_MAX = 2_147_483_647  # largest `quorum` / `run_timeout` (http-api.md §7.4 "Integer")
OFFLINE_THRESHOLD = 3  # config document `offline_threshold` (http-api.md §7.2, cli.md §12)
ONLINE_THRESHOLD = 2  # config document `online_threshold` (http-api.md §7.2, cli.md §12)

# ---- ZeroMQ ---------------------------------------------------------------------------

HEADER_LIMIT = 2048  # header frame, bytes (wire-protocol.md §9)
JOB_ID_LIMIT = 64  # `job_id`, bytes; longer is an unknown job (wire-protocol.md §9)
OUTPUT_CHUNK_LIMIT = 32768  # `data` of one `output` message, bytes (wire-protocol.md §9, §17)
AGENT_BODY_LIMIT = 2 * 1024 * 1024  # body the agent accepts, bytes (wire-protocol.md §9, §18)
AGENT_SUB_MESSAGE_LIMIT = 64 * 1024  # agent SUB socket ZMQ_MAXMSGSIZE (wire-protocol.md §2)
AGENT_DEALER_MESSAGE_LIMIT = AGENT_BODY_LIMIT + HEADER_LIMIT  # DEALER ZMQ_MAXMSGSIZE (§2, §9)
SUBSCRIBER_FRAME_LIMIT = 1024  # heartbeat-publisher ZMTP frame, bytes (wire-protocol.md §2)
SUBSCRIBER_CONNECTIONS_LIMIT = 100_000  # heartbeat-publisher connections (wire-protocol.md §2)

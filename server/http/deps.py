"""What the HTTP layer needs of the rest of the server: one frozen `HttpDeps`, built by the
composition root after the broker has bound, and the narrow Protocols of its collaborators."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import trio

    from pushjobs.server.config import Settings
    from pushjobs.server.jobs.events import JobEventLog, OrgFeedLog
    from pushjobs.server.jobs.live import OutputArrival, OutputEnd
    from pushjobs.server.jobs.output import NodeOutput
    from pushjobs.server.nodes.sessions import SessionOwner
    from pushjobs.server.principals.requestor import Requestor
    from pushjobs.server.principals.rules import PrincipalBackend
    from pushjobs.server.store.interfaces import JobFilters
    from pushjobs.server.store.records import (
        InventoryNode,
        Job,
        JobNode,
        JobSpec,
        NodeProgress,
        Org,
        OutputRecord,
        OutputTotals,
    )


# ---- the store ---------------------------------------------------------------------------


class JobRecords(Protocol):
    """What the job handlers read of the store: jobs, node rows and output records."""

    async def get_job(self, org_name: str, job_id: str) -> Job | None: ...
    async def get_job_nodes(self, job_id: str) -> list[JobNode]: ...
    async def list_jobs(
        self,
        org_name: str,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        *,
        filters: JobFilters | None = None,
    ) -> list[Job]: ...
    async def get_output(self, job_id: str, node_name: str) -> OutputRecord | None: ...
    async def get_output_totals(self, job_id: str) -> dict[str, OutputTotals]: ...


# ---- sessions and nodes (config and node-state handlers) ---------------------------------


class ConfigSessions(Protocol):
    """What the config handler needs of the session keys (http-api.md §7.2): issuing the
    session key and allowing the `ccpk`; `owner` and `revoke` for revoking a session issued
    to another client key (`nodes.revocation.revoke_if_new_owner`)."""

    def owner(self, org: str, node: str) -> SessionOwner | None: ...
    def revoke(self, org: str, node: str) -> bool: ...
    def register_curve_key(
        self, org: str, node: str, public_key: bytes, now: float | None = None
    ) -> None: ...
    def session_key(self, org: str, node: str, owner: SessionOwner | None = None) -> bytes: ...


class NodeStates(Protocol):
    """What the status, node-state and config handlers need of the node registry (`end`: a
    revoked session's node state ends)."""

    def online_count(self) -> int: ...
    def online_nodes(self, org: str) -> list[tuple[str, str]]: ...
    def state(self, org: str, node: str) -> str | None: ...
    def end(self, org: str, node: str, reason: str) -> bool: ...
    def labels(self, org: str) -> dict[str, dict[str, str]]: ...


class NodeInventory(Protocol):
    """Nodes that ever connected with their stored labels, and the registered clients
    (`node_states?labels|selector|all`, `POST jobs` with a selector, http-api.md §7.7)."""

    async def node_inventory(self, org_name: str) -> list[InventoryNode]: ...
    async def list_clients(self, org_name: str) -> list[str]: ...


# ---- the job engine ----------------------------------------------------------------------


class Notifier(Protocol):
    """A re-armed event: `event` is set at the next change (then replaced)."""

    @property
    def event(self) -> trio.Event: ...


class JobStateView(Protocol):
    """The state machine of a live job, as the handlers read it."""

    @property
    def nodes(self) -> Mapping[str, NodeProgress]: ...
    @property
    def finished(self) -> bool: ...
    @property
    def status(self) -> str: ...
    def nodes_by_status(self) -> dict[str, list[str]]: ...


class LiveJobView(Protocol):
    """A job in memory: its row, state, event log and change notifier."""

    @property
    def job(self) -> Job: ...
    @property
    def state(self) -> JobStateView: ...
    @property
    def log(self) -> JobEventLog: ...
    @property
    def changed(self) -> Notifier: ...
    @property
    def output_log(self) -> Sequence[OutputArrival | OutputEnd]: ...
    @property
    def output_changed(self) -> Notifier: ...


class OutputSlotView(Protocol):
    """The live output of (job, node): its record once one exists."""

    @property
    def record(self) -> NodeOutput | None: ...
    @property
    def changed(self) -> Notifier: ...
    @property
    def done(self) -> bool: ...


class OrgFeedView(Protocol):
    """One organization's feed: its retained events and change notifier."""

    @property
    def log(self) -> OrgFeedLog: ...
    @property
    def changed(self) -> Notifier: ...


class SseStamps(Protocol):
    """The clock dating SSE events: (epoch seconds, the wire timestamp)."""

    def stamp(self) -> tuple[float, str]: ...


class JobEngine(Protocol):
    """What the job handlers and feeds need of the job manager."""

    @property
    def keep_alive_time(self) -> float: ...
    @property
    def wait_complete_time(self) -> float: ...
    @property
    def sse(self) -> SseStamps: ...
    @property
    def output_activity(self) -> Notifier: ...

    def live_job_ids(self) -> Iterable[str]: ...
    def live_job(self, org: str, job_id: str) -> LiveJobView | None: ...
    def output_slot(self, job_id: str, node: str) -> OutputSlotView | None: ...
    def org_feed(self, org: str) -> OrgFeedView: ...
    async def start_job(self, org: Org, requestor: Requestor, spec: JobSpec) -> str: ...
    async def abort_job(self, org: Org, job_id: str, requestor: Requestor) -> LiveJobView: ...


class StoredEvents(Protocol):
    """A cluster's stored job events and the announcement of stored output (jobs coordinated
    by another server)."""

    @property
    def events_changed(self) -> Notifier: ...
    @property
    def output_changed(self) -> Notifier: ...
    def is_alive(self, server_id: str) -> bool: ...
    async def events_after(self, job_id: str, seq: int) -> list[tuple[int, str, bytes]]: ...


class AbortRelay(Protocol):
    """A cluster passing an abort on to the server that coordinates the job."""

    async def relay_abort(self, coordinator: str, org: str, job_id: str, by: Requestor) -> None: ...


# ---- the dependencies --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HttpDeps:
    """Everything the pipeline and the handlers use; the ports are the bound ones."""

    settings: Settings
    store: JobRecords
    principals: PrincipalBackend
    sessions: ConfigSessions
    nodes: NodeStates
    jobs: JobEngine
    incarnation_id: str
    server_public_pem: str
    curve_public: str | None  # the command socket's CURVE key; None with CURVE disabled
    heartbeat_port: int
    command_port: int
    stored_events: StoredEvents | None = None  # None: one server (no job runs elsewhere)
    inventory: NodeInventory | None = None  # None: nothing stored (labels of online nodes only)
    abort_relay: AbortRelay | None = None
    # `principals` without its cache: a refused request is checked again against it, so what
    # an operator grants applies at once (None: `principals` has no cache).
    fresh_principals: PrincipalBackend | None = None

    @property
    def curve_enabled(self) -> bool:
        """True when the command socket uses CURVE (the config document then carries its key)."""
        return self.curve_public is not None

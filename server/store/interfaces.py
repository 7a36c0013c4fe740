"""The store's seams: its errors, the synchronous interfaces split by use, and the async facade.

The store is synchronous and backend-neutral (SQLite or PostgreSQL, `sql.py`), described by
three Protocols, one per kind of consumer:

- `JobStore`: jobs, their node rows and output records, crash recovery and pruning (the job
  manager, the job handlers, `job prune`);
- `PrincipalStore`: what authentication reads (organizations, principals, groups, client key
  changes);
- `AccountStore`: the operator commands' side (organizations, users, clients, groups).

`Store` is all three plus the lifecycle; `SqliteStore` and `PostgresStore` implement it. The
server never calls it on the event loop: `AsyncStore` runs each call in a worker thread through
`trio.to_thread.run_sync`, one call at a time (a `CapacityLimiter(1)` per store serialises
them, which is also what one writer connection needs). `AsyncJobStore` and
`AsyncPrincipalStore` are its two faces, for typing the server's parts against.

Management methods raise `NotFoundError`, `AlreadyExistsError` or `InvalidOperationError`
with a message naming the object (`organization 'acme' already exists`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    import trio

    from pushjobs.server.store.records import (
        Client,
        Group,
        InventoryNode,
        InventoryUpdate,
        Job,
        JobFilters,
        JobNode,
        Org,
        OutputDelta,
        OutputRecord,
        OutputTotals,
        Principal,
        User,
    )

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreError(Exception):
    """A store operation failed; the message is meant for the operator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(StoreError):
    """The named object does not exist."""


class AlreadyExistsError(StoreError):
    """An object with that name exists already."""


class InvalidOperationError(StoreError):
    """The operation is not allowed (e.g. deleting `admins`, adding a non-member)."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached (PostgreSQL down or unreachable); retrying may work."""


class SchemaError(StoreError):
    """The database was written by a newer pushjobs (unknown schema version)."""


# ---- the synchronous interfaces ---------------------------------------------------------
# Times are float epoch seconds (UTC), stored at second precision.


class JobStore(Protocol):
    """Jobs, their node rows and output records; crash recovery and pruning."""

    def create_job(self, job: Job, node_names: Sequence[str]) -> None:
        """Store the job and one `new` row per node, in one transaction."""
        ...

    def set_job_status(self, job_id: str, status: str, updated_at: float) -> None:
        """Write the job's status and `updated_at`."""
        ...

    def set_job_aborted_by(self, job_id: str, name: str) -> None:
        """Record the principal that aborted the job through the API."""
        ...

    def save_job_nodes(self, nodes: Sequence[JobNode]) -> None:
        """Upsert node rows in one transaction."""
        ...

    def get_job(self, org_name: str, job_id: str) -> Job | None:
        """The job if it exists in that org."""
        ...

    def get_job_nodes(self, job_id: str) -> list[JobNode]:
        """The job's node rows, sorted by node name."""
        ...

    def list_jobs(
        self,
        org_name: str,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        *,
        filters: JobFilters | None = None,
    ) -> list[Job]:
        """Jobs of the org with one of `statuses` (when given) matching `filters`, newest first
        (`created_at` desc, then `id` desc); `limit`/`offset` page through them."""
        ...

    def save_outputs(self, records: Sequence[OutputRecord]) -> None:
        """Upsert whole output records (bytes replaced) in one transaction."""
        ...

    def append_outputs(self, deltas: Sequence[OutputDelta]) -> None:
        """Write what output records gained (see `OutputDelta`) in one transaction.

        Creates missing records; a delta with `closed` set also finishes its record.
        """
        ...

    def get_output(self, job_id: str, node_name: str) -> OutputRecord | None:
        """The output record of (job, node) with every stored byte (also while open), or None."""
        ...

    def get_output_totals(self, job_id: str) -> dict[str, OutputTotals]:
        """The counters of the job's output records by node name, without their bytes."""
        ...

    def mark_interrupted_crashed(self, now: float, coordinator: str | None = None) -> int:
        """Start-up rule (lifecycle.md §9): unfinished jobs (of `coordinator` only, when given:
        a cluster) become `crashed`; returns how many."""
        ...

    def prune_jobs(self, older_than: float, org_name: str | None = None) -> int:
        """Delete finished jobs created before the epoch time `older_than`; returns the count."""
        ...

    def prune_jobs_batch(self, older_than: float, limit: int) -> int:
        """Delete up to `limit` of the oldest finished jobs created before `older_than` (with
        their nodes, events and output) in one transaction; returns how many. Rows another
        transaction is deleting are skipped (PostgreSQL), so concurrent callers are harmless."""
        ...

    def prune_outputs_batch(self, older_than: float, limit: int) -> int:
        """Delete the captured output of up to `limit` of the oldest finished jobs created
        before `older_than` that still have some, in one transaction (the jobs and their node
        rows stay); returns how many jobs lost their output."""
        ...


class PrincipalStore(Protocol):
    """What authentication reads: organizations, principals, groups, client key changes."""

    def get_org(self, name: str) -> Org | None:
        """The organization, or None."""
        ...

    def principals(self, org_name: str, name: str) -> list[Principal]:
        """The user named `name` (global; `org_member` = associated) and/or the org's client
        (http-api.md §9)."""
        ...

    def get_group(self, org_name: str, name: str) -> Group | None:
        """The group's direct members by kind, or None."""
        ...

    def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]:
        """(cursor, [(org id, client name)]) of key changes and deletions recorded after the
        cursor `after`; with None only the current cursor (a baseline) and no rows."""
        ...

    def prune_client_key_changes(self, before: float) -> int:
        """Forget key changes recorded before the epoch time `before`; returns the count."""
        ...


class AccountStore(Protocol):
    """The operator's side: organizations, users, clients and groups (cli.md §13)."""

    # -- organizations -----------------------------------------------------
    def create_org(self, name: str, full_name: str = "", now: float | None = None) -> Org:
        """Create an organization with its empty `admins` group."""
        ...

    def get_org(self, name: str) -> Org | None:
        """The organization, or None."""
        ...

    def list_orgs(self) -> list[Org]:
        """All organizations, sorted by name."""
        ...

    def delete_org(self, name: str) -> None:
        """Delete the org with its clients, groups, jobs, output and user associations."""
        ...

    def add_org_user(self, org_name: str, user_name: str, admin: bool = False) -> bool:
        """Associate a user (and add it to `admins` when `admin`); False when nothing changed."""
        ...

    def remove_org_user(self, org_name: str, user_name: str) -> None:
        """Dissociate a user and remove it from every group of the org."""
        ...

    def count_clients(self, org_name: str) -> int:
        """Number of clients of the org."""
        ...

    # -- users -------------------------------------------------------------
    def create_user(
        self, name: str, public_key: str, display_name: str = "", now: float | None = None
    ) -> User:
        """Create a global user."""
        ...

    def get_user(self, name: str) -> User | None:
        """The user, or None."""
        ...

    def list_users(self, org_name: str | None = None) -> list[User]:
        """All users, or the users associated with `org_name`, sorted by name."""
        ...

    def user_orgs(self, name: str) -> list[str]:
        """Names of the organizations the user is associated with, sorted."""
        ...

    def set_user_key(self, name: str, public_key: str) -> None:
        """Replace the user's public key."""
        ...

    def delete_user(self, name: str) -> None:
        """Delete the user with all its associations and memberships."""
        ...

    # -- clients -----------------------------------------------------------
    def create_client(
        self,
        org_name: str,
        name: str,
        public_key: str,
        admin: bool = False,
        now: float | None = None,
    ) -> Client:
        """Create a client (added to `admins` when `admin`)."""
        ...

    def create_clients(
        self,
        org_name: str,
        clients: Sequence[tuple[str, str]],
        skip_existing: bool = False,
        now: float | None = None,
    ) -> int:
        """Create many `(name, public_key)` clients in one transaction; returns the count created.

        An existing name fails the whole batch unless `skip_existing`.
        """
        ...

    def get_client(self, org_name: str, name: str) -> Client | None:
        """The client, or None."""
        ...

    def client_principals(self, org_name: str, limit: int) -> list[tuple[str, list[Principal]]]:
        """For at most `limit` clients of the org (by name), what `principals` answers for
        that name; one read, to fill the principal cache at start-up."""
        ...

    def list_clients(self, org_name: str) -> list[str]:
        """Client names of the org, sorted."""
        ...

    def set_client_key(self, org_name: str, name: str, public_key: str) -> None:
        """Replace the client's public key."""
        ...

    def delete_client(self, org_name: str, name: str) -> None:
        """Delete the client and its memberships."""
        ...

    # -- groups ------------------------------------------------------------
    def create_group(self, org_name: str, name: str) -> None:
        """Create an empty group."""
        ...

    def get_group(self, org_name: str, name: str) -> Group | None:
        """The group's direct members by kind, or None."""
        ...

    def list_groups(self, org_name: str) -> list[str]:
        """Group names of the org, sorted."""
        ...

    def add_group_members(
        self,
        org_name: str,
        group: str,
        users: Iterable[str] = (),
        clients: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> None:
        """Add members (users must be associated with the org; all must exist)."""
        ...

    def remove_group_members(
        self,
        org_name: str,
        group: str,
        users: Iterable[str] = (),
        clients: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> None:
        """Remove members (each must be a direct member)."""
        ...

    def delete_group(self, org_name: str, name: str) -> None:
        """Delete a group (not `admins`) and its memberships in other groups."""
        ...


class InventoryStore(Protocol):
    """Nodes that ever connected and their last labels (http-api.md §7.7)."""

    def record_inventory(self, updates: Sequence[InventoryUpdate]) -> None:
        """Upsert nodes seen / labels reported; labels stay when an update has none."""
        ...

    def node_inventory(self, org_name: str) -> list[InventoryNode]:
        """Every node of the organization that ever connected, sorted by name."""
        ...


class Store(JobStore, PrincipalStore, AccountStore, InventoryStore, Protocol):
    """The whole store: the three interfaces and its lifecycle."""

    def close(self) -> None:
        """Release the connection."""
        ...

    def schema_version(self) -> int:
        """The applied schema version."""
        ...


# ---- the async faces ---------------------------------------------------------------------


class AsyncJobStore(Protocol):
    """The job side of `AsyncStore`: what the job manager and the job handlers call."""

    async def create_job(self, job: Job, node_names: Sequence[str]) -> None: ...
    async def set_job_aborted_by(self, job_id: str, name: str) -> None: ...
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
    async def save_outputs(self, records: Sequence[OutputRecord]) -> None: ...
    async def write_batch(
        self,
        job_statuses: Mapping[str, tuple[str, float]],
        nodes: Sequence[JobNode],
        deltas: Sequence[OutputDelta],
    ) -> None: ...


class AsyncRetentionStore(Protocol):
    """What the background pruning (`server/retention/`) calls."""

    async def prune_jobs_batch(self, older_than: float, limit: int) -> int: ...
    async def prune_outputs_batch(self, older_than: float, limit: int) -> int: ...


class AsyncPrincipalStore(Protocol):
    """The principal side of `AsyncStore`: what the principal backends call (the Chef
    backend also mirrors organizations with `create_org`)."""

    async def get_org(self, name: str) -> Org | None: ...
    async def create_org(self, name: str, full_name: str = "", now: float | None = None) -> Org: ...
    async def principals(self, org_name: str, name: str) -> list[Principal]: ...
    async def client_principals(
        self, org_name: str, limit: int
    ) -> list[tuple[str, list[Principal]]]: ...
    async def list_orgs(self) -> list[Org]: ...
    async def get_group(self, org_name: str, name: str) -> Group | None: ...
    async def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]: ...
    async def prune_client_key_changes(self, before: float) -> int: ...


class StoreTimer(Protocol):
    """Told how long each store operation took (the metrics); `op` is the method's name."""

    def observe(self, op: str, seconds: float) -> None: ...


class AsyncStore:
    """A `Store` behind coroutines: each call runs in the store's worker thread, one at a time.

    `await astore.get_job(org, job_id)` runs `store.get_job(org, job_id)` off the event loop.
    Implements `AsyncJobStore` and `AsyncPrincipalStore`.
    """

    def __init__(self, store: Store, timer: StoreTimer | None = None) -> None:
        # trio is imported here, not at module level: the operator CLI imports this module
        # for the error classes and should start fast.
        import trio

        self._trio = trio
        self.store = store
        self._timer = timer
        self._limiter: trio.CapacityLimiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run `fn(*args, **kwargs)` (normally store calls) in the worker thread."""
        call = functools.partial(fn, *args, **kwargs)
        timer = self._timer
        if timer is None:
            return await self._trio.to_thread.run_sync(call, limiter=self._limiter)
        started = time.perf_counter()
        try:
            return await self._trio.to_thread.run_sync(call, limiter=self._limiter)
        finally:
            op = getattr(fn, "__name__", "other").lstrip("_")
            timer.observe(op, time.perf_counter() - started)

    async def aclose(self) -> None:
        """Close the underlying store (in the worker thread)."""
        await self.run(self.store.close)

    # -- jobs (AsyncJobStore) ----------------------------------------------------
    async def create_job(self, job: Job, node_names: Sequence[str]) -> None:
        await self.run(self.store.create_job, job, node_names)

    async def set_job_aborted_by(self, job_id: str, name: str) -> None:
        await self.run(self.store.set_job_aborted_by, job_id, name)

    async def get_job(self, org_name: str, job_id: str) -> Job | None:
        return await self.run(self.store.get_job, org_name, job_id)

    async def get_job_nodes(self, job_id: str) -> list[JobNode]:
        return await self.run(self.store.get_job_nodes, job_id)

    async def list_jobs(
        self,
        org_name: str,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        *,
        filters: JobFilters | None = None,
    ) -> list[Job]:
        return await self.run(
            self.store.list_jobs, org_name, statuses, limit, offset, filters=filters
        )

    async def get_output(self, job_id: str, node_name: str) -> OutputRecord | None:
        return await self.run(self.store.get_output, job_id, node_name)

    async def get_output_totals(self, job_id: str) -> dict[str, OutputTotals]:
        return await self.run(self.store.get_output_totals, job_id)

    async def save_outputs(self, records: Sequence[OutputRecord]) -> None:
        await self.run(self.store.save_outputs, records)

    async def write_batch(
        self,
        job_statuses: Mapping[str, tuple[str, float]],
        nodes: Sequence[JobNode],
        deltas: Sequence[OutputDelta],
    ) -> None:
        """Job statuses (job id → (status, updated_at)), node rows and output deltas, written
        in one hop to the worker thread (each kind in its own transaction)."""
        await self.run(_write_batch, self.store, job_statuses, nodes, deltas)

    # -- retention (AsyncRetentionStore) -------------------------------------------
    async def prune_jobs_batch(self, older_than: float, limit: int) -> int:
        return await self.run(self.store.prune_jobs_batch, older_than, limit)

    async def prune_outputs_batch(self, older_than: float, limit: int) -> int:
        return await self.run(self.store.prune_outputs_batch, older_than, limit)

    # -- inventory (AsyncInventory) ----------------------------------------------
    async def record_inventory(self, updates: Sequence[InventoryUpdate]) -> None:
        await self.run(self.store.record_inventory, updates)

    async def node_inventory(self, org_name: str) -> list[InventoryNode]:
        return await self.run(self.store.node_inventory, org_name)

    async def list_clients(self, org_name: str) -> list[str]:
        """The organization's client names (none for an unknown organization)."""
        try:
            return await self.run(self.store.list_clients, org_name)
        except NotFoundError:
            return []

    # -- principals (AsyncPrincipalStore) -----------------------------------------
    async def get_org(self, name: str) -> Org | None:
        return await self.run(self.store.get_org, name)

    async def create_org(self, name: str, full_name: str = "", now: float | None = None) -> Org:
        return await self.run(self.store.create_org, name, full_name, now)

    async def principals(self, org_name: str, name: str) -> list[Principal]:
        return await self.run(self.store.principals, org_name, name)

    async def client_principals(
        self, org_name: str, limit: int
    ) -> list[tuple[str, list[Principal]]]:
        return await self.run(self.store.client_principals, org_name, limit)

    async def list_orgs(self) -> list[Org]:
        return await self.run(self.store.list_orgs)

    async def get_group(self, org_name: str, name: str) -> Group | None:
        return await self.run(self.store.get_group, org_name, name)

    async def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]:
        return await self.run(self.store.client_key_changes, after)

    async def prune_client_key_changes(self, before: float) -> int:
        return await self.run(self.store.prune_client_key_changes, before)


def _write_batch(
    store: JobStore,
    job_statuses: Mapping[str, tuple[str, float]],
    nodes: Sequence[JobNode],
    deltas: Sequence[OutputDelta],
) -> None:
    """`AsyncStore.write_batch` in the worker thread."""
    for job_id, (status, updated_at) in job_statuses.items():
        store.set_job_status(job_id, status, updated_at)
    if nodes:
        store.save_job_nodes(nodes)
    if deltas:
        store.append_outputs(deltas)


if TYPE_CHECKING:

    def _implements(
        store: AsyncStore,
    ) -> tuple[AsyncJobStore, AsyncPrincipalStore, AsyncRetentionStore]:
        """Checked by mypy only: `AsyncStore` is every async face."""
        return store, store, store

"""The store interface (principals, groups, jobs, job nodes, output) and its async facade.

`Store` is synchronous and backend-neutral (SQLite now, PostgreSQL later). The server never
calls it on the event loop: `AsyncStore` runs every method in a worker thread through
`trio.to_thread.run_sync`, one call at a time (a `CapacityLimiter(1)` serialises them, which
is also what one writer connection needs).

Management methods raise `NotFoundError`, `AlreadyExistsError` or `InvalidOperationError`
with a message naming the object (`organization 'acme' already exists`).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pushjobs.server.store.records import (
    Client,
    Group,
    Job,
    JobNode,
    Org,
    OutputDelta,
    OutputRecord,
    OutputTotals,
    Principal,
    User,
)

if TYPE_CHECKING:
    import trio


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


class SchemaError(StoreError):
    """The database was written by a newer pushjobs (unknown schema version)."""


class Store(abc.ABC):
    """Synchronous storage interface. Times are float epoch seconds (UTC), stored as seconds."""

    # -- lifecycle ---------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The applied schema version."""

    # -- organizations -----------------------------------------------------
    @abc.abstractmethod
    def create_org(self, name: str, full_name: str = "", now: float | None = None) -> Org:
        """Create an organization with its empty `admins` group."""

    @abc.abstractmethod
    def get_org(self, name: str) -> Org | None:
        """The organization, or None."""

    @abc.abstractmethod
    def list_orgs(self) -> list[Org]:
        """All organizations, sorted by name."""

    @abc.abstractmethod
    def delete_org(self, name: str) -> None:
        """Delete the org with its clients, groups, jobs, output and user associations."""

    @abc.abstractmethod
    def add_org_user(self, org_name: str, user_name: str, admin: bool = False) -> bool:
        """Associate a user (and add it to `admins` when `admin`); False when nothing changed."""

    @abc.abstractmethod
    def remove_org_user(self, org_name: str, user_name: str) -> None:
        """Dissociate a user and remove it from every group of the org."""

    @abc.abstractmethod
    def count_clients(self, org_name: str) -> int:
        """Number of clients of the org."""

    # -- users -------------------------------------------------------------
    @abc.abstractmethod
    def create_user(
        self, name: str, public_key: str, display_name: str = "", now: float | None = None
    ) -> User:
        """Create a global user."""

    @abc.abstractmethod
    def get_user(self, name: str) -> User | None:
        """The user, or None."""

    @abc.abstractmethod
    def list_users(self, org_name: str | None = None) -> list[User]:
        """All users, or the users associated with `org_name`, sorted by name."""

    @abc.abstractmethod
    def user_orgs(self, name: str) -> list[str]:
        """Names of the organizations the user is associated with, sorted."""

    @abc.abstractmethod
    def set_user_key(self, name: str, public_key: str) -> None:
        """Replace the user's public key."""

    @abc.abstractmethod
    def delete_user(self, name: str) -> None:
        """Delete the user with all its associations and memberships."""

    # -- clients -----------------------------------------------------------
    @abc.abstractmethod
    def create_client(
        self,
        org_name: str,
        name: str,
        public_key: str,
        admin: bool = False,
        now: float | None = None,
    ) -> Client:
        """Create a client (added to `admins` when `admin`)."""

    @abc.abstractmethod
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

    @abc.abstractmethod
    def get_client(self, org_name: str, name: str) -> Client | None:
        """The client, or None."""

    @abc.abstractmethod
    def list_clients(self, org_name: str) -> list[str]:
        """Client names of the org, sorted."""

    @abc.abstractmethod
    def set_client_key(self, org_name: str, name: str, public_key: str) -> None:
        """Replace the client's public key."""

    @abc.abstractmethod
    def delete_client(self, org_name: str, name: str) -> None:
        """Delete the client and its memberships."""

    @abc.abstractmethod
    def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]:
        """(cursor, [(org id, client name)]) of key changes and deletions recorded after the
        cursor `after`; with None only the current cursor (a baseline) and no rows."""

    @abc.abstractmethod
    def prune_client_key_changes(self, before: float) -> int:
        """Forget key changes recorded before the epoch time `before`; returns the count."""

    # -- principals and groups (http-api.md §9) -----------------------------
    @abc.abstractmethod
    def principals(self, org_name: str, name: str) -> list[Principal]:
        """The user named `name` (global; `org_member` = associated) and/or the org's client."""

    @abc.abstractmethod
    def create_group(self, org_name: str, name: str) -> None:
        """Create an empty group."""

    @abc.abstractmethod
    def get_group(self, org_name: str, name: str) -> Group | None:
        """The group's direct members by kind, or None."""

    @abc.abstractmethod
    def list_groups(self, org_name: str) -> list[str]:
        """Group names of the org, sorted."""

    @abc.abstractmethod
    def add_group_members(
        self,
        org_name: str,
        group: str,
        users: Iterable[str] = (),
        clients: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> None:
        """Add members (users must be associated with the org; all must exist)."""

    @abc.abstractmethod
    def remove_group_members(
        self,
        org_name: str,
        group: str,
        users: Iterable[str] = (),
        clients: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> None:
        """Remove members (each must be a direct member)."""

    @abc.abstractmethod
    def delete_group(self, org_name: str, name: str) -> None:
        """Delete a group (not `admins`) and its memberships in other groups."""

    # -- jobs --------------------------------------------------------------
    @abc.abstractmethod
    def create_job(self, job: Job, node_names: Sequence[str]) -> None:
        """Store the job and one `new` row per node, in one transaction."""

    @abc.abstractmethod
    def set_job_status(self, job_id: str, status: str, updated_at: float) -> None:
        """Write the job's status and `updated_at`."""

    @abc.abstractmethod
    def save_job_nodes(self, nodes: Sequence[JobNode]) -> None:
        """Upsert node rows in one transaction."""

    @abc.abstractmethod
    def get_job(self, org_name: str, job_id: str) -> Job | None:
        """The job if it exists in that org."""

    @abc.abstractmethod
    def get_job_nodes(self, job_id: str) -> list[JobNode]:
        """The job's node rows, sorted by node name."""

    @abc.abstractmethod
    def list_jobs(
        self,
        org_name: str,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs of the org, newest first (`created_at` desc, then `id` desc)."""

    @abc.abstractmethod
    def save_outputs(self, records: Sequence[OutputRecord]) -> None:
        """Upsert whole output records (bytes replaced) in one transaction."""

    @abc.abstractmethod
    def append_outputs(self, deltas: Sequence[OutputDelta]) -> None:
        """Write what output records gained (see `OutputDelta`) in one transaction.

        Creates missing records; a delta with `closed` set also finishes its record.
        """

    @abc.abstractmethod
    def get_output(self, job_id: str, node_name: str) -> OutputRecord | None:
        """The output record of (job, node) with every stored byte (also while open), or None."""

    @abc.abstractmethod
    def get_output_totals(self, job_id: str) -> dict[str, OutputTotals]:
        """The counters of the job's output records by node name, without their bytes."""

    @abc.abstractmethod
    def mark_interrupted_crashed(self, now: float) -> int:
        """Start-up rule (lifecycle.md §9); returns the number of jobs marked crashed."""

    @abc.abstractmethod
    def prune_jobs(self, older_than: float, org_name: str | None = None) -> int:
        """Delete finished jobs created before the epoch time `older_than`; returns the count."""


class AsyncStore:
    """Every `Store` method as a coroutine, run in a worker thread, one call at a time.

    `await astore.get_job(org, job_id)` runs `store.get_job(org, job_id)` off the event loop.
    """

    def __init__(self, store: Store) -> None:
        # trio is imported here, not at module level: the operator CLI imports this module
        # for the error classes and should start fast.
        import trio

        self._trio = trio
        self.store = store
        self._limiter: trio.CapacityLimiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` (normally a store method) in the worker thread."""
        return await self._trio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._limiter
        )

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(Store, name, None)):
            raise AttributeError(name)
        method = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.run(method, *args, **kwargs)

        call.__name__ = name
        call.__doc__ = method.__doc__
        setattr(self, name, call)  # cache: later look-ups skip __getattr__
        return call

    async def aclose(self) -> None:
        """Close the underlying store (in the worker thread)."""
        await self._trio.to_thread.run_sync(self.store.close, limiter=self._limiter)

"""The embedded principal backend: principals from the server's own database (the default)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pushjobs.server.principals.rules import transitive_member

if TYPE_CHECKING:
    from pushjobs.server.principals.requestor import Requestor
    from pushjobs.server.store.records import Group, Org, Principal


class PrincipalStore(Protocol):
    """What the embedded backend reads of the store (the async store over SQLite)."""

    async def get_org(self, name: str) -> Org | None: ...
    async def principals(self, org_name: str, name: str) -> list[Principal]: ...
    async def client_principals(
        self, org_name: str, limit: int
    ) -> list[tuple[str, list[Principal]]]: ...
    async def list_orgs(self) -> list[Org]: ...
    async def get_group(self, org_name: str, name: str) -> Group | None: ...
    async def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]: ...
    async def prune_client_key_changes(self, before: float) -> int: ...


class EmbeddedPrincipals:
    """Principals, organizations and groups from the server's own database."""

    def __init__(self, store: PrincipalStore) -> None:
        self._store = store

    async def org(self, name: str) -> Org | None:
        """The organization named `name`, or None."""
        return await self._store.get_org(name)

    async def principals(self, org_name: str, name: str) -> list[Principal]:
        """The user (global) and the client of `org_name` called `name`, whichever exist."""
        return list(await self._store.principals(org_name, name))

    async def client_principals(
        self, org_name: str, limit: int
    ) -> list[tuple[str, list[Principal]]]:
        """`principals` of at most `limit` client names of `org_name`, in one read."""
        return await self._store.client_principals(org_name, limit)

    async def org_names(self) -> list[str]:
        """Every organization's name."""
        return [org.name for org in await self._store.list_orgs()]

    async def group(self, org_name: str, name: str) -> Group | None:
        """A group of the organization, or None when it does not exist."""
        return await self._store.get_group(org_name, name)

    async def is_member(self, org_name: str, group: str, requestor: Requestor) -> bool:
        """True when the requestor is a transitive member of the group."""
        return await transitive_member(self, org_name, group, requestor)

    async def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]:
        """Clients whose key changed or who were deleted since `after` (see `revocation.py`)."""
        return await self._store.client_key_changes(after)

    async def prune_client_key_changes(self, before: float) -> int:
        """Forget key changes recorded before the epoch time `before`."""
        return await self._store.prune_client_key_changes(before)

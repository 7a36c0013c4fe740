"""KeyWatch and revoke_node: which sessions are re-checked and revoked (issue 15, F2)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pushjobs.protocol.keys import generate_rsa_key, key_fingerprint, public_key_pem
from pushjobs.server.nodes.revocation import KeyWatch, revoke_if_new_owner
from pushjobs.server.nodes.sessions import SessionKeys, SessionOwner
from pushjobs.server.principals.errors import PrincipalBackendUnavailable
from pushjobs.server.store.records import PRINCIPAL_CLIENT, PRINCIPAL_USER, Principal


@functools.cache
def rsa(index: int) -> Any:
    return generate_rsa_key(2048)


def owner(index: int, org_id: str = "org-1") -> SessionOwner:
    return SessionOwner(org_id, key_fingerprint(rsa(index)))


class Nodes:
    """The registry as revocation sees it (`EndableNodes`): ends are recorded."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str, str]] = []

    def end(self, org: str, node: str, reason: str) -> bool:
        self.ended.append((org, node, reason))
        return True


class ChangeLog:
    """The embedded backend's record of key changes (`KeyChangeLog`): (org id, name) rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []

    async def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]:
        if after is None:
            return len(self.rows), []
        return len(self.rows), self.rows[after:]

    async def prune_client_key_changes(self, before: float) -> int:
        return 0


class Backend:
    """Principals by (org, name) → client key index (`ClientKeys`)."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], int] = {}
        self.asked: list[str] = []
        self.down = False

    async def principals(self, org: str, name: str) -> list[Principal]:
        if self.down:
            raise PrincipalBackendUnavailable("cannot connect to the Chef Server")
        self.asked.append(name)
        found = [Principal(name, PRINCIPAL_USER, public_key_pem(rsa(9).public_key()), True)]
        index = self.keys.get((org, name))
        if index is not None:
            found.append(
                Principal(name, PRINCIPAL_CLIENT, public_key_pem(rsa(index).public_key()), True)
            )
        return found


@dataclass
class World:
    """Two nodes with sessions; `changes` is None for a backend without a change log."""

    changes: ChangeLog | None
    sessions: SessionKeys = field(default_factory=lambda: SessionKeys(60))
    nodes: Nodes = field(default_factory=Nodes)
    principals: Backend = field(default_factory=Backend)


def world(with_changes: bool) -> World:
    rt = World(ChangeLog() if with_changes else None)
    for node, index in (("web1", 1), ("web2", 2)):
        rt.principals.keys[("acme", node)] = index
        rt.sessions.session_key("acme", node, owner(index))
        rt.sessions.register_curve_key("acme", node, bytes([index]) * 32)
    return rt


async def started(rt: World) -> KeyWatch:
    watch = KeyWatch(
        principals=rt.principals, sessions=rt.sessions, nodes=rt.nodes, changes=rt.changes
    )
    await watch.take_baseline()
    return watch


def rows(rt: World) -> list[tuple[str, str]]:
    assert rt.changes is not None
    return rt.changes.rows


async def test_embedded_rechecks_only_changed_clients_and_revokes_a_new_key() -> None:
    rt = world(with_changes=True)
    watch = await started(rt)
    assert await watch.check_once() == 0
    assert rt.principals.asked == []  # no change recorded: no look-up at all
    rt.principals.keys[("acme", "web1")] = 3
    rows(rt).append(("org-1", "web1"))
    rows(rt).append(("other-org", "web2"))  # another org's web2: not ours
    assert await watch.check_once() == 1
    assert rt.principals.asked == ["web1"]
    assert rt.sessions.existing_key("acme", "web1") is None
    assert rt.sessions.lookup_curve(bytes([1]) * 32) is None
    assert rt.sessions.existing_key("acme", "web2") is not None
    assert rt.nodes.ended == [("acme", "web1", "session revoked (client key changed)")]
    assert await watch.check_once() == 0  # the cursor moved on


async def test_a_deleted_client_is_revoked_and_an_unchanged_key_is_kept() -> None:
    rt = world(with_changes=True)
    watch = await started(rt)
    del rt.principals.keys[("acme", "web2")]  # only the user of that name is left
    rows(rt).extend([("org-1", "web1"), ("org-1", "web2")])  # web1: set back to its key
    assert await watch.check_once() == 1
    assert rt.nodes.ended == [("acme", "web2", "session revoked (client deleted)")]
    assert rt.sessions.existing_key("acme", "web1") is not None


async def test_without_a_change_log_every_session_is_rechecked() -> None:
    rt = world(with_changes=False)
    watch = await started(rt)
    assert await watch.check_once() == 0
    assert sorted(rt.principals.asked) == ["web1", "web2"]
    rt.principals.keys[("acme", "web2")] = 4
    assert await watch.check_once() == 1
    assert rt.sessions.owner("acme", "web2") is None


async def test_an_unreachable_backend_revokes_nothing() -> None:
    rt = world(with_changes=False)
    rt.principals.down = True
    assert await (await started(rt)).check_once() == 0
    assert rt.nodes.ended == []


async def test_a_session_reissued_meanwhile_is_not_revoked() -> None:
    rt = world(with_changes=False)
    watch = await started(rt)
    stale = rt.sessions.owner("acme", "web1")
    assert stale is not None
    rt.principals.keys[("acme", "web1")] = 3
    rt.sessions.revoke("acme", "web1")
    rt.sessions.session_key("acme", "web1", owner(3))  # the config endpoint, new key
    assert await watch.check_session("acme", "web1", stale) is False
    assert rt.sessions.existing_key("acme", "web1") is not None


def test_config_with_another_key_revokes_the_old_session() -> None:
    rt = world(with_changes=False)

    def revoke(node: str, new_owner: SessionOwner) -> bool:
        return revoke_if_new_owner(rt.sessions, rt.nodes, "acme", node, new_owner)

    assert revoke("web1", owner(1)) is False
    assert revoke("web3", owner(3)) is False  # no session yet
    assert revoke("web1", owner(3)) is True
    assert rt.sessions.existing_key("acme", "web1") is None
    assert revoke("web2", owner(2, org_id="org-2")) is True

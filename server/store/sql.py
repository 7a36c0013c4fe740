"""The SQL store (lifecycle.md §10), written once for SQLite and PostgreSQL.

`SqlStore` holds every query; a `Database` (`sqlite.py`, `postgres.py`) owns the connections,
transactions and migrations of one backend. The queries use `?` placeholders and SQL both
backends accept (`ON CONFLICT`, `RETURNING`); the two differences left — the two-argument
maximum and "no limit" — come from the backend's `Dialect`, as does the one batch SQLite writes
as a single JSON parameter (job node rows). Other batch writes use `executemany` inside one
transaction.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from pushjobs.protocol.vocabulary import JobStatus, NodeStatus, OutputChannel
from pushjobs.server.store.interfaces import (
    AlreadyExistsError,
    InvalidOperationError,
    NotFoundError,
    Store,
)
from pushjobs.server.store.records import (
    ADMINS_GROUP,
    JOB_FINAL_STATUSES,
    JOB_OPEN_STATUSES,
    NODE_OPEN_STATUSES,
    PRINCIPAL_CLIENT,
    PRINCIPAL_USER,
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
from pushjobs.server.store.sql_rows import (
    JOB_COLUMNS,
    JOB_INSERT,
    NEW_NODE_INSERT,
    NEW_NODES_INSERT_JSON,
    NODE_COLUMNS,
    NODE_UPSERT,
    NODE_UPSERT_JSON,
    ORG_COLUMNS,
    OUTPUT_COLUMNS,
    OUTPUT_UPSERT,
    Row,
    job_node_of,
    job_node_params,
    job_of,
    job_params,
    org_of,
    output_of,
    output_params,
    secs,
    user_columns,
    user_of,
)


class Cursor(Protocol):
    """What a query's result offers (sqlite3 and psycopg cursors both do)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int = ..., /) -> list[Any]: ...
    @property
    def description(self) -> Sequence[Sequence[Any]] | None: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """One connection inside a transaction (or a read)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the shared queries spell differently per backend."""

    greatest: str  # the two-argument maximum: MAX (SQLite) or GREATEST (PostgreSQL)
    no_limit: int | None  # the LIMIT value meaning "all rows": -1 (SQLite) or NULL
    # appended to a batch's row selection: PostgreSQL skips rows another server is deleting
    # (retention in a cluster); SQLite has one writer and no row locks
    skip_locked: str = ""
    # job node rows written as one JSON parameter per statement (`NODE_UPSERT_JSON`), not
    # row by row: sqlite3's `executemany` takes and drops the GIL for every row, which makes
    # the store thread fight the ZeroMQ reader for it while a large job runs
    json_node_batches: bool = False


class Database(Protocol):
    """One backend's connections, transactions and schema."""

    dialect: Dialect
    applied_migrations: list[int]

    def transaction(self) -> AbstractContextManager[Connection]: ...
    def reading(self) -> AbstractContextManager[Connection]: ...
    def schema_version(self) -> int: ...
    def close(self) -> None: ...


def _stamp(now: float | None) -> int:
    """`now` (default: the current time) as stored whole seconds."""
    return int(time.time() if now is None else now)


def _in_list(values: Iterable[str]) -> str:
    """SQL literal list for fixed internal names (never user input)."""
    return ", ".join(f"'{v}'" for v in sorted(values))


# Written exactly as in the partial indexes of migrations.py, so SQLite uses them.
_JOB_OPEN_SQL = "'new', 'voting', 'running'"
_NODE_OPEN_SQL = "'new', 'ready', 'running'"
_JOB_FINAL_SQL = _in_list(JOB_FINAL_STATUSES)
assert {s.strip("' ") for s in _JOB_OPEN_SQL.split(",")} == JOB_OPEN_STATUSES
assert {s.strip("' ") for s in _NODE_OPEN_SQL.split(",")} == NODE_OPEN_STATUSES


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def _job_conditions(statuses: Sequence[str] | None, filters: JobFilters) -> tuple[str, list[Any]]:
    """The ` AND ...` conditions of a job listing and their parameters."""
    where = ""
    params: list[Any] = []
    if statuses is not None:
        where += f" AND j.status IN ({_placeholders(len(statuses))})"
        params.extend(statuses)
    if filters.requested_by is not None:
        where += " AND j.requestor_name = ?"
        params.append(filters.requested_by)
    if filters.command is not None:
        where += " AND j.command = ?"
        params.append(filters.command)
    if filters.since is not None:
        where += " AND j.created_at >= ?"
        params.append(filters.since)
    if filters.until is not None:
        where += " AND j.created_at < ?"
        params.append(filters.until)
    if filters.nodes:
        nodes = sorted(set(filters.nodes))
        where += (
            " AND j.id IN (SELECT job_id FROM job_nodes "
            f"WHERE node_name IN ({_placeholders(len(nodes))}))"
        )
        params.extend(nodes)
    return where, params


# ---- output pieces -------------------------------------------------------------------------

_CHANNELS = tuple(OutputChannel)


def _joined(blobs: tuple[Any, Any], pieces: Sequence[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    """(stdout, stderr): each blob followed by its channel's pieces (given in `pos` order)."""
    parts: dict[str, list[bytes]] = {"stdout": [bytes(blobs[0])], "stderr": [bytes(blobs[1])]}
    for channel, data in pieces:
        parts[channel].append(bytes(data))
    return b"".join(parts["stdout"]), b"".join(parts["stderr"])


def _pieces(conn: Connection, job_id: str, node_name: str) -> list[tuple[str, bytes]]:
    """The appended (channel, data) pieces of an output record, by channel and position."""
    return conn.execute(
        "SELECT channel, data FROM job_output_chunks WHERE job_id = ? AND node_name = ? "
        "ORDER BY channel, pos",
        (job_id, node_name),
    ).fetchall()


def _piece(delta: OutputDelta, channel: str) -> tuple[int, bytes]:
    """(position, new bytes) of one channel of a delta."""
    if channel == OutputChannel.STDOUT:
        return delta.stdout_at, delta.stdout
    return delta.stderr_at, delta.stderr


class SqlStore(Store):
    """`Store` over a `Database`: every query is written once, in the SQL both backends share
    (`?` placeholders; the PostgreSQL connection rewrites them)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._greatest = db.dialect.greatest

    @property
    def database(self) -> Database:
        """The backend under the queries (`store copy` reads and writes tables through it)."""
        return self._db

    @property
    def applied_migrations(self) -> list[int]:
        """The schema versions this open applied (empty when the schema was current)."""
        return self._db.applied_migrations

    # -- plumbing ------------------------------------------------------------
    def _tx(self) -> AbstractContextManager[Connection]:
        """One write transaction."""
        return self._db.transaction()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._db.reading() as conn:
            return conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        with self._db.reading() as conn:
            return conn.execute(sql, params).fetchone()

    def close(self) -> None:
        self._db.close()

    def schema_version(self) -> int:
        return self._db.schema_version()

    # -- look-up helpers (run inside a transaction or the lock) ----------------
    @staticmethod
    def _id_or_missing(conn: Connection, sql: str, params: Sequence[Any], missing: str) -> Any:
        """The first column of the row `sql` finds; `NotFoundError(missing)` when none."""
        row = conn.execute(sql, params).fetchone()
        if row is None:
            raise NotFoundError(missing)
        return row[0]

    def _global_id(self, conn: Connection, table: str, kind: str, name: str) -> Any:
        """The id of the organization or user (`kind`, in `table`) `name`."""
        return self._id_or_missing(
            conn, f"SELECT id FROM {table} WHERE name = ?", (name,), f"{kind} '{name}' not found"
        )

    def _org_id(self, conn: Connection, org_name: str) -> str:
        return self._global_id(conn, "orgs", "organization", org_name)

    def _user_id(self, conn: Connection, user_name: str) -> int:
        return self._global_id(conn, "users", "user", user_name)

    def _in_org_id(self, conn: Connection, kind: str, org_id: str, org_name: str, name: str) -> int:
        """The id of the client or group (`kind`) `name` of the org."""
        return self._id_or_missing(
            conn,
            f"SELECT id FROM {kind}s WHERE org_id = ? AND name = ?",
            (org_id, name),
            f"{kind} '{name}' not found in organization '{org_name}'",
        )

    def _client_id(self, conn: Connection, org_id: str, org_name: str, name: str) -> int:
        return self._in_org_id(conn, "client", org_id, org_name, name)

    def _group_id(self, conn: Connection, org_id: str, org_name: str, name: str) -> int:
        return self._in_org_id(conn, "group", org_id, org_name, name)

    def _org_names(self, kind: str, org_name: str) -> list[str]:
        """Names of the org's clients or groups (`kind`), sorted."""
        with self._db.reading() as conn:
            org_id = self._org_id(conn, org_name)
            rows = conn.execute(
                f"SELECT name FROM {kind}s WHERE org_id = ? ORDER BY name", (org_id,)
            ).fetchall()
        return [r[0] for r in rows]

    @staticmethod
    def _is_associated(conn: Connection, org_id: str, user_id: int) -> bool:
        row = conn.execute(
            "SELECT 1 FROM org_users WHERE org_id = ? AND user_id = ?", (org_id, user_id)
        ).fetchone()
        return row is not None

    # -- organizations ---------------------------------------------------------
    def create_org(self, name: str, full_name: str = "", now: float | None = None) -> Org:
        created = _stamp(now)
        org = Org(id=uuid.uuid4().hex, name=name, full_name=full_name, created_at=float(created))
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM orgs WHERE name = ?", (name,)).fetchone():
                raise AlreadyExistsError(f"organization '{name}' already exists")
            conn.execute(
                "INSERT INTO orgs (id, name, full_name, created_at) VALUES (?, ?, ?, ?)",
                (org.id, name, full_name, created),
            )
            conn.execute("INSERT INTO groups (org_id, name) VALUES (?, ?)", (org.id, ADMINS_GROUP))
        return org

    def get_org(self, name: str) -> Org | None:
        row = self._one(f"SELECT {ORG_COLUMNS} FROM orgs WHERE name = ?", (name,))
        return None if row is None else org_of(row)

    def list_orgs(self) -> list[Org]:
        return [org_of(r) for r in self._query(f"SELECT {ORG_COLUMNS} FROM orgs ORDER BY name")]

    def delete_org(self, name: str) -> None:
        with self._tx() as conn:
            org_id = self._org_id(conn, name)
            # Children go by ON DELETE CASCADE (jobs → nodes, output → output chunks; clients,
            # groups, members).
            conn.execute("DELETE FROM orgs WHERE id = ?", (org_id,))

    def add_org_user(self, org_name: str, user_name: str, admin: bool = False) -> bool:
        with self._tx() as conn:
            org_id = self._org_id(conn, org_name)
            user_id = self._user_id(conn, user_name)
            changed = False
            if not self._is_associated(conn, org_id, user_id):
                conn.execute(
                    "INSERT INTO org_users (org_id, user_id) VALUES (?, ?)", (org_id, user_id)
                )
                changed = True
            if admin:
                admins = self._group_id(conn, org_id, org_name, ADMINS_GROUP)
                cur = conn.execute(
                    "INSERT INTO group_members (group_id, member_type, member_id) "
                    "VALUES (?, 'user', ?) ON CONFLICT DO NOTHING",
                    (admins, user_id),
                )
                changed = changed or cur.rowcount > 0
            return changed

    def remove_org_user(self, org_name: str, user_name: str) -> None:
        with self._tx() as conn:
            org_id = self._org_id(conn, org_name)
            user_id = self._user_id(conn, user_name)
            if not self._is_associated(conn, org_id, user_id):
                raise InvalidOperationError(
                    f"user '{user_name}' is not associated with organization '{org_name}'"
                )
            conn.execute(
                "DELETE FROM org_users WHERE org_id = ? AND user_id = ?", (org_id, user_id)
            )
            conn.execute(
                "DELETE FROM group_members WHERE member_type = 'user' AND member_id = ? "
                "AND group_id IN (SELECT id FROM groups WHERE org_id = ?)",
                (user_id, org_id),
            )

    def count_clients(self, org_name: str) -> int:
        with self._db.reading() as conn:
            org_id = self._org_id(conn, org_name)
            row = conn.execute(
                "SELECT COUNT(*) FROM clients WHERE org_id = ?", (org_id,)
            ).fetchone()
            return int(row[0])

    # -- users -----------------------------------------------------------------
    def create_user(
        self, name: str, public_key: str, display_name: str = "", now: float | None = None
    ) -> User:
        created = _stamp(now)
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AlreadyExistsError(f"user '{name}' already exists")
            conn.execute(
                "INSERT INTO users (name, display_name, public_key, created_at) "
                "VALUES (?, ?, ?, ?)",
                (name, display_name, public_key, created),
            )
        return User(name, display_name, public_key, float(created))

    def get_user(self, name: str) -> User | None:
        row = self._one(f"SELECT {user_columns()} FROM users WHERE name = ?", (name,))
        return None if row is None else user_of(row)

    def list_users(self, org_name: str | None = None) -> list[User]:
        with self._db.reading() as conn:
            if org_name is None:
                rows = conn.execute(f"SELECT {user_columns()} FROM users ORDER BY name").fetchall()
            else:
                org_id = self._org_id(conn, org_name)
                rows = conn.execute(
                    f"SELECT {user_columns('u.')} FROM users u "
                    "JOIN org_users ou ON ou.user_id = u.id WHERE ou.org_id = ? ORDER BY u.name",
                    (org_id,),
                ).fetchall()
        return [user_of(r) for r in rows]

    def user_orgs(self, name: str) -> list[str]:
        with self._db.reading() as conn:
            user_id = self._user_id(conn, name)
            rows = conn.execute(
                "SELECT o.name FROM orgs o JOIN org_users ou ON ou.org_id = o.id "
                "WHERE ou.user_id = ? ORDER BY o.name",
                (user_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def set_user_key(self, name: str, public_key: str) -> None:
        with self._tx() as conn:
            cur = conn.execute("UPDATE users SET public_key = ? WHERE name = ?", (public_key, name))
            if cur.rowcount == 0:
                raise NotFoundError(f"user '{name}' not found")

    def delete_user(self, name: str) -> None:
        with self._tx() as conn:
            user_id = self._user_id(conn, name)
            # org_users cascades; the trigger drops group memberships.
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))

    # -- clients ---------------------------------------------------------------
    def create_client(
        self,
        org_name: str,
        name: str,
        public_key: str,
        admin: bool = False,
        now: float | None = None,
    ) -> Client:
        created = _stamp(now)
        with self._tx() as conn:
            org_id = self._org_id(conn, org_name)
            if conn.execute(
                "SELECT 1 FROM clients WHERE org_id = ? AND name = ?", (org_id, name)
            ).fetchone():
                raise AlreadyExistsError(
                    f"client '{name}' already exists in organization '{org_name}'"
                )
            row = conn.execute(
                "INSERT INTO clients (org_id, name, public_key, created_at) VALUES (?, ?, ?, ?) "
                "RETURNING id",
                (org_id, name, public_key, created),
            ).fetchone()
            if admin:
                admins = self._group_id(conn, org_id, org_name, ADMINS_GROUP)
                conn.execute(
                    "INSERT INTO group_members (group_id, member_type, member_id) "
                    "VALUES (?, 'client', ?)",
                    (admins, row[0]),
                )
        return Client(org_name, name, public_key, float(created))

    def create_clients(
        self,
        org_name: str,
        clients: Sequence[tuple[str, str]],
        skip_existing: bool = False,
        now: float | None = None,
    ) -> int:
        created = _stamp(now)
        with self._tx() as conn:
            org_id = self._org_id(conn, org_name)
            existing = {
                r[0] for r in conn.execute("SELECT name FROM clients WHERE org_id = ?", (org_id,))
            }
            rows: list[tuple[str, str, str, int]] = []
            for name, public_key in clients:
                if name in existing:
                    if skip_existing:
                        continue
                    raise AlreadyExistsError(
                        f"client '{name}' already exists in organization '{org_name}'"
                    )
                existing.add(name)  # a name listed twice counts as existing the second time
                rows.append((org_id, name, public_key, created))
            conn.executemany(
                "INSERT INTO clients (org_id, name, public_key, created_at) VALUES (?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def get_client(self, org_name: str, name: str) -> Client | None:
        row = self._one(
            "SELECT c.name, c.public_key, c.created_at FROM clients c "
            "JOIN orgs o ON o.id = c.org_id WHERE o.name = ? AND c.name = ?",
            (org_name, name),
        )
        return None if row is None else Client(org_name, row[0], row[1], float(row[2]))

    def list_clients(self, org_name: str) -> list[str]:
        return self._org_names("client", org_name)

    def set_client_key(self, org_name: str, name: str, public_key: str) -> None:
        with self._tx() as conn:
            org_id = self._org_id(conn, org_name)
            client_id = self._client_id(conn, org_id, org_name, name)
            conn.execute("UPDATE clients SET public_key = ? WHERE id = ?", (public_key, client_id))

    def delete_client(self, org_name: str, name: str) -> None:
        with self._tx() as conn:
            org_id = self._org_id(conn, org_name)
            client_id = self._client_id(conn, org_id, org_name, name)
            conn.execute("DELETE FROM clients WHERE id = ?", (client_id,))

    def client_key_changes(self, after: int | None) -> tuple[int, list[tuple[str, str]]]:
        if after is None:
            row = self._one("SELECT COALESCE(MAX(seq), 0) FROM client_key_changes")
            return int(row[0]) if row else 0, []
        rows = self._query(
            "SELECT seq, org_id, name FROM client_key_changes WHERE seq > ? ORDER BY seq", (after,)
        )
        cursor = int(rows[-1][0]) if rows else after
        return cursor, [(r[1], r[2]) for r in rows]

    # -- node inventory (http-api.md §7.7) ----------------------------------------
    def record_inventory(self, updates: Sequence[InventoryUpdate]) -> None:
        """Upsert what was seen: `last_seen` moves on; labels change only when reported."""
        if not updates:
            return
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO node_inventory (org_name, node_name, labels, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (org_name, node_name) DO UPDATE SET "
                "last_seen = excluded.last_seen, "
                "labels = COALESCE(excluded.labels, node_inventory.labels)",
                [
                    (
                        u.org_name,
                        u.node_name,
                        None if u.labels is None else json.dumps(u.labels, sort_keys=True),
                        u.seen_at,
                        u.seen_at,
                    )
                    for u in updates
                ],
            )

    def node_inventory(self, org_name: str) -> list[InventoryNode]:
        """Every node of the organization that ever connected, sorted by name."""
        rows = self._query(
            "SELECT node_name, labels, first_seen, last_seen FROM node_inventory "
            "WHERE org_name = ? ORDER BY node_name",
            (org_name,),
        )
        return [
            InventoryNode(
                str(r[0]), None if r[1] is None else json.loads(r[1]), float(r[2]), float(r[3])
            )
            for r in rows
        ]

    def prune_client_key_changes(self, before: float) -> int:
        with self._tx() as conn:
            return conn.execute(
                "DELETE FROM client_key_changes WHERE changed_at < ?", (_stamp(before),)
            ).rowcount

    # -- principals and groups -------------------------------------------------
    def principals(self, org_name: str, name: str) -> list[Principal]:
        with self._db.reading() as conn:
            found: list[Principal] = []
            user = conn.execute(
                "SELECT u.public_key, EXISTS (SELECT 1 FROM org_users ou JOIN orgs o "
                "ON o.id = ou.org_id WHERE o.name = ? AND ou.user_id = u.id) "
                "FROM users u WHERE u.name = ?",
                (org_name, name),
            ).fetchone()
            if user is not None:
                found.append(Principal(name, PRINCIPAL_USER, user[0], bool(user[1])))
            client = conn.execute(
                "SELECT c.public_key FROM clients c JOIN orgs o ON o.id = c.org_id "
                "WHERE o.name = ? AND c.name = ?",
                (org_name, name),
            ).fetchone()
            if client is not None:
                found.append(Principal(name, PRINCIPAL_CLIENT, client[0], True))
            return found

    def client_principals(self, org_name: str, limit: int) -> list[tuple[str, list[Principal]]]:
        with self._db.reading() as conn:
            clients = conn.execute(
                "SELECT c.name, c.public_key FROM clients c JOIN orgs o ON o.id = c.org_id "
                "WHERE o.name = ? ORDER BY c.name LIMIT ?",
                (org_name, limit),
            ).fetchall()
            users = {
                str(r[0]): r
                for r in conn.execute(
                    "SELECT u.name, u.public_key, EXISTS (SELECT 1 FROM org_users ou "
                    "WHERE ou.org_id = o.id AND ou.user_id = u.id) "
                    "FROM users u JOIN clients c ON c.name = u.name JOIN orgs o "
                    "ON o.id = c.org_id WHERE o.name = ?",
                    (org_name,),
                ).fetchall()
            }
        answers: list[tuple[str, list[Principal]]] = []
        for name, public_key in clients:
            found: list[Principal] = []
            user = users.get(name)
            if user is not None:
                found.append(Principal(name, PRINCIPAL_USER, user[1], bool(user[2])))
            found.append(Principal(name, PRINCIPAL_CLIENT, public_key, True))
            answers.append((name, found))
        return answers

    def create_group(self, org_name: str, name: str) -> None:
        with self._tx() as conn:
            org_id = self._org_id(conn, org_name)
            if conn.execute(
                "SELECT 1 FROM groups WHERE org_id = ? AND name = ?", (org_id, name)
            ).fetchone():
                raise AlreadyExistsError(
                    f"group '{name}' already exists in organization '{org_name}'"
                )
            conn.execute("INSERT INTO groups (org_id, name) VALUES (?, ?)", (org_id, name))

    def get_group(self, org_name: str, name: str) -> Group | None:
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT g.id FROM groups g JOIN orgs o ON o.id = g.org_id "
                "WHERE o.name = ? AND g.name = ?",
                (org_name, name),
            ).fetchone()
            if row is None:
                return None
            group_id = row[0]
            group = Group(name)
            for kind, table, target in (
                ("user", "users", group.users),
                ("client", "clients", group.clients),
                ("group", "groups", group.groups),
            ):
                rows = conn.execute(
                    f"SELECT t.name FROM group_members m JOIN {table} t ON t.id = m.member_id "
                    "WHERE m.group_id = ? AND m.member_type = ? ORDER BY t.name",
                    (group_id, kind),
                ).fetchall()
                target.extend(r[0] for r in rows)
            return group

    def list_groups(self, org_name: str) -> list[str]:
        return self._org_names("group", org_name)

    def _member_rows(
        self,
        conn: Connection,
        org_name: str,
        group: str,
        users: Iterable[str],
        clients: Iterable[str],
        groups: Iterable[str],
        *,
        adding: bool,
    ) -> tuple[int, list[tuple[str, int, str]]]:
        """The group's id, and its members resolved to (kind, id, description); raises
        naming the first bad one. Members to add must also be allowed in the group
        (associated users, not the group itself)."""
        org_id = self._org_id(conn, org_name)
        group_id = self._group_id(conn, org_id, org_name, group)
        members: list[tuple[str, int, str]] = []
        for user in users:
            user_id = self._user_id(conn, user)
            if adding and not self._is_associated(conn, org_id, user_id):
                raise InvalidOperationError(
                    f"user '{user}' is not associated with organization '{org_name}'"
                )
            members.append(("user", user_id, f"user '{user}'"))
        for client in clients:
            client_id = self._client_id(conn, org_id, org_name, client)
            members.append(("client", client_id, f"client '{client}'"))
        for sub in groups:
            sub_id = self._group_id(conn, org_id, org_name, sub)
            if adding and sub == group:
                raise InvalidOperationError(f"group '{group}' cannot contain itself")
            members.append(("group", sub_id, f"group '{sub}'"))
        return group_id, members

    def add_group_members(
        self,
        org_name: str,
        group: str,
        users: Iterable[str] = (),
        clients: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> None:
        with self._tx() as conn:
            group_id, members = self._member_rows(
                conn, org_name, group, users, clients, groups, adding=True
            )
            conn.executemany(
                "INSERT INTO group_members (group_id, member_type, member_id) "
                "VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(group_id, kind, member_id) for kind, member_id, _ in members],
            )

    def remove_group_members(
        self,
        org_name: str,
        group: str,
        users: Iterable[str] = (),
        clients: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> None:
        with self._tx() as conn:
            group_id, members = self._member_rows(
                conn, org_name, group, users, clients, groups, adding=False
            )
            for kind, member_id, description in members:
                cur = conn.execute(
                    "DELETE FROM group_members WHERE group_id = ? AND member_type = ? "
                    "AND member_id = ?",
                    (group_id, kind, member_id),
                )
                if cur.rowcount == 0:
                    raise InvalidOperationError(f"{description} is not a member of group '{group}'")

    def delete_group(self, org_name: str, name: str) -> None:
        with self._tx() as conn:
            org_id = self._org_id(conn, org_name)
            group_id = self._group_id(conn, org_id, org_name, name)
            if name == ADMINS_GROUP:
                raise InvalidOperationError(f"group '{ADMINS_GROUP}' cannot be deleted")
            conn.execute("DELETE FROM groups WHERE id = ?", (group_id,))

    # -- jobs ------------------------------------------------------------------
    def create_job(self, job: Job, node_names: Sequence[str]) -> None:
        created = secs(job.created_at)
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
                raise AlreadyExistsError(f"job '{job.id}' already exists")
            conn.execute(JOB_INSERT, job_params(job))
            new = NodeStatus.NEW.value
            if self._db.dialect.json_node_batches:
                names = json.dumps(list(node_names))
                conn.execute(NEW_NODES_INSERT_JSON, (job.id, new, created, names))
            else:
                conn.executemany(
                    NEW_NODE_INSERT, [(job.id, name, new, created) for name in node_names]
                )

    def set_job_status(self, job_id: str, status: str, updated_at: float) -> None:
        with self._tx() as conn:
            conn.execute(
                f"UPDATE jobs SET status = ?, updated_at = {self._greatest}(created_at, ?) "
                "WHERE id = ?",
                (status, secs(updated_at), job_id),
            )

    def set_job_aborted_by(self, job_id: str, name: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE jobs SET aborted_by = ? WHERE id = ?", (name, job_id))

    def save_job_nodes(self, nodes: Sequence[JobNode]) -> None:
        if not nodes:
            return
        now = int(time.time())
        if self._db.dialect.json_node_batches:
            batch = json.dumps([job_node_params(n) for n in nodes], separators=(",", ":"))
            with self._tx() as conn:
                conn.execute(NODE_UPSERT_JSON, (now, batch))
            return
        rows = [(*job_node_params(n), now) for n in nodes]
        with self._tx() as conn:
            conn.executemany(NODE_UPSERT, rows)

    def get_job(self, org_name: str, job_id: str) -> Job | None:
        row = self._one(
            f"SELECT {JOB_COLUMNS} FROM jobs j JOIN orgs o ON o.id = j.org_id "
            "WHERE j.id = ? AND o.name = ?",
            (job_id, org_name),
        )
        return None if row is None else job_of(row)

    def get_job_nodes(self, job_id: str) -> list[JobNode]:
        rows = self._query(
            f"SELECT {NODE_COLUMNS} FROM job_nodes WHERE job_id = ? ORDER BY node_name",
            (job_id,),
        )
        return [job_node_of(r) for r in rows]

    def list_jobs(
        self,
        org_name: str,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        *,
        filters: JobFilters | None = None,
    ) -> list[Job]:
        if statuses is not None and not statuses:
            return []
        with self._db.reading() as conn:
            org = conn.execute("SELECT id FROM orgs WHERE name = ?", (org_name,)).fetchone()
            if org is None:
                return []
            where, params = _job_conditions(statuses, filters or JobFilters())
            sql = (
                f"SELECT {JOB_COLUMNS} FROM jobs j JOIN orgs o ON o.id = j.org_id "
                f"WHERE j.org_id = ?{where} "
                "ORDER BY j.created_at DESC, j.id DESC LIMIT ? OFFSET ?"
            )
            args = [org[0], *params, self._db.dialect.no_limit if limit is None else limit, offset]
            rows = conn.execute(sql, args).fetchall()
        return [job_of(r) for r in rows]

    def save_outputs(self, records: Sequence[OutputRecord]) -> None:
        if not records:
            return
        with self._tx() as conn:
            conn.executemany(OUTPUT_UPSERT, [output_params(r) for r in records])
            conn.executemany(
                "DELETE FROM job_output_chunks WHERE job_id = ? AND node_name = ?",
                [(r.job_id, r.node_name) for r in records],
            )

    def append_outputs(self, deltas: Sequence[OutputDelta]) -> None:
        if not deltas:
            return
        counters = [
            (
                d.job_id,
                d.node_name,
                d.stdout_total,
                d.stderr_total,
                d.stdout_omitted,
                d.stderr_omitted,
                int(d.closed),
            )
            for d in deltas
        ]
        with self._tx() as conn:
            # Blobs stay empty while a record is open, so this row stays small to rewrite.
            conn.executemany(
                "INSERT INTO job_output (job_id, node_name, stdout_total, stderr_total, "
                "stdout_omitted, stderr_omitted, closed) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (job_id, node_name) DO UPDATE SET "
                "stdout_total = excluded.stdout_total, stderr_total = excluded.stderr_total, "
                "stdout_omitted = excluded.stdout_omitted, "
                "stderr_omitted = excluded.stderr_omitted, closed = excluded.closed",
                counters,
            )
            for channel in _CHANNELS:
                rows = [(d.job_id, d.node_name, *_piece(d, channel)) for d in deltas]
                bounds = [row[:3] for row in rows]
                # Drop what is stored from `at` on: a no-op normally, a replace at 0, and an
                # idempotent retry after a write whose outcome the writer did not learn.
                conn.executemany(
                    f"UPDATE job_output SET {channel} = substr({channel}, 1, CAST(? AS INTEGER)) "
                    f"WHERE job_id = ? AND node_name = ? AND length({channel}) > ?",
                    [(at, job_id, node, at) for job_id, node, at in bounds],
                )
                conn.executemany(
                    "DELETE FROM job_output_chunks WHERE job_id = ? AND node_name = ? "
                    f"AND channel = '{channel}' AND pos >= ?",
                    bounds,
                )
                conn.executemany(
                    "INSERT INTO job_output_chunks (job_id, node_name, channel, pos, data) "
                    f"VALUES (?, ?, '{channel}', ?, ?)",
                    [row for row in rows if row[3]],
                )
            for d in deltas:
                if d.closed:
                    self._compact(conn, d.job_id, d.node_name)

    @staticmethod
    def _compact(conn: Connection, job_id: str, node_name: str) -> None:
        """Move a record's appended pieces into its blobs (once, when it closes)."""
        pieces = _pieces(conn, job_id, node_name)
        if not pieces:
            return
        row = conn.execute(
            "SELECT stdout, stderr FROM job_output WHERE job_id = ? AND node_name = ?",
            (job_id, node_name),
        ).fetchone()
        stdout, stderr = _joined(row, pieces)
        conn.execute(
            "UPDATE job_output SET stdout = ?, stderr = ? WHERE job_id = ? AND node_name = ?",
            (stdout, stderr, job_id, node_name),
        )
        conn.execute(
            "DELETE FROM job_output_chunks WHERE job_id = ? AND node_name = ?",
            (job_id, node_name),
        )

    def get_output(self, job_id: str, node_name: str) -> OutputRecord | None:
        with self._db.reading() as conn:
            row = conn.execute(
                f"SELECT {OUTPUT_COLUMNS} FROM job_output WHERE job_id = ? AND node_name = ?",
                (job_id, node_name),
            ).fetchone()
            if row is None:
                return None
            pieces = _pieces(conn, job_id, node_name)
        record = output_of(row)
        if pieces:
            record.stdout, record.stderr = _joined((record.stdout, record.stderr), pieces)
        return record

    def get_output_totals(self, job_id: str) -> dict[str, OutputTotals]:
        rows = self._query(
            "SELECT node_name, stdout_total, stderr_total, stdout_omitted, stderr_omitted, "
            "closed FROM job_output WHERE job_id = ?",
            (job_id,),
        )
        return {r[0]: OutputTotals(r[1], r[2], bool(r[3] or r[4]), bool(r[5])) for r in rows}

    def mark_interrupted_crashed(self, now: float, coordinator: str | None = None) -> int:
        stamp = int(now)
        crashed = f"status = '{JobStatus.CRASHED}', updated_at = {self._greatest}(created_at, ?)"
        node_crashed = f"status = '{NodeStatus.CRASHED}', finished_at = ?, updated_at = ?"
        with self._tx() as conn:
            if coordinator is None:
                # One server: every unfinished job, and every job-node row still open
                # (lifecycle.md §9), also the leftovers of finished jobs.
                jobs = conn.execute(
                    f"UPDATE jobs SET {crashed} WHERE status IN ({_JOB_OPEN_SQL})", (stamp,)
                ).rowcount
                conn.execute(
                    f"UPDATE job_nodes SET {node_crashed} WHERE status IN ({_NODE_OPEN_SQL})",
                    (stamp, stamp),
                )
                records = conn.execute(
                    "SELECT job_id, node_name FROM job_output WHERE closed = 0"
                ).fetchall()
            else:
                # A cluster: only the jobs that server coordinated.
                ids = conn.execute(
                    f"SELECT id FROM jobs WHERE status IN ({_JOB_OPEN_SQL}) AND coordinator = ?",
                    (coordinator,),
                ).fetchall()
                jobs = len(ids)
                conn.executemany(
                    f"UPDATE jobs SET {crashed} WHERE id = ?", [(stamp, i) for (i,) in ids]
                )
                conn.executemany(
                    f"UPDATE job_nodes SET {node_crashed} "
                    f"WHERE job_id = ? AND status IN ({_NODE_OPEN_SQL})",
                    [(stamp, stamp, i) for (i,) in ids],
                )
                records = [
                    (job_id, node)
                    for (job_id,) in ids
                    for (node,) in conn.execute(
                        "SELECT node_name FROM job_output WHERE job_id = ? AND closed = 0",
                        (job_id,),
                    ).fetchall()
                ]
            for job_id, node_name in records:
                self._compact(conn, job_id, node_name)
                conn.execute(
                    "UPDATE job_output SET closed = 1 WHERE job_id = ? AND node_name = ?",
                    (job_id, node_name),
                )
        return jobs

    def prune_jobs(self, older_than: float, org_name: str | None = None) -> int:
        cutoff = int(older_than)
        with self._tx() as conn:
            sql = f"DELETE FROM jobs WHERE created_at < ? AND status IN ({_JOB_FINAL_SQL})"
            params: list[Any] = [cutoff]
            if org_name is not None:
                sql += " AND org_id = ?"
                params.append(self._org_id(conn, org_name))
            # job_nodes, job_output and its job_output_chunks go by ON DELETE CASCADE.
            return conn.execute(sql, params).rowcount

    def prune_jobs_batch(self, older_than: float, limit: int) -> int:
        # Oldest first; job_nodes, job_output(_chunks) and job_events go by ON DELETE CASCADE.
        with self._tx() as conn:
            return conn.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE created_at < ? "
                f"AND status IN ({_JOB_FINAL_SQL}) ORDER BY created_at LIMIT ?"
                f"{self._db.dialect.skip_locked})",
                (int(older_than), limit),
            ).rowcount

    def prune_outputs_batch(self, older_than: float, limit: int) -> int:
        with self._tx() as conn:
            ids = conn.execute(
                "SELECT id FROM jobs WHERE created_at < ? "
                f"AND status IN ({_JOB_FINAL_SQL}) "
                "AND EXISTS (SELECT 1 FROM job_output o WHERE o.job_id = jobs.id) "
                f"ORDER BY created_at LIMIT ?{self._db.dialect.skip_locked}",
                (int(older_than), limit),
            ).fetchall()
            # job_output_chunks go by ON DELETE CASCADE.
            conn.executemany("DELETE FROM job_output WHERE job_id = ?", [(i,) for (i,) in ids])
            return len(ids)

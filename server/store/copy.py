"""Copy a whole store into an empty one (`pushjobs-server store copy`): every table, row for
row, ids kept, in one transaction of the target; identity counters moved past the copied ids.

Both schemas have the same tables and columns (`migrations.py`, `postgres_migrations.py`), so
the copy reads each table's columns from the source and writes them to the target unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from pushjobs.server.store.interfaces import InvalidOperationError
from pushjobs.server.store.sql import Connection, Database

# In foreign-key order: a row's parents are copied before it.
TABLES = (
    "orgs",
    "users",
    "org_users",
    "clients",
    "groups",
    "group_members",
    "jobs",
    "job_nodes",
    "job_output",
    "job_output_chunks",
    "client_key_changes",
    "node_inventory",
)
# Tables whose id the database generates, and that column: its counter must pass the copy.
_IDENTITIES = {"users": "id", "clients": "id", "groups": "id", "client_key_changes": "seq"}
_BATCH = 1000


def _columns(conn: Connection, table: str) -> list[str]:
    cursor = conn.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    return [column[0] for column in cursor.description or ()]


def copy_store(
    source: Database,
    target: Database,
    *,
    reset_identity: Callable[[Connection, str, str], None],
    progress: Callable[[str, int], None] = lambda table, rows: None,
) -> dict[str, int]:
    """Copy every table of `source` into the empty `target`; returns the rows per table.

    `reset_identity(conn, table, column)` moves the target's counter past the copied ids.
    Raises `InvalidOperationError` when the target holds data already.
    """
    counts: dict[str, int] = {}
    with source.reading() as src, target.transaction() as dst:
        for table in TABLES:
            if dst.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                raise InvalidOperationError(
                    f"the target database is not empty (table {table} has rows); "
                    "copy into a new, empty database"
                )
        for table in TABLES:
            columns = _columns(src, table)
            names = ", ".join(columns)
            insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
            cursor = src.execute(f"SELECT {names} FROM {table}")
            copied = 0
            while True:
                rows = cursor.fetchmany(_BATCH)
                if not rows:
                    break
                dst.executemany(insert, [tuple(row) for row in rows])
                copied += len(rows)
            counts[table] = copied
            progress(table, copied)
        for table, column in _IDENTITIES.items():
            reset_identity(dst, table, column)
    return counts

"""The SQLite backend (the default, one server): WAL mode, one connection, numbered migrations
(`migrations.py`) at open.

The connection is shared by worker threads (`check_same_thread=False`); a lock serialises
calls so the store is also safe without `AsyncStore`. Write transactions are `BEGIN IMMEDIATE`
(the write lock at once: no upgrade deadlocks).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pushjobs.server.store.interfaces import SchemaError
from pushjobs.server.store.migrations import apply_migrations, current_version
from pushjobs.server.store.sql import Connection, Dialect, SqlStore

SQLITE = Dialect(greatest="MAX", no_limit=-1, json_node_batches=True)


class SqliteDatabase:
    """One SQLite file: its connection, lock and schema."""

    dialect = SQLITE

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path),
            timeout=busy_timeout,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,
        )
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            try:
                self.applied_migrations = apply_migrations(self._conn)
            except RuntimeError as exc:
                raise SchemaError(str(exc)) from None
        except BaseException:
            self._conn.close()
            raise

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self._lock:
            yield self._conn

    def schema_version(self) -> int:
        with self._lock:
            return current_version(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqliteStore(SqlStore):
    """`Store` on one SQLite file. Opening creates the file and applies pending migrations."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0) -> None:
        db = SqliteDatabase(path, busy_timeout=busy_timeout)
        super().__init__(db)
        self.path = db.path

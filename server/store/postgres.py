"""The PostgreSQL backend (docs/cluster.md): psycopg 3 connections from a psycopg-pool, used from
worker threads like the SQLite one, migrations (`postgres_migrations.py`) at open.

The shared queries use `?` placeholders; `_Connection` rewrites them to psycopg's `%s` once per
distinct query. A lost or unreachable database raises `StoreUnavailableError`, which the HTTP
layer answers with 503; the pool reconnects by itself once the database is back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pushjobs.server.store.interfaces import SchemaError, StoreError, StoreUnavailableError
from pushjobs.server.store.postgres_migrations import apply_migrations, current_version
from pushjobs.server.store.sql import Connection, Cursor, Dialect, SqlStore

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger("pushjobs.server.store")

POSTGRESQL = Dialect(greatest="GREATEST", no_limit=None, skip_locked=" FOR UPDATE SKIP LOCKED")
_PLACEHOLDER = re.compile(r"\?")
_queries: dict[str, str] = {}


def _pg_sql(sql: str) -> str:
    """`?` placeholders as `%s` (literal `%` doubled); cached, the queries are a fixed set."""
    text = _queries.get(sql)
    if text is None:
        text = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
        if len(_queries) < 4096:
            _queries[sql] = text
    return text


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _reconnect_failed(pool: Any) -> None:
    log.debug("store: a reconnect attempt of %s gave up; the next request tries again", pool.name)


class _Connection:
    """A psycopg connection speaking the shared queries' `?` dialect."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor:
        return self._conn.execute(_pg_sql(sql), params or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> None:
        rows = list(rows)
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(_pg_sql(sql), rows)


def _import_driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise StoreError(
            "the postgresql store needs psycopg 3: pip install 'pushjobs[postgresql]'"
        ) from None
    return psycopg, psycopg_pool


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database, and its schema."""

    dialect = POSTGRESQL

    def __init__(
        self,
        url: str,
        *,
        max_size: int = 4,
        connect_timeout: float = 10.0,
        wait_timeout: float = 3.0,
    ) -> None:
        psycopg, psycopg_pool = _import_driver()
        self.url = url
        self._psycopg = psycopg
        self._pool_timeout = psycopg_pool.PoolTimeout
        self._pool: ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            # how long a call waits for a connection: while the database is down, a request
            # gets its 503 after this long, not after a hung minute
            timeout=wait_timeout,
            # Give up one reconnect attempt after 5 s: the pool's back-off doubles without a
            # cap, so one attempt kept alive through a long outage would retry only long after
            # the database is back. A request then starts a fresh attempt at once.
            reconnect_timeout=5.0,
            reconnect_failed=_reconnect_failed,
            # a connection the database closed (restart, failover) is replaced before use, so
            # the first request after an outage does not fail on a dead connection
            check=psycopg_pool.ConnectionPool.check_connection,
            open=False,
            name="pushjobs-store",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except self._pool_timeout:
            self._pool.close()
            raise StoreUnavailableError(self._unreachable(None)) from None
        try:
            with self._connection() as conn:
                self.applied_migrations = apply_migrations(conn)
        except RuntimeError as exc:
            self._pool.close()
            raise SchemaError(str(exc)) from None
        except BaseException:
            self._pool.close()
            raise

    def _unreachable(self, exc: BaseException | None) -> str:
        reason = f": {str(exc).strip().splitlines()[0]}" if exc is not None and str(exc) else ""
        return f"the database {redacted(self.url)} is unavailable{reason}"

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; connection failures become `StoreUnavailableError`."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._pool_timeout as exc:
            raise StoreUnavailableError(self._unreachable(exc)) from None
        except self._psycopg.OperationalError as exc:
            log.warning("%s", self._unreachable(exc))
            raise StoreUnavailableError(self._unreachable(exc)) from None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._connection() as conn, conn.transaction():
            yield _Connection(conn)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self._connection() as conn:
            yield _Connection(conn)

    def schema_version(self) -> int:
        with self._connection() as conn:
            return current_version(conn)

    def close(self) -> None:
        self._pool.close()


def reset_identity(conn: Connection, table: str, column: str) -> None:
    """Move the identity counter of `table.column` past its highest value (after a copy)."""
    conn.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
        f"COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
    )


class PostgresStore(SqlStore):
    """`Store` on a PostgreSQL database (a libpq URI). Opening applies pending migrations."""

    def __init__(self, url: str, *, max_size: int = 4, connect_timeout: float = 10.0) -> None:
        db = PostgresDatabase(url, max_size=max_size, connect_timeout=connect_timeout)
        super().__init__(db)
        self.url = url

"""Open the configured store: the SQLite file in data_dir, or the PostgreSQL database of
`[store] url`. The one place that knows which class backs which setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pushjobs.server.config import Settings
    from pushjobs.server.store.sql import SqlStore


def store_name(settings: Settings) -> str:
    """The store as operators read it in messages (a PostgreSQL URL without its password)."""
    if settings.store.backend == "postgresql":
        from pushjobs.server.store.postgres import redacted

        assert settings.store.url is not None
        return f"database {redacted(settings.store.url)}"
    return f"database {settings.database_path}"


def store_exists(settings: Settings) -> bool:
    """False when the SQLite file is missing (`init` has not run); a PostgreSQL database is
    migrated whenever it is opened."""
    return settings.store.backend == "postgresql" or settings.database_path.exists()


def open_store(settings: Settings) -> SqlStore:
    """Open the configured store and apply pending migrations (`StoreError` on failure)."""
    if settings.store.backend == "postgresql":
        from pushjobs.server.store.postgres import PostgresStore

        assert settings.store.url is not None
        return PostgresStore(settings.store.url)
    from pushjobs.server.store.sqlite import SqliteStore

    return SqliteStore(settings.database_path)

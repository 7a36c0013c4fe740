"""`pushjobs-server store copy --to URL`: move a single server's SQLite store into an empty
PostgreSQL database (cli.md §14)."""

from __future__ import annotations

from pushjobs.server.admin.context import EXIT_OK, Context, OperationFailed, UsageError


def cmd_store_copy(ctx: Context) -> int:
    url: str = ctx.args.to
    if not url.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--to must be a postgresql://USER@HOST:PORT/DATABASE URI (got {url!r})")
    settings = ctx.settings()
    if settings.store.backend != "sqlite":
        raise UsageError("store copy reads the SQLite store; this server's store is PostgreSQL")
    from pushjobs.server.store.copy import copy_store
    from pushjobs.server.store.postgres import PostgresStore, redacted, reset_identity

    source = ctx.sql_store()
    target = PostgresStore(url)
    try:
        counts = copy_store(
            source.database,
            target.database,
            reset_identity=reset_identity,
            progress=lambda table, rows: ctx.say(f"{table}: {rows} row(s)", stderr=True),
        )
    except OSError as exc:
        raise OperationFailed(f"copy failed: {exc}") from None
    finally:
        target.close()
    total = sum(counts.values())
    path = ctx.config_path
    ctx.result(
        {"copied": counts, "to": redacted(url)},
        f"copied {total} row(s) from {settings.database_path} to {redacted(url)}\n"
        f'next: set [store] backend = "postgresql" and url = "{redacted(url)}" in {path}, '
        "then restart the server",
    )
    return EXIT_OK

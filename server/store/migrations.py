"""Numbered SQLite schema migrations (lifecycle.md §10), applied in order when a store opens.

Append new migrations to `MIGRATIONS`; never edit one that has shipped. Each runs in the
same transaction as the `schema_version` update, so a failed migration leaves nothing behind.
"""

from __future__ import annotations

import sqlite3

_V1 = """
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    full_name   TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL DEFAULT '',
    public_key   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE org_users (
    org_id   TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (org_id, user_id)
) WITHOUT ROWID;
CREATE INDEX org_users_by_user ON org_users(user_id);

CREATE TABLE clients (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE groups (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id  TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE group_members (
    group_id     INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    member_type  TEXT NOT NULL CHECK (member_type IN ('user', 'client', 'group')),
    member_id    INTEGER NOT NULL,
    PRIMARY KEY (group_id, member_type, member_id)
) WITHOUT ROWID;
CREATE INDEX group_members_by_member ON group_members(member_type, member_id);

-- member_id points into users, clients or groups: no foreign key can express that,
-- so deleting the member removes its memberships here (also for cascaded deletes).
CREATE TRIGGER users_drop_memberships AFTER DELETE ON users BEGIN
    DELETE FROM group_members WHERE member_type = 'user' AND member_id = OLD.id;
END;
CREATE TRIGGER clients_drop_memberships AFTER DELETE ON clients BEGIN
    DELETE FROM group_members WHERE member_type = 'client' AND member_id = OLD.id;
END;
CREATE TRIGGER groups_drop_memberships AFTER DELETE ON groups BEGIN
    DELETE FROM group_members WHERE member_type = 'group' AND member_id = OLD.id;
END;

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    command         TEXT NOT NULL,
    status          TEXT NOT NULL,
    quorum          INTEGER NOT NULL,
    run_timeout     INTEGER NOT NULL,
    requestor_name  TEXT NOT NULL,
    requestor_type  TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    run_as_user     TEXT,
    dir             TEXT,
    env_json        TEXT,
    file            TEXT,
    capture         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_org_newest ON jobs(org_id, created_at DESC, id DESC);
CREATE INDEX jobs_by_created ON jobs(created_at);
CREATE INDEX jobs_open ON jobs(status) WHERE status IN ('new', 'voting', 'running');

CREATE TABLE job_nodes (
    job_id       TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    node_name    TEXT NOT NULL,
    status       TEXT NOT NULL,
    exit_status  INTEGER,
    signal       TEXT,
    started_at   INTEGER,
    finished_at  INTEGER,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (job_id, node_name)
) WITHOUT ROWID;
CREATE INDEX job_nodes_open ON job_nodes(job_id) WHERE status IN ('new', 'ready', 'running');

CREATE TABLE job_output (
    job_id          TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    node_name       TEXT NOT NULL,
    stdout          BLOB NOT NULL DEFAULT x'',
    stderr          BLOB NOT NULL DEFAULT x'',
    stdout_total    INTEGER NOT NULL DEFAULT 0,
    stderr_total    INTEGER NOT NULL DEFAULT 0,
    stdout_omitted  INTEGER NOT NULL DEFAULT 0,
    stderr_omitted  INTEGER NOT NULL DEFAULT 0,
    closed          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, node_name)
);
CREATE INDEX job_output_open ON job_output(job_id) WHERE closed = 0;
"""

# Captured output is append-only: while a record is open, each write appends the new bytes
# of a channel as one piece at its stored position `pos`; closing the record concatenates the
# pieces into the `job_output` blobs once and deletes them.
_V2 = """
CREATE TABLE job_output_chunks (
    job_id     TEXT NOT NULL,
    node_name  TEXT NOT NULL,
    channel    TEXT NOT NULL CHECK (channel IN ('stdout', 'stderr')),
    pos        INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (job_id, node_name, channel, pos),
    FOREIGN KEY (job_id, node_name) REFERENCES job_output(job_id, node_name) ON DELETE CASCADE
);
"""

# Revocation (security issue 15, F2): every change of a client's key and every client deletion
# (also cascaded from an organization's) is recorded, whichever process made it, so the running
# server finds the nodes whose session it must revoke with one cheap query. The server prunes
# old rows.
_V3 = """
CREATE TABLE client_key_changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    changed_at  INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
);
CREATE INDEX client_key_changes_by_time ON client_key_changes(changed_at);

CREATE TRIGGER clients_key_changed AFTER UPDATE OF public_key ON clients
WHEN NEW.public_key IS NOT OLD.public_key BEGIN
    INSERT INTO client_key_changes (org_id, name) VALUES (OLD.org_id, OLD.name);
END;
CREATE TRIGGER clients_deleted_key AFTER DELETE ON clients BEGIN
    INSERT INTO client_key_changes (org_id, name) VALUES (OLD.org_id, OLD.name);
END;
"""

# Rollouts and audit (issue 10): a job's limits as given (the JSON text of `5` or `"10%"`) and
# who aborted it. The listing's filters stay index range scans in `created_at DESC, id DESC`
# order, so a page costs its rows, not the org's history: time ranges use `jobs_by_org_newest`,
# the requestor and command filters get the same index with their column in front, and the
# node filter finds a node's jobs through `job_nodes_by_node`.
_V4 = """
ALTER TABLE jobs ADD COLUMN max_concurrency TEXT;
ALTER TABLE jobs ADD COLUMN max_errors TEXT;
ALTER TABLE jobs ADD COLUMN aborted_by TEXT;
CREATE INDEX job_nodes_by_node ON job_nodes(node_name, job_id);
CREATE INDEX jobs_by_org_requestor ON jobs(org_id, requestor_name, created_at DESC, id DESC);
CREATE INDEX jobs_by_org_command ON jobs(org_id, command, created_at DESC, id DESC);
"""

# A cluster of servers (issue 12): the server that coordinates a job. SQLite has one server, but
# the column keeps both schemas alike for `store copy`.
_V5 = """
ALTER TABLE jobs ADD COLUMN coordinator TEXT;
"""

# Inventory (issue 13): every node that ever connected, with the labels it last reported
# (JSON object text; NULL when it never sent any, as 2.0 nodes), so `node_states?all=true`
# tells never-connected clients apart and labels survive a restart.
_V6 = """
CREATE TABLE node_inventory (
    org_name    TEXT NOT NULL,
    node_name   TEXT NOT NULL,
    labels      TEXT,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    PRIMARY KEY (org_name, node_name)
);
"""

# MIGRATIONS[i] brings the schema from version i to version i + 1.
MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4, _V5, _V6]
LATEST_VERSION = len(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of the database (0 when empty)."""
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def apply_migrations(conn: sqlite3.Connection) -> list[int]:
    """Apply every pending migration (each in its own transaction); returns the versions applied.

    `conn` must be in autocommit mode (`isolation_level=None`). Raises `RuntimeError` when the
    database is newer than this code.
    """
    applied: list[int] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = current_version(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if version > LATEST_VERSION:
        raise RuntimeError(
            f"database schema version {version} is newer than this pushjobs "
            f"(knows up to {LATEST_VERSION})"
        )
    for index in range(version, LATEST_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check inside the write lock: another process may have migrated meanwhile.
            if current_version(conn) > index:
                conn.execute("COMMIT")
                continue
            for statement in _statements(MIGRATIONS[index]):
                conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (index + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(index + 1)
    return applied


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements (triggers contain inner `;`)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") and not current.strip():
            continue
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements

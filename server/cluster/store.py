"""The cluster's tables in the shared PostgreSQL database (docs/cluster.md): leases, node
presence and the batched messages between servers. Synchronous, run in worker threads.

Times of leases come from the database's clock (`clock_timestamp()`), so servers whose clocks
disagree still agree on who is alive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pushjobs.server.store.postgres import PostgresDatabase

NOTIFY_CHANNEL = "pushjobs_cluster"
PRESENCE = "presence"  # the NOTIFY payload that says node presence changed
EVENTS = "events"  # the NOTIFY payload that says job events were stored
OUTPUT = "output"  # the NOTIFY payload that says captured output was stored
_NOW = "extract(epoch FROM clock_timestamp())"
_TAKEOVER_LOCK = 0x70757369  # pg_advisory_xact_lock key of a takeover


@dataclass(frozen=True, slots=True)
class ServerRow:
    server_id: str
    incarnation: str
    lease_until: float


@dataclass(frozen=True, slots=True)
class PresenceRow:
    org: str
    node: str
    server_id: str
    incarnation: str
    phase: str
    version: str


class ClusterStore:
    """Reads and writes of the cluster tables through one PostgreSQL connection pool."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    # -- leases --------------------------------------------------------------------------------
    def register(self, server_id: str, incarnation: str, lease: float) -> None:
        """Start (or restart) this server: its lease row, and none of its old presence rows."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO cluster_servers (server_id, incarnation, started_at, lease_until) "
                f"VALUES (?, ?, {_NOW}, {_NOW} + ?) ON CONFLICT (server_id) DO UPDATE SET "
                "incarnation = excluded.incarnation, started_at = excluded.started_at, "
                "lease_until = excluded.lease_until",
                (server_id, incarnation, lease),
            )
            conn.execute("DELETE FROM node_presence WHERE server_id = ?", (server_id,))
            conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{PRESENCE}')")

    def renew(self, server_id: str, incarnation: str, lease: float) -> bool:
        """Extend this server's lease; False when its row is gone (another server took it
        over after a stall) or belongs to a newer incarnation."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                f"UPDATE cluster_servers SET lease_until = {_NOW} + ? "
                "WHERE server_id = ? AND incarnation = ?",
                (lease, server_id, incarnation),
            )
            return cursor.rowcount == 1

    def servers(self) -> tuple[float, list[ServerRow]]:
        """The database's time and every server row."""
        with self._db.reading() as conn:
            now = float(conn.execute(f"SELECT {_NOW}").fetchone()[0])
            rows = conn.execute(
                "SELECT server_id, incarnation, lease_until FROM cluster_servers"
            ).fetchall()
        return now, [ServerRow(r[0], r[1], float(r[2])) for r in rows]

    def leave(self, server_id: str, incarnation: str) -> None:
        """Orderly shutdown: this server's lease and presence rows go at once."""
        with self._db.transaction() as conn:
            conn.execute(
                "DELETE FROM cluster_servers WHERE server_id = ? AND incarnation = ?",
                (server_id, incarnation),
            )
            conn.execute("DELETE FROM node_presence WHERE server_id = ?", (server_id,))
            conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{PRESENCE}')")

    def take_over(self, dead: ServerRow, crash_jobs: Callable[[], int]) -> int | None:
        """Clean up after a server whose lease expired, once across the cluster: its presence
        rows, its pending messages and its row go, then `crash_jobs()` marks the jobs it
        coordinated `crashed`; returns their count. None when another server did it."""
        with self._db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_TAKEOVER_LOCK,))
            gone = conn.execute(
                "DELETE FROM cluster_servers WHERE server_id = ? AND incarnation = ? "
                f"AND lease_until < {_NOW}",
                (dead.server_id, dead.incarnation),
            ).rowcount
            if not gone:
                return None
            conn.execute("DELETE FROM node_presence WHERE server_id = ?", (dead.server_id,))
            conn.execute("DELETE FROM cluster_messages WHERE target = ?", (dead.server_id,))
            conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{PRESENCE}')")
        # The jobs are crashed through the job store, after the row is gone: a server that
        # comes back now finds no lease and registers a new one.
        return crash_jobs()

    # -- node presence -------------------------------------------------------------------------
    def write_presence(
        self,
        server_id: str,
        upserts: Sequence[tuple[str, str, str, str, str]],
        gone: Sequence[tuple[str, str]],
    ) -> None:
        """(org, node, incarnation, phase, version) rows now on this server; (org, node) gone."""
        with self._db.transaction() as conn:
            if upserts:
                conn.executemany(
                    "INSERT INTO node_presence (org_name, node_name, server_id, incarnation, "
                    f"phase, version, updated_at) VALUES (?, ?, ?, ?, ?, ?, {_NOW}) "
                    "ON CONFLICT (org_name, node_name) DO UPDATE SET "
                    "server_id = excluded.server_id, incarnation = excluded.incarnation, "
                    "phase = excluded.phase, version = excluded.version, "
                    "updated_at = excluded.updated_at",
                    [(o, n, server_id, i, p, v) for o, n, i, p, v in upserts],
                )
            if gone:
                conn.executemany(
                    "DELETE FROM node_presence WHERE org_name = ? AND node_name = ? "
                    "AND server_id = ?",
                    [(o, n, server_id) for o, n in gone],
                )
            conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{PRESENCE}')")

    def presence(self) -> list[PresenceRow]:
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT org_name, node_name, server_id, incarnation, phase, version "
                "FROM node_presence"
            ).fetchall()
        return [PresenceRow(*row) for row in rows]

    # -- job events ------------------------------------------------------------------------------
    def write_events(
        self, source: str, events: Sequence[tuple[str, int, str, bytes]], output: bool = False
    ) -> None:
        """Store (job id, seq, name, SSE bytes) events of `source` and tell every server; with
        `output`, also tell them that `source` stored captured output since the last call."""
        with self._db.transaction() as conn:
            if events:
                conn.executemany(
                    "INSERT INTO job_events (job_id, seq, name, wire, source) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(*event, source) for event in events],
                )
                conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{EVENTS}')")
            if output:
                conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{OUTPUT}')")

    def job_events(self, job_id: str, after: int) -> list[tuple[int, str, bytes]]:
        """(seq, name, SSE bytes) of the job's stored events after `after`, in order."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT seq, name, wire FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
                (job_id, after),
            ).fetchall()
        return [(int(r[0]), r[1], bytes(r[2])) for r in rows]

    def last_event_id(self) -> int:
        """Where an org-feed follower starts: after every event stored so far."""
        with self._db.reading() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM job_events").fetchone()[0])

    def org_feed_events(self, after: int, me: str) -> list[tuple[int, str, str, str, bytes]]:
        """(id, org, job id, name, SSE bytes) of other servers' `start`/`job_complete`
        events stored after `after`."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT e.id, o.name, e.job_id, e.name, e.wire FROM job_events e "
                "JOIN jobs j ON j.id = e.job_id JOIN orgs o ON o.id = j.org_id "
                "WHERE e.id > ? AND e.name IN ('start', 'job_complete') AND e.source <> ? "
                "ORDER BY e.id",
                (after, me),
            ).fetchall()
        return [(int(r[0]), r[1], r[2], r[3], bytes(r[4])) for r in rows]

    # -- messages between servers --------------------------------------------------------------
    def post(self, source: str, messages: Sequence[tuple[str, bytes]]) -> None:
        """Queue (target, body) messages and wake their targets."""
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO cluster_messages (target, source, body, created_at) "
                f"VALUES (?, ?, ?, {_NOW})",
                [(target, source, body) for target, body in messages],
            )
            for target in sorted({target for target, _ in messages}):
                conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', ?)", (target,))

    def take(self, target: str) -> list[tuple[str, bytes]]:
        """Remove and return the (source, body) messages for `target`, oldest first."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "WITH taken AS (DELETE FROM cluster_messages WHERE target = ? "
                "RETURNING id, source, body) SELECT source, body FROM taken ORDER BY id",
                (target,),
            ).fetchall()
        return [(row[0], bytes(row[1])) for row in rows]

"""The cluster's background work on each server (docs/cluster.md), around the pure view and
the outbox: the lease, node presence written and read, messages sent and received, and the
takeover after a server whose lease expired.

Every loop survives the database going away: it logs, waits a second and goes on.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
import trio

from pushjobs.server.cluster.store import (
    EVENTS,
    NOTIFY_CHANNEL,
    OUTPUT,
    PRESENCE,
    ClusterStore,
    ServerRow,
)
from pushjobs.server.jobs.live import Notifier
from pushjobs.server.principals.requestor import Requestor
from pushjobs.server.store.interfaces import StoreError
from pushjobs.server.store.records import Org

if TYPE_CHECKING:
    from pushjobs.server.cluster.nodes import ClusterNodes, Outbox
    from pushjobs.server.cluster.presence import PresenceView
    from pushjobs.server.cluster.relay import Inbox
    from pushjobs.server.jobs.events import FeedEvent
    from pushjobs.server.nodes.state import NodeState
    from pushjobs.server.store.interfaces import JobStore


class LocalNodes(Protocol):
    """This server's own node states (to publish them all again after rejoining)."""

    def states(self) -> list[NodeState]: ...


log = logging.getLogger("pushjobs.server.cluster")

PRESENCE_FLUSH_DELAY = 0.1  # seconds presence changes are gathered before one write
# Seconds at least between two reads of every node's presence: while thousands of nodes connect,
# each server writes a batch every PRESENCE_FLUSH_DELAY; re-reading the whole table after each
# one cost every server a core's third at 9,000 nodes (bench/cluster.py).
PRESENCE_READ_GAP = 1.0
RETRY_DELAY = 1.0
RETRY_LOG_INTERVAL = 30.0
_Key = tuple[str, str]


def _event_data(wire: bytes) -> dict[str, Any] | None:
    """The `data` object of one stored SSE event."""
    for line in wire.decode("utf-8", "replace").splitlines():
        if line.startswith("data: "):
            try:
                data = json.loads(line[len("data: ") :])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


class OrgFeeds(Protocol):
    """The job manager, as far as other servers reach it: their jobs' org-feed events, and
    aborts sent to them for jobs this server coordinates."""

    def relay_org_event(self, org: str, job_id: str, name: str, data: dict[str, Any]) -> None: ...
    async def abort_job(self, org: Org, job_id: str, requestor: Requestor) -> object: ...


class PresenceWriter:
    """The registry's presence sink: changes gathered per node, the last one wins."""

    def __init__(self) -> None:
        self.pending: dict[_Key, tuple[str, str, str] | None] = {}
        self.wakeup = trio.Event()

    def changed(self, org: str, node: str, state: NodeState | None) -> None:
        self.pending[(org, node)] = (
            None if state is None else (state.incarnation_id, state.phase.value, state.version)
        )
        self.wakeup.set()

    def take(self) -> dict[_Key, tuple[str, str, str] | None]:
        """The gathered changes; the writer starts empty again."""
        pending, self.pending = self.pending, {}
        self.wakeup = trio.Event()
        return pending

    def put_back(self, taken: dict[_Key, tuple[str, str, str] | None]) -> None:
        """Changes whose write failed, to be written again (changes made since win)."""
        self.pending = {**taken, **self.pending}
        self.wakeup.set()


class EventWriter:
    """The job manager's event sink: events gathered until the next write, and whether output
    was written since (the other servers' live output readers then look again)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, int, str, bytes]] = []
        self.output_written = False
        self.wakeup = trio.Event()

    def recorded(self, job_id: str, event: FeedEvent) -> None:
        self.pending.append((job_id, event.seq, event.name, event.wire))
        self.wakeup.set()

    def outputs_written(self) -> None:
        self.output_written = True
        self.wakeup.set()

    def take(self) -> tuple[list[tuple[str, int, str, bytes]], bool]:
        pending, self.pending = self.pending, []
        output, self.output_written = self.output_written, False
        self.wakeup = trio.Event()
        return pending, output


class Listener:
    """LISTEN on the cluster channel with a connection of its own (in a worker thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def wait(self, timeout: float) -> list[str]:
        """Payloads of the notifications that arrive within `timeout` (at least one, or none)."""
        import psycopg

        try:
            if self._conn is None:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            payloads = [n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)]
            # whatever else is already there, without waiting
            payloads += [n.payload for n in self._conn.notifies(timeout=0)]
            return payloads
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cluster notifications: {exc}") from None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class ClusterService:
    """This server's part in the cluster."""

    def __init__(
        self,
        *,
        server_id: str,
        incarnation: str,
        lease: float,
        store: ClusterStore,
        listener: Listener,
        jobs_store: JobStore,
        view: PresenceView,
        nodes: ClusterNodes,
        outbox: Outbox,
        inbox: Inbox,
        presence: PresenceWriter,
        registry: LocalNodes,
        events: EventWriter,
        org_feeds: OrgFeeds,
    ) -> None:
        self.server_id = server_id
        self.incarnation = incarnation
        self.lease = lease
        self.store = store
        self.listener = listener
        self.jobs_store = jobs_store
        self.view = view
        self.nodes = nodes
        self.outbox = outbox
        self.inbox = inbox
        self.presence = presence
        self.registry = registry
        self.events = events
        self.org_feeds = org_feeds
        self.events_changed = Notifier()  # job events of any server were stored
        self.output_changed = Notifier()  # captured output of any server was stored
        self.alive: set[str] = {server_id}
        # when this server last started reaching the database again (None: not reaching it);
        # it judges other servers only after a whole lease of its own contact
        self._connected_since: float | None = None
        self._warned: dict[str, float] = {}
        self._spawn: Any = None  # the service nursery's start_soon, once running
        self._org_events = trio.Event()
        self._presence_changed = trio.Event()
        self._inbox_ready = trio.Event()
        self._limiter = trio.CapacityLimiter(1)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self._call(self.store.register, self.server_id, self.incarnation, self.lease)
        log.info(
            "cluster: server %s joined (lease %g s, renewed every %g s)",
            self.server_id,
            self.lease,
            self.lease / 3,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen)
                nursery.start_soon(self._lease_loop)
                nursery.start_soon(self._presence_writer)
                nursery.start_soon(self._presence_reader)
                nursery.start_soon(self._sender)
                nursery.start_soon(self._receiver)
                nursery.start_soon(self._event_writer)
                nursery.start_soon(self._org_feed_follower)
                self._spawn = nursery.start_soon
                task_status.started()
        finally:
            self.listener.close()

    async def leave(self) -> None:
        """Orderly shutdown: the lease and this server's presence rows go at once."""
        try:
            await self._call(self.store.leave, self.server_id, self.incarnation)
        except StoreError as exc:
            log.warning("cluster: could not leave cleanly (%s)", exc.message)

    # -- loops -------------------------------------------------------------------------------
    async def _retry(self, what: str, exc: StoreError) -> None:
        # one line per task and RETRY_LOG_INTERVAL while the database stays away
        now = trio.current_time()
        if now - self._warned.get(what, -RETRY_LOG_INTERVAL) >= RETRY_LOG_INTERVAL:
            self._warned[what] = now
            log.warning(
                "cluster: %s failed (%s); retrying every %g s", what, exc.message, RETRY_DELAY
            )
        await trio.sleep(RETRY_DELAY)

    async def _listen(self) -> None:
        while True:
            try:
                payloads = await trio.to_thread.run_sync(
                    self.listener.wait, 1.0, abandon_on_cancel=True
                )
            except StoreError as exc:
                await self._retry("listening", exc)
                self._presence_changed.set()  # read what was missed meanwhile
                self._inbox_ready.set()
                self.events_changed.notify()
                self.output_changed.notify()
                continue
            for payload in payloads:
                if payload == PRESENCE:
                    self._presence_changed.set()
                elif payload == EVENTS:
                    self.events_changed.notify()
                    self._org_events.set()
                elif payload == OUTPUT:
                    self.output_changed.notify()
                elif payload == self.server_id:
                    self._inbox_ready.set()

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self._lease_round()
            except StoreError as exc:
                self._connected_since = None
                await self._retry("renewing the lease", exc)
                continue
            await trio.sleep(self.lease / 3)

    def _judging(self) -> bool:
        """True once this server has reached the database for a whole lease: after an outage
        every server's lease looks expired until it has renewed it, and none must be taken
        for dead meanwhile."""
        since = self._connected_since
        return since is not None and trio.current_time() - since >= self.lease

    async def _lease_round(self) -> None:
        if not await self._call(self.store.renew, self.server_id, self.incarnation, self.lease):
            log.error(
                "cluster: this server's lease was taken over (it stalled past %g s); rejoining",
                self.lease,
            )
            await self._call(self.store.register, self.server_id, self.incarnation, self.lease)
            self._republish()
        if self._connected_since is None:
            self._connected_since = trio.current_time()
        now, rows = await self._call(self.store.servers)
        judging = self._judging()
        alive = {row.server_id for row in rows if row.lease_until >= now or not judging}
        alive.add(self.server_id)
        if alive != self.alive:
            log.info("cluster: servers alive: %s", ", ".join(sorted(alive)))
            self.alive = alive
            self._presence_changed.set()
        for row in rows:
            if row.server_id not in alive and judging:
                await self._take_over(row)
        self._presence_changed.set()  # a periodic re-read, whatever NOTIFY said

    def _republish(self) -> None:
        """Write every local node's presence again (registering dropped the old rows)."""
        for state in self.registry.states():
            self.presence.changed(state.org, state.node, state)

    async def _take_over(self, dead: ServerRow) -> None:
        def crash() -> int:
            return self.jobs_store.mark_interrupted_crashed(time.time(), dead.server_id)

        crashed = await self._call(self.store.take_over, dead, crash)
        if crashed is not None:
            log.warning(
                "cluster: server %s is gone (lease expired); its %d unfinished job(s) are "
                "crashed and its nodes offline",
                dead.server_id,
                crashed,
            )

    async def _presence_writer(self) -> None:
        while True:
            await self.presence.wakeup.wait()
            await trio.sleep(PRESENCE_FLUSH_DELAY)
            taken = self.presence.take()
            upserts = [(o, n, *v) for (o, n), v in taken.items() if v is not None]
            gone = [key for key, v in taken.items() if v is None]
            try:
                await self._call(self.store.write_presence, self.server_id, upserts, gone)
            except StoreError as exc:
                self.presence.put_back(taken)
                await self._retry("writing node presence", exc)

    def is_alive(self, server_id: str) -> bool:
        """True while `server_id` holds a lease (as of the last lease round)."""
        return server_id in self.alive

    async def events_after(self, job_id: str, seq: int) -> list[tuple[int, str, bytes]]:
        """The stored events of a job after `seq` (a job feed of another server's job)."""
        return await trio.to_thread.run_sync(self.store.job_events, job_id, seq)

    async def _event_writer(self) -> None:
        while True:
            await self.events.wakeup.wait()
            await trio.sleep(PRESENCE_FLUSH_DELAY)
            batch, output = self.events.take()
            while True:  # the same batch until stored: feeds elsewhere must miss nothing
                try:
                    await self._call(self.store.write_events, self.server_id, batch, output)
                    break
                except StoreError as exc:
                    await self._retry("storing job events", exc)

    async def _org_feed_follower(self) -> None:
        """Other servers' `start`/`job_complete` events into this server's org feeds."""
        cursor: int | None = None
        while True:
            try:
                if cursor is None:
                    cursor = await self._call(self.store.last_event_id)
                rows = await self._call(self.store.org_feed_events, cursor, self.server_id)
            except StoreError as exc:
                await self._retry("following the org feeds", exc)
                continue
            for event_id, org, job_id, name, wire in rows:
                cursor = event_id
                data = _event_data(wire)
                if data is not None:
                    self.org_feeds.relay_org_event(org, job_id, name, data)
            with trio.move_on_after(self.lease / 3):
                await self._org_events.wait()
            self._org_events = trio.Event()

    async def _presence_reader(self) -> None:
        while True:
            with trio.move_on_after(self.lease / 3):
                await self._presence_changed.wait()
            self._presence_changed = trio.Event()
            try:
                rows = await self._call(self.store.presence)
            except StoreError as exc:
                await self._retry("reading node presence", exc)
                continue
            gone = self.view.update(rows, self.alive)
            if gone:
                log.debug("cluster: %d node(s) left other servers: %s", len(gone), gone[:10])
                self.nodes.remote_gone(gone)
            await trio.sleep(PRESENCE_READ_GAP)

    async def _sender(self) -> None:
        while True:
            await self.outbox.wakeup.wait()
            batches = self.outbox.take()
            messages = [
                (target, msgpack.packb(entries, use_bin_type=True))
                for target, entries in batches.items()
            ]
            while True:  # the same batch again until it is stored: nothing is lost
                try:
                    await self._call(self.store.post, self.server_id, messages)
                    break
                except StoreError as exc:
                    await self._retry(f"sending to {', '.join(sorted(batches))}", exc)

    async def _receiver(self) -> None:
        while True:
            with trio.move_on_after(1.0):
                await self._inbox_ready.wait()
            self._inbox_ready = trio.Event()
            try:
                messages = await self._call(self.store.take, self.server_id)
            except StoreError as exc:
                await self._retry("receiving messages", exc)
                continue
            for source, body in messages:
                try:
                    entries = msgpack.unpackb(body, raw=False)
                except (ValueError, msgpack.UnpackException) as exc:
                    log.warning("cluster: unreadable message from %s dropped: %s", source, exc)
                    continue
                for entry in entries if isinstance(entries, list) else [entries]:
                    if isinstance(entry, dict) and entry.get("k") == "abort":
                        self._spawn(self._abort, source, entry)
                    else:
                        self.inbox.handle(source, entry)

    async def relay_abort(self, coordinator: str, org: str, job_id: str, by: Requestor) -> None:
        """An abort sent here for a job `coordinator` runs: passed on to it."""
        entry = {"k": "abort", "org": org, "job": job_id, "by": by.name, "by_type": by.type}
        body = msgpack.packb([entry], use_bin_type=True)
        await self._call(self.store.post, self.server_id, [(coordinator, body)])

    async def _abort(self, source: str, entry: dict[str, Any]) -> None:
        try:
            org = Org(id="", name=str(entry["org"]), full_name="", created_at=0.0)
            by = Requestor(str(entry["by"]), str(entry["by_type"]))
        except (KeyError, TypeError) as exc:
            log.warning("cluster: abort from %s ignored: %s", source, exc)
            return
        try:
            await self.org_feeds.abort_job(org, str(entry["job"]), by)
            log.info("cluster: job %s aborted on behalf of server %s", entry["job"], source)
        except Exception as exc:  # not found, or finished meanwhile: the sender reads the store
            log.info("cluster: abort of job %s from %s not done: %r", entry["job"], source, exc)

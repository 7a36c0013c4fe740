"""Start, run and stop the server process: the composition root.

`build_server` is the only place that constructs the server's parts — the stores, the principal
backend, the session keys, the node registry, the job manager, the broker and the key watch —
and hands each exactly the collaborators it uses. `serve` runs them in one trio run; the HTTP
app is built once the broker has bound, from the ports its `run` reports. Nothing is filled in
later and no part writes back into what was built here.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import trio
import zmq
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from pushjobs.protocol.errors import KeyFormatError
from pushjobs.protocol.keys import load_private_key, public_key_pem
from pushjobs.protocol.timestamps import StrictClock
from pushjobs.server.cluster.nodes import ClusterNodes, Outbox
from pushjobs.server.cluster.presence import PresenceView
from pushjobs.server.cluster.relay import ClusterJobs, Inbox
from pushjobs.server.cluster.service import (
    ClusterService,
    EventWriter,
    Listener,
    PresenceWriter,
)
from pushjobs.server.cluster.store import ClusterStore
from pushjobs.server.errors import StartupError
from pushjobs.server.http.app import create_app
from pushjobs.server.http.deps import HttpDeps, NodeStates
from pushjobs.server.jobs.manager import JobManager
from pushjobs.server.metrics.collectors import LiveCollector
from pushjobs.server.metrics.endpoint import serve_metrics
from pushjobs.server.metrics.instruments import ServerMetrics
from pushjobs.server.nodes.inventory import InventoryRecorder
from pushjobs.server.nodes.registry import NodeRegistry
from pushjobs.server.nodes.revocation import KeyWatch
from pushjobs.server.nodes.sessions import SessionKeys
from pushjobs.server.principals.cache import PrincipalCache
from pushjobs.server.principals.cached import CachedPrincipals
from pushjobs.server.principals.embedded import EmbeddedPrincipals
from pushjobs.server.principals.watch import PrincipalWatch
from pushjobs.server.retention.plan import RetentionPolicy
from pushjobs.server.retention.service import RetentionService
from pushjobs.server.store.interfaces import AsyncStore, StoreError
from pushjobs.server.store.opening import open_store, store_exists, store_name
from pushjobs.server.store.postgres import PostgresDatabase
from pushjobs.server.zeromq.broker import BoundPorts, Broker
from pushjobs.server.zeromq.broker import JobEngine as BrokerJobs

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from hypercorn.typing import Framework
    from starlette.applications import Starlette

    from pushjobs.server.config import Settings
    from pushjobs.server.principals.rules import PrincipalBackend

log = logging.getLogger("pushjobs.server")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this server process is: the same for every part, for the whole run."""

    incarnation_id: str
    server_key: RSAPrivateKey
    server_public_pem: str


@dataclass(frozen=True, slots=True)
class CurveKeyPair:
    """The command socket's CURVE key pair (Z85 text), new for every run."""

    public: str
    secret: str


@dataclass(frozen=True, slots=True)
class Server:
    """Every long-lived part of one server process, as `build_server` wired them."""

    settings: Settings
    identity: Identity
    curve: CurveKeyPair | None  # None with `zeromq.disable_curve_encryption`
    store: AsyncStore
    principals: PrincipalBackend
    http_principals: PrincipalBackend  # what authentication reads: `principals`, or its cache
    fresh_principals: PrincipalBackend | None  # the cache's database view; None: no cache
    principal_watch: PrincipalWatch | None  # keeps the cache current; None: no cache
    sessions: SessionKeys
    nodes: NodeRegistry
    inventory: InventoryRecorder
    jobs: JobManager
    broker: Broker
    key_watch: KeyWatch
    node_view: NodeStates  # every node HTTP answers for: this server's, or the cluster's
    cluster: ClusterService | None  # None with the SQLite store
    metrics: ServerMetrics | None  # None with `[metrics] port = 0` (off)
    retention: RetentionService


def configure_logging(level: str, log_file: str | os.PathLike[str] | None) -> None:
    """One line per event, UTC timestamps, to the log file or stderr.

    The file handler reopens the path when logrotate has moved the file away (and on SIGHUP),
    so rotation needs no `copytruncate`.
    """
    handler: logging.Handler
    if log_file:
        handler = logging.handlers.WatchedFileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # hypercorn logs every request at info through its own loggers; keep them quieter.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)


def reopen_log_files() -> None:
    """SIGHUP after log rotation: reopen the log file if its path now names another file."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.handlers.WatchedFileHandler):
            handler.reopenIfNeeded()


def warn_if_exposed(path: Path, what: str) -> bool:
    """Log a warning when the private key file at `path` is readable by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & 0o044 == 0:
        return False
    log.warning(
        "%s %s is readable by group or others (mode %04o); run: chmod 600 %s",
        what,
        path,
        mode & 0o7777,
        path,
    )
    return True


def load_server_key(path: Path) -> RSAPrivateKey:
    """Load the persistent server RSA key; StartupError when it is missing or unreadable."""
    warn_if_exposed(path, "server private key")
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise StartupError(f"{path} not found; run pushjobs-server init first") from None
    except OSError as exc:
        raise StartupError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return load_private_key(pem)
    except KeyFormatError as exc:
        raise StartupError(f"{path} is not an RSA private key: {exc}") from None


def build_principals(settings: Settings, store: AsyncStore) -> PrincipalBackend:
    """The principal backend named by `[principals] backend` (http-api.md §9)."""
    if settings.principals.backend == "chef-server":
        # Imported only when configured: the embedded default does not need an HTTP client.
        from pushjobs.server.principals.chef_server import (
            ChefBackendConfigError,
            ChefServerPrincipals,
        )

        try:
            backend = ChefServerPrincipals(settings, store=store)
        except ChefBackendConfigError as exc:
            raise StartupError(str(exc)) from None
        if settings.principals.superuser_key is not None:
            warn_if_exposed(Path(settings.principals.superuser_key), "Chef superuser key")
        return backend
    return EmbeddedPrincipals(store)


def build_principal_cache(
    settings: Settings, principals: PrincipalBackend
) -> tuple[PrincipalBackend, PrincipalBackend | None, PrincipalWatch | None]:
    """Authentication's backend, the same without its cache (for refused requests) and the
    task following the database's change log: the embedded backend over SQLite gets a cache
    (security.md §1). Others stay as they are: chef-server caches by itself, and a cluster's
    servers answer 503 from the first request of a PostgreSQL outage on, which answers from
    memory would hide."""
    if not isinstance(principals, EmbeddedPrincipals) or settings.store.backend != "sqlite":
        return principals, None, None
    cache = PrincipalCache()
    cached = CachedPrincipals(principals, cache)
    watch = PrincipalWatch(changes=principals, cache=cache, warm=cached.warm)
    return cached, cached.fresh(), watch


def curve_key_pair(settings: Settings) -> CurveKeyPair | None:
    """A new CURVE key pair for the command socket; None when CURVE is disabled."""
    if settings.zeromq.disable_curve_encryption:
        return None
    if not zmq.has("curve"):
        raise StartupError(
            "this libzmq has no CURVE support; install one that has, or set "
            "zeromq.disable_curve_encryption = true"
        )
    public, secret = zmq.curve_keypair()
    return CurveKeyPair(public.decode("ascii"), secret.decode("ascii"))


def build_server(settings: Settings) -> Server:
    """Open the store (migrations, crash recovery) and construct every part; no sockets yet."""
    if not store_exists(settings):
        raise StartupError(f"{settings.database_path} not found; run pushjobs-server init first")
    server_key = load_server_key(settings.server_key_path)
    if settings.http.tls_key:
        warn_if_exposed(Path(settings.http.tls_key), "TLS private key")
    identity = Identity(
        incarnation_id=str(uuid.uuid4()),
        server_key=server_key,
        server_public_pem=public_key_pem(server_key.public_key()),
    )
    try:
        sync_store = open_store(settings)
    except StoreError as exc:
        raise StartupError(f"cannot open the {store_name(settings)}: {exc}") from None
    log.info("store: %s (schema version %d)", store_name(settings), sync_store.schema_version())
    clustered = settings.store.backend == "postgresql"
    server_id = settings.cluster.server_id
    crashed = sync_store.mark_interrupted_crashed(time.time(), server_id if clustered else None)
    if crashed:
        log.info("marked %d interrupted job(s) crashed", crashed)
    # Built only when served: with metrics off nothing on a hot path records anything.
    metrics = ServerMetrics() if settings.metrics.port else None
    store_timer = metrics.store if metrics is not None else None
    store = AsyncStore(sync_store, store_timer)
    # Authentication reads on a connection (and worker thread) of its own, so signed requests
    # never queue behind a job's batched writes; WAL (or PostgreSQL) lets both proceed at once.
    principals = build_principals(settings, AsyncStore(open_store(settings), store_timer))
    http_principals, fresh_principals, principal_watch = build_principal_cache(settings, principals)
    sessions = SessionKeys(lifetime=settings.timing.config_lifetime)
    nodes = NodeRegistry(timing=settings.timing, sessions=sessions)
    inventory = InventoryRecorder(store)
    nodes.record(inventory)
    cluster: ClusterService | None = None
    node_view: NodeStates = nodes
    if clustered:
        view = PresenceView(server_id)
        outbox = Outbox()
        presence = PresenceWriter()
        events = EventWriter()
        cluster_nodes = ClusterNodes(nodes, view, outbox, presence)
        nodes.observe(cluster_nodes)
        jobs = JobManager(
            settings=settings,
            store=store,
            nodes=cluster_nodes,
            clock=StrictClock(),
            event_sink=events,
            outcomes=metrics.jobs if metrics is not None else None,
        )
        relay = ClusterJobs(jobs, outbox)
        engine: BrokerJobs = relay
        assert settings.store.url is not None
        cluster = ClusterService(
            server_id=server_id,
            incarnation=identity.incarnation_id,
            lease=settings.cluster.lease,
            store=ClusterStore(PostgresDatabase(settings.store.url, max_size=2)),
            listener=Listener(settings.store.url),
            jobs_store=sync_store,
            view=view,
            nodes=cluster_nodes,
            outbox=outbox,
            inbox=Inbox(nodes, relay, outbox),
            presence=presence,
            registry=nodes,
            events=events,
            org_feeds=jobs,
        )
        node_view = cluster_nodes
    else:
        jobs = JobManager(
            settings=settings,
            store=store,
            nodes=nodes,
            clock=StrictClock(),
            outcomes=metrics.jobs if metrics is not None else None,
        )
        engine = jobs
    curve = curve_key_pair(settings)
    broker = Broker(
        settings=settings,
        curve_secret=curve.secret if curve is not None else None,
        server_key=identity.server_key,
        incarnation_id=identity.incarnation_id,
        sessions=sessions,
        nodes=nodes,
        jobs=engine,
        orgs=principals,
    )
    key_watch = KeyWatch(
        principals=principals,
        sessions=sessions,
        nodes=nodes,
        # Only the embedded backend's database records key changes; others are re-read.
        changes=principals if isinstance(principals, EmbeddedPrincipals) else None,
    )
    if metrics is not None:
        metrics.add(LiveCollector(nodes=nodes, jobs=jobs, broker=broker.stats))
    retention = RetentionService(
        RetentionPolicy(
            jobs=settings.retention.jobs,
            output=settings.retention.output,
            interval=settings.retention.interval,
        ),
        store,
    )
    return Server(
        settings=settings,
        identity=identity,
        curve=curve,
        store=store,
        principals=principals,
        http_principals=http_principals,
        fresh_principals=fresh_principals,
        principal_watch=principal_watch,
        sessions=sessions,
        nodes=nodes,
        inventory=inventory,
        jobs=jobs,
        broker=broker,
        key_watch=key_watch,
        node_view=node_view,
        cluster=cluster,
        metrics=metrics,
        retention=retention,
    )


def http_deps(server: Server, ports: BoundPorts) -> HttpDeps:
    """What the HTTP layer gets, once the broker has bound `ports`."""
    return HttpDeps(
        settings=server.settings,
        store=server.store,
        principals=server.http_principals,
        fresh_principals=server.fresh_principals,
        sessions=server.sessions,
        nodes=server.node_view,
        jobs=server.jobs,
        incarnation_id=server.identity.incarnation_id,
        server_public_pem=server.identity.server_public_pem,
        curve_public=server.curve.public if server.curve is not None else None,
        heartbeat_port=ports.heartbeat_port,
        command_port=ports.command_port,
        stored_events=server.cluster,
        inventory=server.store,
        abort_relay=server.cluster,
    )


def hypercorn_config(settings: Settings) -> Config:
    """hypercorn's settings for the HTTP API (also used by `bench/http_load.py`'s floor)."""
    config = Config()
    host = settings.http.bind
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    config.bind = [f"{host}:{settings.http.port}"]
    if settings.http.tls_cert and settings.http.tls_key:
        config.certfile = str(settings.http.tls_cert)
        config.keyfile = str(settings.http.tls_key)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 75.0
    return config


def _write_state_file(
    path: Path,
    incarnation_id: str,
    http_url: str,
    ports: BoundPorts,
    metrics_url: str | None = None,
) -> None:
    state: dict[str, object] = {
        "pid": os.getpid(),
        "incarnation_id": incarnation_id,
        "http_url": http_url,
        "heartbeat_port": ports.heartbeat_port,
        "command_port": ports.command_port,
    }
    if metrics_url is not None:
        state["metrics_url"] = metrics_url
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state) + "\n")
    os.replace(tmp, path)


def _local_url(bind_url: str) -> str:
    """Turn hypercorn's reported bind (`http://0.0.0.0:10003`) into a URL usable on this machine."""
    scheme, _, rest = bind_url.partition("://")
    host, _, port = rest.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


async def serve(server: Server) -> None:
    """Run every part until SIGTERM/SIGINT, then shut down gracefully."""
    settings = server.settings
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, shutdown)
            ports = await _start_broker(nursery, server)
            await nursery.start(server.jobs.run)
            await nursery.start(server.inventory.run)
            if server.cluster is not None:
                await nursery.start(server.cluster.run)
            # Before HTTP: the key-change baseline must precede the first session key.
            await nursery.start(server.key_watch.run)
            if server.principal_watch is not None:
                await nursery.start(server.principal_watch.run)
            app = create_app(
                http_deps(server, ports),
                metrics=server.metrics.http if server.metrics is not None else None,
            )
            http_stopped = trio.Event()
            binds = await _start_http(nursery, app, settings, shutdown, http_stopped)
            http_url = _local_url(binds[0])
            log.info("http: listening on %s", ", ".join(binds))
            metrics_url = None
            if server.metrics is not None:
                metrics_binds = await _start_metrics(nursery, server.metrics, settings, shutdown)
                metrics_url = _local_url(metrics_binds[0]) + "/metrics"
                log.info("metrics: serving /metrics on %s", ", ".join(metrics_binds))
            await nursery.start(server.retention.run)
            _write_state_file(
                settings.server_info_path,
                server.identity.incarnation_id,
                http_url,
                ports,
                metrics_url,
            )
            log.info("server ready, incarnation %s", server.identity.incarnation_id)
            await shutdown.wait()
            # HTTP stops accepting at once (shutdown trigger); live jobs are marked crashed and
            # their open feeds get `job_complete` while hypercorn's graceful timeout runs.
            with trio.move_on_after(10):
                await server.jobs.shutdown()
            if server.cluster is not None:
                with trio.move_on_after(5):
                    await server.cluster.leave()
            with trio.move_on_after(5):
                await http_stopped.wait()
            nursery.cancel_scope.cancel()
    settings.server_info_path.unlink(missing_ok=True)
    log.info("server stopped")


async def _watch_signals(signals: AsyncIterator[int], shutdown: trio.Event) -> None:
    async for signum in signals:
        if signum == signal.SIGHUP:
            reopen_log_files()
            log.info("received SIGHUP, log file reopened")
            continue
        log.info("received %s, shutting down", signal.Signals(signum).name)
        shutdown.set()
        return


async def _start_broker(nursery: trio.Nursery, server: Server) -> BoundPorts:
    """Bind the ZeroMQ sockets; StartupError naming the address when one cannot be bound."""
    try:
        ports: BoundPorts = await nursery.start(server.broker.run)
    except* zmq.ZMQError as group:
        raise StartupError(_zmq_bind_error(_first(group, zmq.ZMQError))) from None
    log.info(
        "zeromq: heartbeat PUB on port %d, command ROUTER on port %d (%s)",
        ports.heartbeat_port,
        ports.command_port,
        "CURVE disabled" if server.settings.zeromq.disable_curve_encryption else "CURVE",
    )
    return ports


async def _start_http(
    nursery: trio.Nursery,
    app: Starlette,
    settings: Settings,
    shutdown: trio.Event,
    stopped: trio.Event,
) -> list[str]:
    """Start hypercorn; returns its binds. `stopped` is set once it has stopped serving."""

    async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await hypercorn_serve(
                # Starlette types ASGI scopes as plain mappings, hypercorn as TypedDicts.
                cast("Framework", app),
                hypercorn_config(settings),
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )
        finally:
            stopped.set()

    try:
        binds: list[str] = await nursery.start(run_http)
    except* OSError as group:
        exc = _first(group, OSError)
        reason = getattr(exc, "strerror", None) or exc
        raise StartupError(
            f"cannot bind {settings.http.bind}:{settings.http.port}: {reason}"
        ) from None
    return binds


async def _start_metrics(
    nursery: trio.Nursery, metrics: ServerMetrics, settings: Settings, shutdown: trio.Event
) -> list[str]:
    """Start the `/metrics` listener; returns its binds (StartupError when it cannot bind)."""
    try:
        binds: list[str] = await nursery.start(
            serve_metrics, metrics.registry, settings.metrics, shutdown
        )
    except* OSError as group:
        exc = _first(group, OSError)
        reason = getattr(exc, "strerror", None) or exc
        raise StartupError(
            f"cannot bind {settings.metrics.bind}:{settings.metrics.port} (metrics): {reason}"
        ) from None
    return binds


def run_server(settings: Settings) -> int:
    """Entry point of `pushjobs-server run`: returns the process exit status."""
    configure_logging(settings.log_level, settings.log_file)
    log.info(
        "pushjobs-server starting: data dir %s, server name %s",
        settings.data_dir,
        settings.server_name,
    )
    try:
        server = build_server(settings)
        log.info("incarnation %s", server.identity.incarnation_id)
        trio.run(serve, server)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        startup = _first(group, StartupError)
        if startup is not None:
            print(f"error: {startup}", file=sys.stderr)
            return 1
        log.exception("server failed")
        return 1
    return 0


def _zmq_bind_error(exc: BaseException | None) -> str:
    """`cannot bind <address>: <reason>` from a pyzmq bind error (its text names the address)."""
    text = str(exc)
    match = re.search(r"\(addr='([^']*)'\)", text)
    if match is None:
        return f"cannot bind the ZeroMQ sockets: {text}"
    reason = text[: match.start()].strip()
    return f"cannot bind {match.group(1)}: {reason}"


def _first(group: BaseExceptionGroup, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` anywhere inside a (nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
    return None

"""Start, run and stop the server process: store, broker, job manager and HTTP in one trio run."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import zmq

from pushjobs.protocol.errors import KeyFormatError
from pushjobs.protocol.keys import load_private_key, public_key_pem
from pushjobs.protocol.timestamps import StrictClock

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from pushjobs.server.config import Settings
    from pushjobs.server.jobs.manager import JobManager
    from pushjobs.server.nodes.registry import NodeRegistry
    from pushjobs.server.nodes.sessions import SessionKeys
    from pushjobs.server.principals.rules import PrincipalBackend
    from pushjobs.server.store.interfaces import AsyncStore
    from pushjobs.server.zeromq.broker import Broker

log = logging.getLogger("pushjobs.server")


class StartupError(Exception):
    """The server cannot start; the message is shown to the operator as `error: <message>`."""


@dataclass
class ServerRuntime:
    """Everything one server process owns; passed to every part (see docs/dev/contracts.md)."""

    settings: Settings
    server_key: RSAPrivateKey
    server_public_pem: str
    incarnation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    clock: StrictClock = field(default_factory=StrictClock)
    curve_public: str | None = None
    curve_secret: str | None = None
    heartbeat_port: int = 0
    command_port: int = 0
    http_port: int = 0
    store: AsyncStore = None  # type: ignore[assignment]
    principals: PrincipalBackend = None  # type: ignore[assignment]
    sessions: SessionKeys = None  # type: ignore[assignment]
    nodes: NodeRegistry = None  # type: ignore[assignment]
    jobs: JobManager = None  # type: ignore[assignment]
    broker: Broker = None  # type: ignore[assignment]
    started_at: float = field(default_factory=time.time)


def configure_logging(level: str, log_file: str | os.PathLike[str] | None) -> None:
    """One line per event, UTC timestamps, to the log file or stderr."""
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
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


def build_principals(settings: Settings, store: Any) -> PrincipalBackend:
    """The principal backend named by `[principals] backend` (http-api.md §9)."""
    if settings.principals.backend == "chef-server":
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
    from pushjobs.server.principals.rules import EmbeddedPrincipals

    return EmbeddedPrincipals(store)


def build_runtime(settings: Settings) -> ServerRuntime:
    """Open the store (migrations, crash recovery) and construct every part; no sockets yet."""
    from pushjobs.server.jobs.manager import JobManager
    from pushjobs.server.nodes.registry import NodeRegistry
    from pushjobs.server.nodes.sessions import SessionKeys
    from pushjobs.server.store.interfaces import AsyncStore
    from pushjobs.server.store.sqlite import SqliteStore
    from pushjobs.server.zeromq.broker import Broker

    db_path = settings.database_path
    if not db_path.exists():
        raise StartupError(f"{db_path} not found; run pushjobs-server init first")
    server_key = load_server_key(settings.server_key_path)
    if settings.http.tls_key:
        warn_if_exposed(Path(settings.http.tls_key), "TLS private key")
    rt = ServerRuntime(
        settings=settings,
        server_key=server_key,
        server_public_pem=public_key_pem(server_key.public_key()),
    )
    sync_store = SqliteStore(db_path)
    crashed = sync_store.mark_interrupted_crashed(time.time())
    if crashed:
        log.info("marked %d interrupted job(s) crashed", crashed)
    rt.store = AsyncStore(sync_store)
    # Authentication reads on a connection (and worker thread) of its own, so signed requests
    # never queue behind a job's batched writes; WAL lets both proceed at once.
    rt.principals = build_principals(settings, AsyncStore(SqliteStore(db_path)))
    rt.sessions = SessionKeys(lifetime=settings.timing.config_lifetime)
    rt.nodes = NodeRegistry(rt)
    rt.jobs = JobManager(rt)
    rt.broker = Broker(rt)
    return rt


def _hypercorn_config(settings: Settings) -> Any:
    from hypercorn.config import Config

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


def _write_state_file(rt: ServerRuntime, http_url: str) -> None:
    state = {
        "pid": os.getpid(),
        "incarnation_id": rt.incarnation_id,
        "http_url": http_url,
        "heartbeat_port": rt.heartbeat_port,
        "command_port": rt.command_port,
    }
    path = rt.settings.server_info_path
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


async def serve(rt: ServerRuntime) -> None:
    """Run every part until SIGTERM/SIGINT, then shut down gracefully."""
    from hypercorn.trio import serve as hypercorn_serve

    from pushjobs.server.http.app import create_app
    from pushjobs.server.nodes.revocation import KeyWatch

    shutdown = trio.Event()
    settings = rt.settings
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    shutdown.set()
                    return

            nursery.start_soon(watch_signals)
            try:
                await nursery.start(rt.broker.run)
            except* zmq.ZMQError as group:
                raise StartupError(_zmq_bind_error(_first(group, zmq.ZMQError))) from None
            log.info(
                "zeromq: heartbeat PUB on port %d, command ROUTER on port %d (%s)",
                rt.heartbeat_port,
                rt.command_port,
                "CURVE disabled" if settings.zeromq.disable_curve_encryption else "CURVE",
            )
            await nursery.start(rt.jobs.run)
            # Before HTTP: the key-change baseline must precede the first session key.
            await nursery.start(KeyWatch(rt).run)
            app = create_app(rt)
            http_stopped = trio.Event()

            async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
                try:
                    await hypercorn_serve(
                        app,
                        _hypercorn_config(settings),
                        shutdown_trigger=shutdown.wait,
                        task_status=task_status,
                    )
                finally:
                    http_stopped.set()

            try:
                binds = await nursery.start(run_http)
            except* OSError as group:
                exc = _first(group, OSError)
                reason = getattr(exc, "strerror", None) or exc
                raise StartupError(
                    f"cannot bind {settings.http.bind}:{settings.http.port}: {reason}"
                ) from None
            http_url = _local_url(binds[0])
            rt.http_port = int(http_url.rsplit(":", 1)[1])
            _write_state_file(rt, http_url)
            log.info("http: listening on %s", ", ".join(binds))
            log.info("server ready, incarnation %s", rt.incarnation_id)
            await shutdown.wait()
            # HTTP stops accepting at once (shutdown trigger); live jobs are marked crashed and
            # their open feeds get `job_complete` while hypercorn's graceful timeout runs.
            with trio.move_on_after(10):
                await rt.jobs.shutdown()
            with trio.move_on_after(5):
                await http_stopped.wait()
            nursery.cancel_scope.cancel()
    settings.server_info_path.unlink(missing_ok=True)
    log.info("server stopped")


def run_server(settings: Settings) -> int:
    """Entry point of `pushjobs-server run`: returns the process exit status."""
    configure_logging(settings.log_level, settings.log_file)
    log.info(
        "pushjobs-server starting: data dir %s, server name %s",
        settings.data_dir,
        settings.server_name,
    )
    try:
        rt = build_runtime(settings)
        log.info("incarnation %s", rt.incarnation_id)
        trio.run(serve, rt)
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

"""The agent process: start-up, reconfigure loop, signals (agent.md §3, §6, §16)."""

from __future__ import annotations

import logging
import signal
import uuid
from collections.abc import Callable
from typing import Any

import trio
import zmq
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from pushjobs.agent.cgroup import JobCgroups
from pushjobs.agent.config import AgentConfig, ConfigError, load_config
from pushjobs.agent.labels import node_labels
from pushjobs.agent.link import Identity, Link
from pushjobs.agent.process import FileDirError, SystemHost, prepare_file_dir
from pushjobs.agent.runner import JobRunner
from pushjobs.agent.session import (
    FetchError,
    ReconfigureSchedule,
    ServerConfig,
    ServerRotation,
    config_url,
    fetch_config,
    jittered_backoff,
    parse_config,
)
from pushjobs.agent.worker import JobWorker

log = logging.getLogger("pushjobs.agent")

RESTART_ONLY_KEYS = (
    "server_url",
    "server_urls",
    "node_name",
    "client_key",
    "ca_file",
    "verify_tls",
    "allow_unencrypted",
)


class StartupError(Exception):
    """A permanent start-up failure (exit status 2)."""


class Agent:
    """One agent process."""

    def __init__(
        self,
        cfg: AgentConfig,
        client_key: RSAPrivateKey,
        *,
        config_path: str,
        overrides: dict[str, Any],
        apply_logging: Callable[[AgentConfig], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.client_key = client_key
        self.config_path = config_path
        self.overrides = overrides
        self.apply_logging = apply_logging
        public, secret = zmq.curve_keypair()
        self.ident = Identity(
            node=cfg.node_name,
            org=cfg.org,
            incarnation_id=str(uuid.uuid4()),
            curve_public=public.decode("ascii"),
            curve_secret=secret.decode("ascii"),
        )
        self.schedule = ReconfigureSchedule()
        self.rotation = ServerRotation(cfg.server_urls or (cfg.server_url,))
        self.exit_code = 0
        self.fatal_message: str | None = None
        self.runner = JobRunner(
            node_name=cfg.node_name,
            whitelist=cfg.whitelist,
            host=SystemHost(),
            file_dir=cfg.file_dir,
            max_run_time=cfg.max_run_time,
            allowed_overwritable_env_vars=cfg.allowed_overwritable_env_vars,
            log=log,
        )
        self.link = Link(
            self.ident,
            on_command=self._on_command,
            on_trigger=self.trigger,
            on_watchdog=self._on_watchdog,
            on_send_failure=self._on_send_failure,
            on_new_incarnation=self._on_new_incarnation,
            on_abandoned=self._on_abandoned,
            job_state=lambda: (self.runner.state, self.runner.job_id),
            log=log,
        )
        self.link.set_labels(node_labels(cfg.labels))
        self.cgroups = JobCgroups.detect(log)
        self.worker = JobWorker(
            self.runner, self.link.send, kill_grace=cfg.kill_grace, log=log, cgroups=self.cgroups
        )
        self._schedule_changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    # ---- entry -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (0) or a permanent start-up failure (2)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._signals)
            nursery.start_soon(self._main)
        return self.exit_code

    async def _main(self) -> None:
        assert self._nursery is not None
        try:
            config = await self._startup()
        except StartupError as exc:
            log.error("%s", exc)
            self.fatal_message = str(exc)
            self.exit_code = 2
            self._nursery.cancel_scope.cancel()
            return
        self.runner.max_output_bytes = config.max_output_bytes
        await self._nursery.start(self.link.run)
        await self._nursery.start(self.worker.run)
        self._adopt(config)
        await self._reconfigure_loop()

    async def _startup(self) -> ServerConfig:
        cfg = self.cfg
        log.info("node %s, org %s, server %s", cfg.node_name, cfg.org, cfg.server_url)
        log.info("client key %s, incarnation %s", cfg.client_key, self.ident.incarnation_id)
        log.info("unencrypted fallback %s", "allowed" if cfg.allow_unencrypted else "not allowed")
        if self.cgroups is not None:
            log.info("job containment: one cgroup per job below %s", self.cgroups.directory)
            self.cgroups.sweep()
        else:
            log.info(
                "job containment: process group only; a job process that calls setsid() "
                "survives abort and timeout (run under systemd with Delegate=yes on cgroup v2 "
                "to contain jobs)"
            )
        try:
            for name in prepare_file_dir(cfg.file_dir):
                log.info("removed leftover job file %s", name)
        except FileDirError as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot prepare file_dir {cfg.file_dir}: {exc}") from None
        log.info("config URL %s", config_url(cfg, self.ident.curve_public))
        while True:
            try:
                return await self._fetch()
            except FetchError as exc:
                if not exc.transient:
                    raise StartupError(exc.message) from None
                delay = self.rotation.wait(trio.current_time())
                log.warning("config fetch failed: %s; retrying in %.1f s", exc.message, delay)
                await trio.sleep(delay)

    async def _fetch(self) -> ServerConfig:
        doc, url = await fetch_config(
            self.cfg, self.client_key, self.ident.curve_public, self.rotation
        )
        try:
            config = parse_config(
                doc,
                node=self.cfg.node_name,
                key=self.client_key,
                allow_unencrypted=self.cfg.allow_unencrypted,
            )
        except FetchError:
            self.rotation.failed(url, trio.current_time())
            raise
        self.rotation.succeeded(url)
        return config

    def _adopt(self, config: ServerConfig) -> None:
        self.runner.max_output_bytes = config.max_output_bytes
        self.link.apply(config)
        self.schedule.on_success(trio.current_time(), config.lifetime, config.incarnation_id)

    # ---- reconfigure -------------------------------------------------------------------

    def trigger(self, reason: str) -> None:
        """Ask for a full reconfigure now."""
        self.schedule.trigger_now(trio.current_time(), reason)
        self._schedule_changed.set()

    def _on_watchdog(self, silent: int) -> None:
        """The command channel stayed silent after connecting. The first time reconfigure at
        once; when it keeps happening (the fetch works but the channel never does) back off
        as for failed fetches, so a fleet does not hammer the server every 4 s."""
        now = trio.current_time()
        if silent <= 1:
            self.schedule.trigger_now(now, "command channel watchdog")
        else:
            delay = jittered_backoff(silent - 1, self.schedule.rng)
            log.warning(
                "command channel silent %d times in a row, next try in %.1f s", silent, delay
            )
            self.schedule.request(now + delay, f"command channel watchdog ({silent} in a row)")
        self._schedule_changed.set()

    def _on_send_failure(self) -> None:
        self.schedule.on_send_failure(trio.current_time())
        self._schedule_changed.set()

    def _on_abandoned(self, reason: str, interval: float) -> None:
        self.schedule.on_connection_abandoned(trio.current_time(), interval, reason)
        self._schedule_changed.set()

    def _on_new_incarnation(self, incarnation: str, interval: float) -> None:
        if self.schedule.on_new_incarnation(incarnation, trio.current_time(), interval):
            log.info("server restarted (incarnation %s), reconfigure scheduled", incarnation)
            self._schedule_changed.set()

    async def _reconfigure_loop(self) -> None:
        while True:
            now = trio.current_time()
            reason, delaying = self.schedule.due(now, self.runner.idle)
            if delaying:
                log.info("job %s: job in flight, delaying reconfigure", self.runner.job_id)
            if reason is not None:
                reason = self.schedule.begin()
                log.info("reconfiguring: %s", reason)
                try:
                    config = await self._fetch()
                except FetchError as exc:
                    now = trio.current_time()
                    delay = self.schedule.on_failure(now, self.rotation.wait(now))
                    log.warning(
                        "reconfigure failed: %s; next attempt in %.1f s", exc.message, delay
                    )
                    continue
                self._adopt(config)
                continue
            wake = self.schedule.next_check(now, self.runner.idle)
            with trio.move_on_at(wake if wake is not None else float("inf")):
                await self._schedule_changed.wait()
            self._schedule_changed = trio.Event()

    # ---- commands and signals ----------------------------------------------------------

    def _on_command(self, fields: Any) -> None:
        self.worker.submit(fields)

    async def _signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
        with trio.open_signal_receiver(*wanted) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum in (signal.SIGTERM, signal.SIGINT):
                    log.info("received %s, shutting down", name)
                    await self.shutdown()
                    return
                if signum == signal.SIGUSR1:
                    log.info("received SIGUSR1, reconfiguring")
                    self.trigger("SIGUSR1")
                elif signum == signal.SIGHUP:
                    log.info("received SIGHUP, re-reading %s", self.config_path)
                    self.reload()

    async def shutdown(self) -> None:
        """Terminate a running job (nothing sent), close the sockets, stop."""
        with trio.CancelScope(shield=True):
            await self.worker.shutdown()
        self.exit_code = 0
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def reload(self) -> None:
        """SIGHUP: apply the re-read file; keep the old settings when it is invalid."""
        try:
            new = load_config(self.config_path, self.overrides)
        except ConfigError as exc:
            log.error("config reload failed, keeping the old settings: %s", exc)
            return
        old = self.cfg
        for key in RESTART_ONLY_KEYS:
            if getattr(new, key) != getattr(old, key):
                log.warning("%s changed: this needs a restart; ignored", key)
        if new.file_dir != old.file_dir:
            try:
                prepare_file_dir(new.file_dir)
            except (OSError, FileDirError) as exc:
                log.error(
                    "cannot prepare file_dir %s, keeping %s: %s", new.file_dir, old.file_dir, exc
                )
                new.file_dir = old.file_dir
        for key in RESTART_ONLY_KEYS:
            setattr(new, key, getattr(old, key))
        new.org = old.org
        self.cfg = new
        self.runner.whitelist = new.whitelist
        self.runner.allowed_overwritable_env_vars = new.allowed_overwritable_env_vars
        self.runner.max_run_time = new.max_run_time
        self.runner.file_dir = new.file_dir
        self.worker.kill_grace = new.kill_grace
        self.link.set_labels(node_labels(new.labels))
        if self.apply_logging is not None:
            self.apply_logging(new)
        log.info("config reloaded (%d whitelist entries)", len(new.whitelist.entries()))
        self.trigger("SIGHUP")

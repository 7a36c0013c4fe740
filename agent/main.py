"""`pushjobs-agent` command line (agent.md §1, §16)."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import stat
import sys
import time
from collections.abc import Sequence
from typing import Any

from pushjobs.agent.config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_config
from pushjobs.agent.whitelist import Refusal
from pushjobs.protocol.version import installed_version

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushjobs-agent",
        description="pushjobs node agent: runs whitelisted commands pushed by a pushjobs server.",
    )
    parser.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"config file (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument("-S", "--server-url", metavar="URL", help="overrides server_url")
    parser.add_argument("-N", "--node-name", metavar="NAME", help="overrides node_name")
    parser.add_argument("-k", "--client-key", metavar="FILE", help="overrides client_key")
    parser.add_argument(
        "-l",
        "--log-level",
        choices=sorted(LOG_LEVELS),
        metavar="LEVEL",
        help="debug, info, warning or error",
    )
    parser.add_argument("-L", "--log-file", metavar="FILE", help="log to FILE instead of stderr")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, print the effective settings, exit",
    )
    parser.add_argument(
        "--check-command", metavar="CMD", help="print how CMD resolves through the whitelist, exit"
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


class _UTCFormatter(logging.Formatter):
    def __init__(self, fmt: str, datefmt: str) -> None:
        super().__init__(fmt, datefmt=datefmt)
        self.converter = time.gmtime


def setup_logging(cfg: AgentConfig) -> None:
    """`<UTC time> <LEVEL> [<node>] <message>` to `log_file` or stderr."""
    logger = logging.getLogger("pushjobs")
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    handler: logging.Handler
    if cfg.log_file:
        # Reopens the path when logrotate moved the file away: rotation needs no signal.
        handler = logging.handlers.WatchedFileHandler(cfg.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    node = cfg.node_name.replace("%", "%%")
    handler.setFormatter(
        _UTCFormatter(
            f"%(asctime)s.%(msecs)03dZ %(levelname)s [{node}] %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    logger.addHandler(handler)
    logger.setLevel(LOG_LEVELS[cfg.log_level])
    logger.propagate = False


def _check_config(cfg: AgentConfig) -> int:
    for key, value in cfg.summary():
        print(f"{key} = {value!r}")
    entries = cfg.whitelist.entries()
    print(f"whitelist ({len(entries)} entries):")
    lock_dirs: dict[str, list[str]] = {}
    for entry in entries:
        kind = f"pattern {entry.pattern.pattern!r}" if entry.pattern else "exact"
        extras = []
        if entry.shell:
            extras.append("shell")
        if entry.lock:
            lock = cfg.lock_file if entry.lock is True else str(entry.lock)
            extras.append(f"lock {lock}")
            lock_dirs.setdefault(os.path.dirname(os.path.abspath(lock)), []).append(entry.key)
        if entry.hold_lock:
            extras.append("hold_lock")
        suffix = f" [{', '.join(extras)}]" if extras else ""
        print(f"  {entry.key!r}: {kind} -> run {entry.run!r}{suffix}")
    for directory, keys in lock_dirs.items():
        if not os.path.isdir(directory):
            names = ", ".join(repr(k) for k in keys)
            print(
                f"warning: lock directory {directory} does not exist: "
                f"jobs of {names} will be refused until it does",
                file=sys.stderr,
            )
    from pushjobs.agent.process import file_dir_problem

    _, problem = _load_client_key(cfg)
    problem = problem or file_dir_problem(cfg.file_dir)
    if problem is not None:
        print(f"pushjobs-agent: {problem}", file=sys.stderr)
        return 2
    warning = key_mode_warning(cfg.client_key)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def key_mode_warning(path: str) -> str | None:
    """A warning when the private key file is readable by group or others, else None."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if mode & 0o044:
        return f"client_key {path} is readable by group or others (mode {mode:04o}): chmod 600 it"
    return None


def _load_client_key(cfg: AgentConfig) -> tuple[Any, str | None]:
    """(the RSA private key, None), or (None, why `client_key` is unusable)."""
    from pushjobs.protocol.errors import ProtocolError
    from pushjobs.protocol.keys import load_private_key

    try:
        with open(cfg.client_key, "rb") as fh:
            return load_private_key(fh.read()), None
    except OSError as exc:
        return None, f"cannot read client_key {cfg.client_key}: {exc.strerror or exc}"
    except ProtocolError:
        return None, f"client_key {cfg.client_key} is not an RSA private key"


def _check_command(cfg: AgentConfig, command: str) -> int:
    result = cfg.whitelist.resolve(command)
    if isinstance(result, Refusal):
        print(f"refused: {result.reason}")
        return 1
    print(f"entry: {result.entry!r}")
    if result.shell:
        print(f"shell: /bin/sh -c {result.resolved!r}")
    else:
        print(f"argv: {result.argv!r}")
    if result.lock_path:
        when = "until the process ends" if result.hold_lock else "until the process starts"
        print(f"lock: {result.lock_path} (held {when})")
    else:
        print("lock: none")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pushjobs-agent` console script."""
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"pushjobs-agent {installed_version()} (protocol 3.0)")
        return 0
    overrides = {
        "server_url": args.server_url,
        "node_name": args.node_name,
        "client_key": args.client_key,
        "log_level": args.log_level,
        "log_file": args.log_file,
    }
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"pushjobs-agent: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        return _check_config(cfg)
    if args.check_command is not None:
        return _check_command(cfg, args.check_command)
    return _run(cfg, args.config, overrides)


def _run(cfg: AgentConfig, config_path: str, overrides: dict[str, str | None]) -> int:
    from pushjobs.agent.process import file_dir_problem

    key, problem = _load_client_key(cfg)
    problem = problem or file_dir_problem(cfg.file_dir)
    if problem is not None:
        print(f"pushjobs-agent: {problem}", file=sys.stderr)
        return 2
    try:
        setup_logging(cfg)
    except OSError as exc:
        print(
            f"pushjobs-agent: cannot open log_file {cfg.log_file}: {exc.strerror}", file=sys.stderr
        )
        return 2

    import trio

    from pushjobs.agent.daemon import Agent

    agent = Agent(
        cfg,
        key,
        config_path=config_path,
        overrides={k: v for k, v in overrides.items() if v is not None},
        apply_logging=_reload_logging,
    )
    logger = logging.getLogger("pushjobs.agent")
    warning = key_mode_warning(cfg.client_key)
    if warning is not None:
        logger.warning("%s", warning)
    try:
        status = trio.run(agent.run)
        if status == 2 and cfg.log_file and agent.fatal_message:
            print(f"pushjobs-agent: {agent.fatal_message}", file=sys.stderr)  # also for systemd
        return status
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:  # last resort: log with traceback, exit 1
        logger.critical("fatal error: %r", exc, exc_info=exc)
        return 1


def _reload_logging(cfg: AgentConfig) -> None:
    try:
        setup_logging(cfg)
    except OSError as exc:
        logging.getLogger("pushjobs.agent").error("cannot reopen the log: %s", exc)


if __name__ == "__main__":
    sys.exit(main())

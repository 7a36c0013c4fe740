"""Server settings: a TOML file plus overrides (cli.md §12, lifecycle.md §11).

Every key has a default, unknown keys are an error, and every value is type- and range-checked
with a message naming the key. Relative paths in the file are taken relative to the file's
directory; relative paths in overrides relative to the working directory.
"""

from __future__ import annotations

import math
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushjobs.protocol.limits import JOB_INT_MAX
from pushjobs.server.durations import DurationError, parse_duration

DEFAULT_CONFIG_PATH = Path("/etc/pushjobs/server.toml")
CONFIG_ENV_VAR = "PUSHJOBS_SERVER_CONFIG"
DATABASE_FILE = "pushjobs.db"
SERVER_KEY_FILE = "server_key.pem"
SERVER_INFO_FILE = "server.json"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
PRINCIPAL_BACKENDS = ("embedded", "chef-server")
STORE_BACKENDS = ("sqlite", "postgresql")

# The fixed (not settable) values of cli.md §12 are in pushjobs.protocol.limits.


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class HttpSettings:
    bind: str = "127.0.0.1"
    port: int = 10003
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(slots=True)
class ZeromqSettings:
    listen: str = "tcp://*"
    heartbeat_port: int = 10000
    command_port: int = 10002
    disable_curve_encryption: bool = False
    idle_read_interval: float = 0.05


@dataclass(slots=True)
class TimingSettings:
    heartbeat_interval: float = 10.0
    rehab_interval: float = 1.0
    down_threshold: float = 0.6
    decay_window: float = 4.0
    detect_offline_nodes_interval: float = 4.0
    voting_timeout: float = 60.0
    default_run_timeout: int = 3600
    wait_complete_time: float = 5.0
    keep_alive_time: float = 15.0
    org_feed_expiration: float = 60.0
    output_close_timeout: float = 60.0
    config_lifetime: float = 3600.0
    max_message_skew: float = 300.0


@dataclass(slots=True)
class LimitsSettings:
    max_body_size: int = 65536
    max_output_bytes: int = 1_048_576


@dataclass(slots=True)
class StoreSettings:
    """Where the server keeps its state: the SQLite file in data_dir, or a PostgreSQL database."""

    backend: str = "sqlite"
    url: str | None = None  # a libpq URI, postgresql://USER@HOST:PORT/DB (backend postgresql)


@dataclass(slots=True)
class ClusterSettings:
    """A server's place among several on one PostgreSQL database (docs/cluster.md)."""

    server_id: str = ""  # "" = server_name + ":" + the HTTP port
    lease: float = 15.0  # seconds a server's liveness lease lasts; renewed every lease / 3


@dataclass(slots=True)
class MetricsSettings:
    """The Prometheus endpoint (docs/operations.md §1): its own listener; port 0 = off."""

    bind: str = "127.0.0.1"
    port: int = 0


@dataclass(slots=True)
class RetentionSettings:
    """How long finished jobs and their output are kept (docs/operations.md §2); 0 = forever.

    Durations are seconds here (the file says `90d`, `12h`, `90m`, `45s`)."""

    jobs: float = 0.0
    output: float = 0.0
    interval: float = 3600.0  # seconds between pruning runs (the first runs soon after start)


@dataclass(slots=True)
class PrincipalsSettings:
    backend: str = "embedded"
    chef_server_url: str | None = None
    principals_url: str = "http://127.0.0.1:8000"
    superuser_name: str = "pivotal"
    superuser_key: Path | None = None
    cache_ttl: float = 60.0


@dataclass(slots=True)
class Settings:
    """All server settings. `config_path` is the file they were read from (None: defaults only)."""

    server_name: str = ""
    data_dir: Path = Path("/var/lib/pushjobs")
    log_level: str = "info"
    log_file: Path | None = None  # None = stderr
    http: HttpSettings = field(default_factory=HttpSettings)
    zeromq: ZeromqSettings = field(default_factory=ZeromqSettings)
    timing: TimingSettings = field(default_factory=TimingSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    principals: PrincipalsSettings = field(default_factory=PrincipalsSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    config_path: Path | None = None

    @property
    def database_path(self) -> Path:
        return self.data_dir / DATABASE_FILE

    @property
    def server_key_path(self) -> Path:
        return self.data_dir / SERVER_KEY_FILE

    @property
    def server_info_path(self) -> Path:
        return self.data_dir / SERVER_INFO_FILE


# ---------------------------------------------------------------------------
# value checks: each takes (key, raw value, base dir for paths) and returns the value


def _type_name(value: Any) -> str:
    return type(value).__name__


def _string(key: str, value: Any, base: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"setting '{key}' must be a string, not {_type_name(value)}")
    return value


def _nonempty_string(key: str, value: Any, base: Path) -> str:
    text = _string(key, value, base)
    if not text.strip():
        raise ConfigError(f"setting '{key}' must not be empty")
    return text


def _path(key: str, value: Any, base: Path) -> Path:
    text = str(value) if isinstance(value, Path) else _nonempty_string(key, value, base)
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path).absolute()


def _optional_path(key: str, value: Any, base: Path) -> Path | None:
    return None if value is None else _path(key, value, base)


def _log_file(key: str, value: Any, base: Path) -> Path | None:
    if isinstance(value, str) and value.strip().lower() in ("stderr", "-"):
        return None
    return _optional_path(key, value, base)


def _bool(key: str, value: Any, base: Path) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"setting '{key}' must be true or false, not {_type_name(value)}")
    return value


def _int_in(low: int, high: int | None) -> Callable[[str, Any, Path], int]:
    def check(key: str, value: Any, base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"setting '{key}' must be an integer, not {_type_name(value)}")
        if value < low or (high is not None and value > high):
            if high is None:
                raise ConfigError(f"setting '{key}' must be >= {low} (got {value})")
            raise ConfigError(f"setting '{key}' must be from {low} to {high} (got {value})")
        return value

    return check


def _number(key: str, value: Any) -> float:
    """An int or float setting as a float (NaN and infinities are left to the caller)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"setting '{key}' must be a number, not {_type_name(value)}")
    return float(value)


def _positive_number(key: str, value: Any, base: Path) -> float:
    number = _number(key, value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"setting '{key}' must be a number > 0 (got {value})")
    return number


def _read_interval(key: str, value: Any, base: Path) -> float:
    number = _number(key, value)
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise ConfigError(f"setting '{key}' must be a number of seconds from 0 to 1 (got {value})")
    return number


def _fraction(key: str, value: Any, base: Path) -> float:
    number = _positive_number(key, value, base)
    if number >= 1:
        raise ConfigError(f"setting '{key}' must be a number between 0 and 1 (got {value})")
    return number


def _at_least_one(key: str, value: Any, base: Path) -> float:
    number = _positive_number(key, value, base)
    if number < 1:
        raise ConfigError(f"setting '{key}' must be a number >= 1 (got {value})")
    return number


def _at_least(low: float) -> Callable[[str, Any, Path], float]:
    def check(key: str, value: Any, base: Path) -> float:
        number = _positive_number(key, value, base)
        if number < low:
            raise ConfigError(f"setting '{key}' must be a number >= {low:g} (got {value})")
        return number

    return check


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any, Path], str]:
    def check(key: str, value: Any, base: Path) -> str:
        text = _string(key, value, base).lower()
        if text not in choices:
            raise ConfigError(
                f"setting '{key}' must be one of {', '.join(choices)} (got {value!r})"
            )
        return text

    return check


def _url(key: str, value: Any, base: Path) -> str:
    text = _nonempty_string(key, value, base)
    if not text.startswith(("http://", "https://")):
        raise ConfigError(f"setting '{key}' must be an http:// or https:// URL (got {value!r})")
    return text.rstrip("/")


def _optional_url(key: str, value: Any, base: Path) -> str | None:
    return None if value is None else _url(key, value, base)


def _postgres_url(key: str, value: Any, base: Path) -> str | None:
    if value is None:
        return None
    text = _nonempty_string(key, value, base)
    if not text.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"setting '{key}' must be a postgresql://USER@HOST:PORT/DATABASE URI (got {value!r})"
        )
    return text


def _zmq_listen(key: str, value: Any, base: Path) -> str:
    text = _nonempty_string(key, value, base)
    if not text.startswith("tcp://") or len(text) == len("tcp://"):
        raise ConfigError(f"setting '{key}' must look like tcp://ADDRESS (got {value!r})")
    return text


def _duration(key: str, value: Any, base: Path) -> float:
    """`30d`, `12h`, `90m`, `45s`, or 0 (off)."""
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ConfigError(f"setting '{key}': {exc}") from None


def _positive_duration(key: str, value: Any, base: Path) -> float:
    seconds = _duration(key, value, base)
    if seconds <= 0:
        raise ConfigError(f"setting '{key}' must be a duration > 0 like 1h or 10m (got {value!r})")
    return seconds


_PORT = _int_in(0, 65535)

# section -> key -> check; "" is the top level.
_SCHEMA: dict[str, dict[str, Callable[[str, Any, Path], Any]]] = {
    "": {
        "server_name": _nonempty_string,
        "data_dir": _path,
        "log_level": _choice(LOG_LEVELS),
        "log_file": _log_file,  # a path, or "stderr" (the default)
    },
    "http": {
        "bind": _nonempty_string,
        "port": _PORT,
        "tls_cert": _optional_path,
        "tls_key": _optional_path,
    },
    "zeromq": {
        "listen": _zmq_listen,
        "heartbeat_port": _PORT,
        "command_port": _PORT,
        "disable_curve_encryption": _bool,
        "idle_read_interval": _read_interval,
    },
    "timing": {
        "heartbeat_interval": _positive_number,
        "rehab_interval": _positive_number,
        "down_threshold": _fraction,
        "decay_window": _at_least_one,
        "detect_offline_nodes_interval": _positive_number,
        "voting_timeout": _positive_number,
        "default_run_timeout": _int_in(0, JOB_INT_MAX),
        "wait_complete_time": _positive_number,
        "keep_alive_time": _positive_number,
        "org_feed_expiration": _positive_number,
        "output_close_timeout": _positive_number,
        "config_lifetime": _positive_number,
        "max_message_skew": _positive_number,
    },
    "limits": {
        "max_body_size": _int_in(40960, None),
        "max_output_bytes": _int_in(4096, 67_108_864),
    },
    "principals": {
        "backend": _choice(PRINCIPAL_BACKENDS),
        "chef_server_url": _optional_url,
        "principals_url": _url,
        "superuser_name": _nonempty_string,
        "superuser_key": _optional_path,
        "cache_ttl": _positive_number,
    },
    "store": {
        "backend": _choice(STORE_BACKENDS),
        "url": _postgres_url,
    },
    "cluster": {
        "server_id": _nonempty_string,
        "lease": _at_least(3.0),
    },
    "metrics": {
        "bind": _nonempty_string,
        "port": _PORT,
    },
    "retention": {
        "jobs": _duration,
        "output": _duration,
        "interval": _positive_duration,
    },
}


def known_keys() -> list[str]:
    """Every settable key in dotted form (e.g. `timing.heartbeat_interval`)."""
    return [f"{s}.{k}" if s else k for s, keys in _SCHEMA.items() for k in keys]


def default_config_path(explicit: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """The config file to use and whether it was named explicitly (`-c` or the environment)."""
    if explicit is not None:
        return Path(explicit), True
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        return Path(env), True
    return DEFAULT_CONFIG_PATH, False


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file; `ConfigError` on I/O or syntax problems."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def _flatten(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Nested mapping → {"section.key": value}; unknown sections/keys raise `ConfigError`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if "." in key:  # already dotted (overrides)
            section, _, name = key.partition(".")
            if section not in _SCHEMA or section == "" or name not in _SCHEMA[section]:
                raise ConfigError(f"unknown setting '{key}'{where}")
            flat[key] = value
        elif key in _SCHEMA[""]:
            flat[key] = value
        elif key in _SCHEMA:
            if not isinstance(value, Mapping):
                raise ConfigError(f"setting '{key}' must be a table ([{key}]){where}")
            for name, inner in value.items():
                if name not in _SCHEMA[key]:
                    raise ConfigError(f"unknown setting '{key}.{name}'{where}")
                flat[f"{key}.{name}"] = inner
        else:
            raise ConfigError(f"unknown setting '{key}'{where}")
    return flat


def _where(path: Path | None) -> str:
    return f" in {path}" if path is not None else ""


def load_settings(path: Path | None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load settings from `path` (None: defaults only) and apply `overrides`.

    Overrides are dotted (`{"http.port": 0}`) or nested (`{"http": {"port": 0}}`); a value of
    None in overrides means "not given" and is skipped. Raises `ConfigError`.
    """
    values: dict[str, tuple[Any, Path, str]] = {}
    if path is not None:
        base = path.parent.absolute()
        for key, value in _flatten(read_config_file(path), _where(path)).items():
            values[key] = (value, base, _where(path))
    cwd = Path.cwd()
    for key, value in _flatten(_drop_none(overrides or {}), "").items():
        values[key] = (value, cwd, "")

    settings = Settings(config_path=path)
    for dotted, (raw, base, where) in values.items():
        section, _, name = dotted.rpartition(".")
        check = _SCHEMA[section][name]
        try:
            value = check(dotted, raw, base)
        except ConfigError as exc:
            raise ConfigError(exc.message + where) from None
        target = getattr(settings, section) if section else settings
        setattr(target, name, value)

    if not settings.server_name:
        settings.server_name = machine_fqdn()
    if not settings.cluster.server_id:
        settings.cluster.server_id = f"{settings.server_name}:{settings.http.port}"
    _check_combinations(settings)
    return settings


def machine_fqdn() -> str:
    """The machine's fully qualified name (like `hostname -f`), else its host name."""
    host = socket.gethostname() or "localhost"
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_CANONNAME)
    except OSError:
        return host
    for info in infos:
        if info[3] and "." in info[3]:
            return info[3]
    return host


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            inner = _drop_none(value)
            if inner:
                out[key] = inner
        else:
            out[key] = value
    return out


def _check_combinations(settings: Settings) -> None:
    if (settings.http.tls_cert is None) != (settings.http.tls_key is None):
        raise ConfigError("settings 'http.tls_cert' and 'http.tls_key' must be given together")
    principals = settings.principals
    if principals.backend == "chef-server":
        if principals.chef_server_url is None:
            raise ConfigError(
                "setting 'principals.chef_server_url' is required with backend 'chef-server'"
            )
        if principals.superuser_key is None:
            raise ConfigError(
                "setting 'principals.superuser_key' is required with backend 'chef-server'"
            )
    store = settings.store
    if store.backend == "postgresql" and store.url is None:
        raise ConfigError("setting 'store.url' is required with backend 'postgresql'")
    if store.backend == "sqlite" and store.url is not None:
        raise ConfigError(
            "setting 'store.url' applies only to backend 'postgresql' "
            f"(the SQLite database is {settings.database_path})"
        )
    zmq = settings.zeromq
    metrics_port = settings.metrics.port
    if metrics_port:
        for other, port in (
            ("http.port", settings.http.port),
            ("zeromq.heartbeat_port", zmq.heartbeat_port),
            ("zeromq.command_port", zmq.command_port),
        ):
            if port == metrics_port:
                raise ConfigError(
                    f"settings 'metrics.port' and '{other}' must differ (both {metrics_port})"
                )
    if zmq.heartbeat_port and zmq.heartbeat_port == zmq.command_port:
        raise ConfigError(
            "settings 'zeromq.heartbeat_port' and 'zeromq.command_port' must differ "
            f"(both {zmq.heartbeat_port})"
        )

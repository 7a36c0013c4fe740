"""Agent settings: built-in defaults < TOML file < command-line options (agent.md §1, §2)."""

from __future__ import annotations

import socket
import sys
import urllib.parse
from dataclasses import field
from pathlib import Path
from typing import Any

from pushjobs.agent.labels import LabelConfigError, check_user_labels
from pushjobs.agent.whitelist import DEFAULT_WHITELIST, Whitelist, WhitelistError
from pushjobs.protocol.compat import dataclass

if sys.version_info >= (3, 11):
    import tomllib
else:  # the agent runs on 3.9+: tomli is the package tomllib was made from
    import tomli as tomllib

DEFAULT_CONFIG_PATH = "/etc/pushjobs/agent.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The configuration is unusable; the message says why (exit status 2)."""


def default_node_name() -> str:
    """`socket.getfqdn()`, or `socket.gethostname()` when the FQDN has no dot."""
    fqdn = socket.getfqdn()
    return fqdn if "." in fqdn else socket.gethostname()


@dataclass
class AgentConfig:
    """Effective agent settings."""

    server_url: str
    org: str
    node_name: str
    client_key: str = "/etc/pushjobs/client.pem"
    ca_file: str | None = None
    verify_tls: bool = True
    allow_unencrypted: bool = False
    file_dir: str = "/var/lib/pushjobs-agent/files"
    lock_file: str = "/var/chef/cache/chef-client-running.pid"
    kill_grace: float = 5.0
    max_run_time: int = 86400
    allowed_overwritable_env_vars: list[str] | None = None
    log_level: str = "info"
    log_file: str | None = None
    whitelist_table: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_WHITELIST))
    whitelist: Whitelist = field(init=False)
    source: str | None = None  # the file it was read from
    # every server of a cluster (docs/cluster.md); `server_url` is the first. Empty: just it.
    server_urls: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # `[labels]`, without the built-ins

    def __post_init__(self) -> None:
        self.whitelist = Whitelist(self.whitelist_table, self.lock_file)

    def summary(self) -> list[tuple[str, Any]]:
        """The effective settings as (key, value) pairs, for `--check-config`."""
        return [
            ("config", self.source),
            ("server_url", self.server_url),
            ("server_urls", list(self.server_urls) or None),
            ("org", self.org),
            ("node_name", self.node_name),
            ("client_key", self.client_key),
            ("ca_file", self.ca_file),
            ("verify_tls", self.verify_tls),
            ("allow_unencrypted", self.allow_unencrypted),
            ("file_dir", self.file_dir),
            ("lock_file", self.lock_file),
            ("kill_grace", self.kill_grace),
            ("max_run_time", self.max_run_time),
            ("allowed_overwritable_env_vars", self.allowed_overwritable_env_vars),
            ("log_level", self.log_level),
            ("log_file", self.log_file),
            ("labels", self.labels or None),
        ]


def parse_server_url(url: str) -> str:
    """Return the org name of `http(s)://host[:port]/organizations/<org>`; ConfigError otherwise."""
    error = ConfigError("server_url must end in /organizations/ORG_NAME")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise error
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2 or segments[-2] != "organizations":
        raise error
    return urllib.parse.unquote(segments[-1])


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data[key]
    # bool is an int subclass: never let true/false pass as a number
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{key} must be {what}")
    if not isinstance(value, kind):
        raise ConfigError(f"{key} must be {what}")
    return value


_STRING_KEYS = (
    "server_url",
    "node_name",
    "client_key",
    "ca_file",
    "file_dir",
    "lock_file",
    "log_level",
    "log_file",
)
_KNOWN_KEYS = {
    *_STRING_KEYS,
    "verify_tls",
    "allow_unencrypted",
    "kill_grace",
    "max_run_time",
    "allowed_overwritable_env_vars",
    "whitelist",
    "server_urls",
    "labels",
}


def build_config(data: dict[str, Any], source: str | None = None) -> AgentConfig:
    """Validate a decoded TOML document (with command-line overrides merged in)."""
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown configuration key {unknown[0]!r}")
    values: dict[str, Any] = {}
    for key in _STRING_KEYS:
        if key in data:
            values[key] = _typed(data, key, str, "a string")
            if not values[key]:
                raise ConfigError(f"{key} must not be empty")
    for key in ("verify_tls", "allow_unencrypted"):
        if key in data:
            values[key] = _typed(data, key, bool, "true or false")
    if "kill_grace" in data:
        grace = _typed(data, "kill_grace", (int, float), "a number of seconds")
        if not 0 <= grace <= 3600:
            raise ConfigError("kill_grace must be between 0 and 3600 seconds")
        values["kill_grace"] = float(grace)
    if "max_run_time" in data:
        limit = _typed(data, "max_run_time", int, "an integer number of seconds")
        if limit < 1:
            raise ConfigError("max_run_time must be at least 1 second")
        values["max_run_time"] = limit
    if "allowed_overwritable_env_vars" in data:
        names = data["allowed_overwritable_env_vars"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError("allowed_overwritable_env_vars must be an array of strings")
        values["allowed_overwritable_env_vars"] = list(names)
    if "file_dir" in values and not values["file_dir"].startswith("/"):
        raise ConfigError("file_dir must be an absolute path")
    if "server_urls" in data:
        urls = data["server_urls"]
        if (
            not isinstance(urls, list)
            or not urls
            or not all(isinstance(u, str) and u for u in urls)
        ):
            raise ConfigError("server_urls must be a non-empty array of URLs")
        if "server_url" in values:
            raise ConfigError("give server_url or server_urls, not both")
        urls = [url.rstrip("/") for url in urls]
        orgs = {parse_server_url(url) for url in urls}
        if len(orgs) != 1:
            raise ConfigError("every entry of server_urls must name the same organization")
        values["server_url"], values["server_urls"] = urls[0], tuple(urls)
    if "server_url" not in values:
        raise ConfigError("server_url (or server_urls) is required")
    values["server_url"] = values["server_url"].rstrip("/")
    org = parse_server_url(values["server_url"])
    level = values.get("log_level", "info").lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    values["log_level"] = level
    if "node_name" not in values:
        values["node_name"] = default_node_name()
    if "labels" in data:
        try:
            values["labels"] = check_user_labels(data["labels"])
        except LabelConfigError as exc:
            raise ConfigError(str(exc)) from None
    table = data.get("whitelist", DEFAULT_WHITELIST)
    if not isinstance(table, dict):
        raise ConfigError("[whitelist] must be a table")
    try:
        return AgentConfig(org=org, whitelist_table=dict(table), source=source, **values)
    except WhitelistError as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read and validate the TOML file, then apply command-line overrides (non-None values)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return build_config(data, source=str(path))

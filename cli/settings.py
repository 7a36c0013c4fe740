"""CLI settings (cli.md §1): knife credentials < pushjobs config profile < environment < flags."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushjobs.cli.errors import UsageError

SIGN_VERSIONS = ("1.3", "1.1")
CONFIG_KEYS = (
    "server_url",
    "user",
    "key",
    "ca_file",
    "verify_tls",
    "sign_version",
    "chef_server_url",
)
# knife credentials key -> our settings (cli.md §1, item 1)
CREDENTIALS_MAP: dict[str, tuple[str, ...]] = {
    "client_name": ("user",),
    "node_name": ("user",),
    "client_key": ("key",),
    "chef_server_url": ("server_url", "chef_server_url"),
}
ENV_MAP = {
    "PUSHJOBS_SERVER_URL": "server_url",
    "PUSHJOBS_USER": "user",
    "PUSHJOBS_KEY": "key",
}
EXAMPLE_CONFIG = """\
[default]
server_url = "https://push.example.com/organizations/acme"
user       = "alice"
key        = "~/.chef/alice.pem\""""
MISSING_HINT = {
    "server_url": "--server-url or $PUSHJOBS_SERVER_URL",
    "user": "-u/--user or $PUSHJOBS_USER",
    "key": "-k/--key or $PUSHJOBS_KEY",
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings; `key` is a file path or an inline PEM (knife credentials allow both)."""

    server_url: str
    user: str
    key: str
    ca_file: str | None = None
    verify_tls: bool = True
    sign_version: str = "1.3"
    chef_server_url: str | None = None
    profile: str = "default"


def key_file_warning(key: str) -> str | None:
    """A one-line warning when the key file is open to group or others (as ssh checks), else None.

    `key` is a settings value: a path, or an inline PEM (never warned about).
    """
    if key.lstrip().startswith("-----BEGIN"):
        return None
    try:
        mode = stat.S_IMODE(os.stat(key).st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"private key file {key} is accessible by group or others (mode {mode:04o}); "
        f"restrict it with: chmod 600 {key}"
    )


def choose_profile(flag: str | None, environ: Mapping[str, str]) -> tuple[str, bool]:
    """Return the profile name and whether it was chosen explicitly."""
    for value in (flag, environ.get("PUSHJOBS_PROFILE"), environ.get("CHEF_PROFILE")):
        if value:
            return value, True
    return "default", False


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None


def _resolve_path(value: str, base: Path | None) -> str:
    """Expand `~`; resolve a relative path against the directory of the file it came from."""
    if value.lstrip().startswith("-----BEGIN"):
        return value  # inline PEM
    p = Path(value).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)


def _profile_table(data: dict[str, Any], profile: str, path: Path) -> dict[str, Any] | None:
    table = data.get(profile)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise UsageError(f"{path}: profile '{profile}' must be a table ([{profile}])")
    return table


def _from_credentials(path: Path, profile: str) -> tuple[dict[str, Any], bool]:
    """Settings from knife's credentials file and whether it has the profile."""
    table = _profile_table(_read_toml(path), profile, path)
    if table is None:
        return {}, False
    out: dict[str, Any] = {}
    for src, targets in CREDENTIALS_MAP.items():
        value = table.get(src)
        if value is None or (src == "node_name" and "client_name" in table):
            continue
        if not isinstance(value, str):
            raise UsageError(f"{path}: [{profile}] {src} must be a string")
        for target in targets:
            out[target] = _resolve_path(value, path.parent) if target == "key" else value
    return out, True


def _check_value(path: Path, profile: str, key: str, value: Any) -> Any:
    where = f"{path}: [{profile}] {key}"
    if key == "verify_tls":
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false")
        return value
    if not isinstance(value, str):
        raise UsageError(f"{where} must be a string")
    if key == "sign_version" and value not in SIGN_VERSIONS:
        raise UsageError(f'{where} must be "1.3" or "1.1"')
    if key in ("key", "ca_file"):
        return _resolve_path(value, path.parent)
    return value


def _from_config(path: Path, profile: str) -> tuple[dict[str, Any], bool]:
    data = _read_toml(path)
    for name, value in data.items():
        if not isinstance(value, dict):
            raise UsageError(
                f"{path}: setting '{name}' must be inside a profile table such as [default]"
            )
    table = _profile_table(data, profile, path)
    if table is None:
        return {}, False
    unknown = sorted(set(table) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(
            f"{path}: [{profile}] unknown setting(s): {', '.join(unknown)} "
            f"(known: {', '.join(CONFIG_KEYS)})"
        )
    return {k: _check_value(path, profile, k, v) for k, v in table.items()}, True


def config_path(flag: str | None, environ: Mapping[str, str], home: Path) -> tuple[Path, bool]:
    """The pushjobs config file and whether it was named explicitly (then it must exist).

    Default: `$XDG_CONFIG_HOME/pushjobs/config.toml` when that variable holds an absolute path
    (the XDG base directory rule), else `~/.config/pushjobs/config.toml`.
    """
    if flag:
        return Path(flag).expanduser(), True
    if environ.get("PUSHJOBS_CONFIG"):
        return Path(environ["PUSHJOBS_CONFIG"]).expanduser(), True
    xdg = environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return base / "pushjobs" / "config.toml", False


@dataclass(frozen=True)
class Resolution:
    """Every setting found, where each came from, before the required ones are checked."""

    values: dict[str, Any]
    origins: dict[str, str]  # setting -> "flag --user", "env $PUSHJOBS_USER", "<file> [profile]"
    profile: str
    profile_origin: str
    config_file: Path
    config_origin: str
    files_read: tuple[str, ...]


def resolve_settings(
    flags: Mapping[str, Any], environ: Mapping[str, str], home: Path | None = None
) -> Resolution:
    """Merge every source in precedence order (cli.md §1); UsageError for a bad file."""
    if home is None:
        home = Path(environ.get("HOME") or Path.home())
    profile, explicit = choose_profile(flags.get("profile"), environ)
    if flags.get("profile"):
        profile_origin = "flag --profile"
    elif environ.get("PUSHJOBS_PROFILE"):
        profile_origin = "env $PUSHJOBS_PROFILE"
    elif environ.get("CHEF_PROFILE"):
        profile_origin = "env $CHEF_PROFILE"
    else:
        profile_origin = "default"
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    found_profile = False
    files_seen: list[str] = []

    def take(values: dict[str, Any], origin: str) -> None:
        merged.update(values)
        origins.update(dict.fromkeys(values, origin))

    creds = home / ".chef" / "credentials"
    if creds.is_file():
        values, present = _from_credentials(creds, profile)
        take(values, f"{creds} [{profile}]")
        found_profile |= present
        files_seen.append(str(creds))

    cfg, cfg_explicit = config_path(flags.get("config"), environ, home)
    if flags.get("config"):
        config_origin = "flag --config"
    elif environ.get("PUSHJOBS_CONFIG"):
        config_origin = "env $PUSHJOBS_CONFIG"
    elif environ.get("XDG_CONFIG_HOME") and Path(environ["XDG_CONFIG_HOME"]).is_absolute():
        config_origin = "env $XDG_CONFIG_HOME"
    else:
        config_origin = "default"
    if cfg.is_file():
        values, present = _from_config(cfg, profile)
        take(values, f"{cfg} [{profile}]")
        found_profile |= present
        files_seen.append(str(cfg))
    elif cfg_explicit:
        raise UsageError(f"config file {cfg} not found")

    if explicit and files_seen and not found_profile:
        raise UsageError(f"profile '{profile}' not found in {' or '.join(files_seen)}")

    for env_name, key in ENV_MAP.items():
        if environ.get(env_name):
            value = environ[env_name]
            take({key: _resolve_path(value, None) if key == "key" else value}, f"env ${env_name}")

    for key in ("server_url", "user", "key", "ca_file"):
        value = flags.get(key)
        if value:
            resolved = _resolve_path(value, None) if key in ("key", "ca_file") else value
            take({key: resolved}, f"flag --{key.replace('_', '-')}")
    if flags.get("insecure"):
        take({"verify_tls": False}, "flag --insecure")
    return Resolution(
        merged, origins, profile, profile_origin, cfg, config_origin, tuple(files_seen)
    )


def load_settings(
    flags: Mapping[str, Any], environ: Mapping[str, str], home: Path | None = None
) -> Settings:
    """Merge every source in precedence order and check the required settings.

    `flags` keys: server_url, user, key, profile, config, ca_file, insecure (None = not given).
    Raises UsageError naming a missing setting or a bad file.
    """
    found = resolve_settings(flags, environ, home)
    merged, profile, cfg = found.values, found.profile, found.config_file
    for key in ("server_url", "user", "key"):
        if not merged.get(key):
            raise UsageError(
                f"missing setting '{key}' (profile '{profile}'): give {MISSING_HINT[key]}, "
                f"or create {cfg} with a profile like:\n{EXAMPLE_CONFIG}"
            )
    for key in ("server_url", "chef_server_url"):
        value = merged.get(key)
        if value and not value.lower().startswith(("http://", "https://")):
            raise UsageError(f"{key} must be an http:// or https:// URL, not '{value}'")
    return Settings(
        server_url=merged["server_url"].rstrip("/"),
        user=merged["user"],
        key=merged["key"],
        ca_file=merged.get("ca_file"),
        verify_tls=merged.get("verify_tls", True),
        sign_version=merged.get("sign_version", "1.3"),
        chef_server_url=(merged.get("chef_server_url") or "").rstrip("/") or None,
        profile=profile,
    )

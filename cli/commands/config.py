"""`pushjobs config show` (effective settings and their sources) and `pushjobs completion`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pushjobs.cli.errors import UsageError
from pushjobs.cli.settings import CONFIG_KEYS, resolve_settings

if TYPE_CHECKING:
    import argparse

    from pushjobs.cli.app import App

DEFAULTS: dict[str, Any] = {"verify_tls": True, "sign_version": "1.3"}


def _shown(key: str, value: Any) -> Any:
    """A value as printed: a key's file path, never what is inside."""
    if key == "key" and isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return "(inline PEM from a knife credentials file; contents not shown)"
    return value


def settings_report(app: App) -> dict[str, Any]:
    """Each setting with its value and source, plus the profile and config file used."""
    found = resolve_settings(app.setting_flags(), app.environ)
    rows: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        if key in found.values:
            rows[key] = {"value": _shown(key, found.values[key]), "from": found.origins[key]}
        elif key in DEFAULTS:
            rows[key] = {"value": DEFAULTS[key], "from": "default"}
        else:
            rows[key] = {"value": None, "from": "not set"}
    exists = found.config_file.is_file()
    return {
        "profile": {"value": found.profile, "from": found.profile_origin},
        "config_file": {
            "value": str(found.config_file),
            "from": found.config_origin + ("" if exists else "; no such file"),
        },
        "settings": rows,
    }


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cmd_config_show(app: App) -> int:
    report = settings_report(app)
    if app.json:
        app.print_json(report)
        return 0
    rows = [("profile", report["profile"]), ("config file", report["config_file"])]
    rows += list(report["settings"].items())
    width = max(len(name) for name, _ in rows)
    for name, row in rows:
        app.print(f"{name:<{width}}  {_text(row['value'])}  ({row['from']})")
    missing = [k for k in ("server_url", "user", "key") if report["settings"][k]["value"] is None]
    if missing:
        app.print(f"missing for job and node commands: {', '.join(missing)}")
    return 0


def cmd_completion(app: App, parser: argparse.ArgumentParser) -> int:
    """The completion script of `parser` (the whole command line, from `cli/main.py`)."""
    import shtab

    shell = app.args.shell
    if shell not in shtab.SUPPORTED_SHELLS:
        raise UsageError(f"unsupported shell '{shell}'")
    app.print(shtab.complete(parser, shell=shell).rstrip("\n"))
    return 0

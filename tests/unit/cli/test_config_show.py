"""`pushjobs config show`: every setting, its value and where it came from; the key's path,
never its contents; $XDG_CONFIG_HOME for the config file (cli.md §1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pushjobs.cli.main import run

SECRET = "-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETMATERIAL\n-----END RSA PRIVATE KEY-----\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "XDG_CONFIG_HOME",
        "PUSHJOBS_CONFIG",
        "PUSHJOBS_PROFILE",
        "CHEF_PROFILE",
        "PUSHJOBS_SERVER_URL",
        "PUSHJOBS_USER",
        "PUSHJOBS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


def _show(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert run([*argv, "config", "show", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_sources_flag_env_file_default(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    xdg = tmp_path / "xdg"
    config = xdg / "pushjobs" / "config.toml"
    config.parent.mkdir(parents=True)
    key = tmp_path / "alice.pem"
    key.write_text(SECRET)
    config.write_text(
        f'[default]\nserver_url = "https://push/organizations/acme"\nuser = "alice"\n'
        f'key = "{key}"\n'
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("PUSHJOBS_USER", "bob")
    report = _show(capsys, "--ca-file", "/etc/ca.pem")
    assert report["config_file"] == {"value": str(config), "from": "env $XDG_CONFIG_HOME"}
    assert report["profile"] == {"value": "default", "from": "default"}
    settings = report["settings"]
    assert settings["server_url"] == {
        "value": "https://push/organizations/acme",
        "from": f"{config} [default]",
    }
    assert settings["user"] == {"value": "bob", "from": "env $PUSHJOBS_USER"}
    assert settings["key"] == {"value": str(key), "from": f"{config} [default]"}
    assert settings["ca_file"] == {"value": "/etc/ca.pem", "from": "flag --ca-file"}
    assert settings["verify_tls"] == {"value": True, "from": "default"}
    assert settings["chef_server_url"] == {"value": None, "from": "not set"}


def test_inline_key_contents_are_never_printed(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = home / ".chef" / "credentials"
    creds.parent.mkdir()
    creds.write_text(
        "[default]\n"
        'client_name = "alice"\n'
        'chef_server_url = "https://chef/organizations/acme"\n'
        f"client_key = '''{SECRET}'''\n"
    )
    assert run(["config", "show"]) == 0
    text = capsys.readouterr().out
    assert "TOPSECRETMATERIAL" not in text and "BEGIN RSA" not in text
    assert "inline PEM" in text and f"{creds} [default]" in text
    assert _show(capsys)["settings"]["user"]["value"] == "alice"


def test_missing_settings_are_listed_not_an_error(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert f"{home}/.config/pushjobs/config.toml" in out
    assert "missing for job and node commands: server_url, user, key" in out


def test_relative_xdg_config_home_is_ignored(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # the XDG spec: ignore it
    report = _show(capsys)
    assert report["config_file"] == {
        "value": f"{home}/.config/pushjobs/config.toml",
        "from": "default; no such file",
    }

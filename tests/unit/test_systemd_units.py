"""The systemd units in systemd/: parse them and check what an operator relies on.

`systemd-analyze verify` runs as well when the binary exists (Debian: package `systemd`); the
unit's ExecStart path is pointed at this interpreter's installed console script first, because
verify insists that the program exists.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parents[2] / "systemd"
SERVER_UNIT = UNIT_DIR / "pushjobs-server.service"
AGENT_UNIT = UNIT_DIR / "pushjobs-agent.service"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Parse unit-file text into section → [(key, value), ...] (keys may repeat, as in systemd)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise ValueError(f"not a unit-file line: {raw!r}")
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}: expected one value, found {found}"
    return found[0]


def test_parser_handles_repeats_continuations_and_comments() -> None:
    text = "# c\n[Unit]\nAfter=a\nAfter=b\n; c\n[Service]\nExecStart=/bin/x \\\n  --flag\n"
    unit = parse_unit(text)
    assert values(unit, "Unit", "After") == ["a", "b"]
    assert one(unit, "Service", "ExecStart") == "/bin/x  --flag"
    with pytest.raises(ValueError):
        parse_unit("[Unit]\nno equals sign\n")


def test_server_unit_essentials() -> None:
    unit = parse_unit(SERVER_UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    assert "network-online.target" in " ".join(values(unit, "Unit", "After"))
    assert "network-online.target" in " ".join(values(unit, "Unit", "Wants"))
    exec_start = one(unit, "Service", "ExecStart").split()
    assert exec_start[0].endswith("/pushjobs-server") and exec_start[-1] == "run"
    assert one(unit, "Service", "User") == "pushjobs"
    assert one(unit, "Service", "StateDirectory") == "pushjobs"
    assert one(unit, "Service", "StateDirectoryMode") == "0700"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert one(unit, "Service", key) == "yes", key
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert "multi-user.target" in one(unit, "Install", "WantedBy")


def test_server_unit_points_at_the_default_config_and_data_dir() -> None:
    """The unit, the server's defaults and docs/deploy.md agree on where things live."""
    from pushjobs.server.config import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH, Settings

    unit = parse_unit(SERVER_UNIT.read_text())
    env = values(unit, "Service", "Environment")
    assert f"{CONFIG_ENV_VAR}={DEFAULT_CONFIG_PATH}" in env
    assert Settings().data_dir == Path("/var/lib") / one(unit, "Service", "StateDirectory")
    assert one(unit, "Service", "WorkingDirectory") == str(Settings().data_dir)


def test_agent_unit_essentials() -> None:
    if not AGENT_UNIT.exists():
        pytest.skip("systemd/pushjobs-agent.service is not written yet")
    unit = parse_unit(AGENT_UNIT.read_text())
    assert "network-online.target" in " ".join(values(unit, "Unit", "After"))
    exec_start = one(unit, "Service", "ExecStart").split()
    assert exec_start[0].endswith("/pushjobs-agent")
    assert one(unit, "Service", "Restart") in {"on-failure", "always"}
    assert "multi-user.target" in one(unit, "Install", "WantedBy")


@pytest.mark.parametrize("unit_path", [SERVER_UNIT, AGENT_UNIT], ids=lambda p: p.name)
def test_documentation_points_at_nothing_missing(unit_path: Path) -> None:
    """`Documentation=` must not name a local file (nothing installs the docs) that is absent."""
    unit = parse_unit(unit_path.read_text())
    for value in values(unit, "Unit", "Documentation"):
        for uri in value.split():
            assert uri.startswith(("https://", "http://", "man:", "file:")), uri
            if uri.startswith("file:"):
                assert Path(uri.removeprefix("file://")).exists(), f"{uri}: not installed"


def _installed_script(name: str) -> Path:
    return Path(sys.executable).parent / name


@pytest.mark.parametrize("unit_path", [SERVER_UNIT, AGENT_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify(unit_path: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package 'systemd')")
    if not unit_path.exists():
        pytest.skip(f"{unit_path.name} is not written yet")
    text = unit_path.read_text()
    for script in ("pushjobs-server", "pushjobs-agent"):
        installed = _installed_script(script)
        if not installed.exists():
            pytest.skip(f"{script} is not installed next to {sys.executable}")
        for prefix in ("/usr/local/bin/", "/usr/bin/", "/opt/pushjobs/bin/"):
            text = text.replace(prefix + script, str(installed))
    copy = tmp_path / unit_path.name
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # verify also complains about unrelated units it loads (e.g. missing dependencies on a
    # container); only lines about our unit count.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if unit_path.name in line]
    assert not ours, "\n".join(ours)

"""`python -m build` makes an sdist and a wheel that install and run (docs/deploy.md uses it).

The sdist is built from a copy of the source tree as a fresh clone has it, the wheel from the
sdist (what `build` does by default); the wheel is installed with the `[server]` extra into a
fresh venv (pip fetches the dependencies from the package index) and run from a folder outside
the source tree: the three commands print their version, and every module of the source tree
is in the wheel and imports (an editable install would hide a missing package).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}{result.stderr}"
    return result


def source_modules() -> set[str]:
    """Dotted names of every module of the source tree, after pyproject's package-dir."""
    names = set()
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.add(".".join([package, *parts]))
    return names


# What a fresh clone lacks: a stale `pushjobs.egg-info` (its SOURCES.txt) would put files in the
# sdist, and so in the wheel, that pyproject.toml does not list.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv*", "*.egg-info", "__pycache__", "*_cache", ".hypothesis", ".mypy-root", "dist"
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("build")
    shutil.copytree(ROOT, base / "src", ignore=NOT_IN_A_CLONE, symlinks=True)
    run([sys.executable, "-m", "build", "--outdir", str(base / "dist"), str(base / "src")], base)
    return base / "dist"


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(home / "venv")], cwd=home)
    (wheel,) = dist.glob("*.whl")
    pip = [str(home / "venv" / "bin" / "python"), "-m", "pip"]
    run([*pip, "install", "--quiet", "--disable-pip-version-check", f"{wheel}[server]"], cwd=home)
    return home / "venv"


def test_build_makes_an_sdist_and_a_wheel(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"pushjobs-{VERSION}-py3-none-any.whl",
        f"pushjobs-{VERSION}.tar.gz",
    ]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("pushjobs-server", f"pushjobs-server {VERSION}"),
        ("pushjobs-agent", f"pushjobs-agent {VERSION} "),
        ("pushjobs", f"pushjobs {VERSION}"),
    ],
)
def test_installed_commands_print_their_version(venv: Path, command: str, expected: str) -> None:
    out = run([str(venv / "bin" / command), "--version"], cwd=venv).stdout
    assert out.startswith(expected), out


IMPORT_ALL = """
import importlib, json, pkgutil, sys
import pushjobs
names = sorted(m.name for m in pkgutil.walk_packages(pushjobs.__path__, "pushjobs."))
files = {}
for name in names:
    if not name.endswith(".__main__"):  # running those starts the command
        files[name] = importlib.import_module(name).__file__
print(json.dumps({"names": names, "files": files}))
"""


def test_every_module_is_installed_and_imports(venv: Path) -> None:
    out = run([str(venv / "bin" / "python"), "-c", IMPORT_ALL], cwd=venv).stdout
    found = json.loads(out)
    assert sorted(source_modules() - set(found["names"])) == []
    assert sorted(set(found["names"]) - source_modules()) == []
    site = str(venv / "lib")
    assert [f for f in found["files"].values() if not f.startswith(site)] == []

"""pyproject.toml lists every package of the source tree (a wheel holds only those listed).

An editable install finds every folder through `package-dir`, so a package missing from
`[tool.setuptools] packages` would only show in a built wheel (tests/integration/
test_packaging.py checks one too, slowly).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([package, *parts]))
    assert "pushjobs.server.cluster" in found
    assert sorted(found - set(setuptools["packages"])) == []
    assert sorted(set(setuptools["packages"]) - found) == []

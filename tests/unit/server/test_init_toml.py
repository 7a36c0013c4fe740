"""`pushjobs-server init` and the demo write TOML that tomllib reads back unchanged."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from pushjobs.server.admin.main import main

AWKWARD = "data\x7fdir-🚀"  # DEL is not allowed raw in a TOML string; json.dumps left it raw


def test_init_writes_a_data_dir_with_del_and_emoji(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    data_dir = tmp_path / AWKWARD
    status = main(["-c", str(config), "--data-dir", str(data_dir), "init", "--server-name", "p🚀"])
    assert status == 0
    parsed = tomllib.loads(config.read_text(encoding="utf-8"))
    assert parsed["data_dir"] == str(data_dir)
    assert parsed["server_name"] == "p🚀"


def _demo_module() -> ModuleType:
    path = Path(__file__).parents[3] / "scripts" / "demo.py"
    spec = importlib.util.spec_from_file_location("pushjobs_demo_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def test_demo_writes_awkward_paths_and_its_whitelist(tmp_path: Path) -> None:
    demo = _demo_module()
    values = {"file_dir": str(tmp_path / AWKWARD), "whitelist": demo.demo_whitelist("uptime")}
    target = tmp_path / "agent.toml"
    demo.write_toml(target, values, "# a comment\n")
    assert tomllib.loads(target.read_text(encoding="utf-8")) == values

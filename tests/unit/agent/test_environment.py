"""The built-in deny-list of job environment variables (issue 15 F1, whitelist.md §5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pushjobs.agent.environment import build_environment, is_denied_env_var
from pushjobs.agent.process import SAFE_PATH, resolve_program

DENIED = [
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "PATH", "IFS", "ENV",
    "BASH_ENV", "BASH_FUNC_ls%%", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "PERL5OPT",
    "PERL5LIB", "PERLLIB", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "RUBYOPT", "RUBYLIB",
    "NODE_OPTIONS", "NODE_PATH", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES",
    "RESOLV_HOST_CONF", "GIT_SSH_COMMAND", "GIT_CONFIG_GLOBAL", "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS", "HOME", "USER", "LOGNAME", "SHELL", "GLIBC_TUNABLES", "GEM_HOME", "GEM_PATH",
    "BUNDLE_GEMFILE", "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES", "ZDOTDIR", "PHPRC",
    "PHP_INI_SCAN_DIR", "TCLLIBPATH",
]  # fmt: skip
ALLOWED = ["RELEASE", "path", "ld_preload", "MY_PATH", "XLD_PRELOAD", "LANG", "TZ", "PERL"]


@pytest.mark.parametrize("name", DENIED)
def test_denied_names_are_renamed_by_default(name: str) -> None:
    assert is_denied_env_var(name)
    env = build_environment({"PATH": "/bin"}, node_name="n", job_id="j", job_env={name: "x"})
    assert env[f"CHEF_PUSH_ENV_{name}"] == "x"
    assert env.get(name) != "x"


@pytest.mark.parametrize("name", ALLOWED)
def test_other_names_pass_by_default(name: str) -> None:
    assert not is_denied_env_var(name)
    env = build_environment({}, node_name="n", job_id="j", job_env={name: "x"})
    assert env[name] == "x" and f"CHEF_PUSH_ENV_{name}" not in env


def test_only_an_exact_opt_in_passes_a_denied_name() -> None:
    env = build_environment(
        {"PATH": "/bin"},
        node_name="n",
        job_id="j",
        job_env={"LD_LIBRARY_PATH": "/opt/lib", "LD_PRELOAD": "/x.so", "RELEASE": "1"},
        allowed_overwritable=["LD_LIBRARY_PATH", "LD_*"],
    )
    assert env["LD_LIBRARY_PATH"] == "/opt/lib"
    assert "LD_PRELOAD" not in env and env["CHEF_PUSH_ENV_LD_PRELOAD"] == "/x.so"
    assert "RELEASE" not in env and env["CHEF_PUSH_ENV_RELEASE"] == "1"  # not listed


def test_resolve_program_uses_only_absolute_directories(tmp_path: Path) -> None:
    prog = tmp_path / "tool"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    (tmp_path / "data").write_text("")
    assert resolve_program("tool", f"relative:{tmp_path}") == str(prog)
    assert resolve_program("data", str(tmp_path)) is None  # not executable
    assert resolve_program("tool", "") is None
    assert resolve_program("./tool", "/bin") == "./tool"  # a slash: as written
    sh = resolve_program("sh", SAFE_PATH)
    assert sh is not None and os.path.isabs(sh)


def test_file_dir_must_be_absolute() -> None:
    from pushjobs.agent.config import ConfigError, build_config

    url = "https://push.example.com/organizations/acme"
    assert build_config({"server_url": url, "file_dir": "/srv/f"}).file_dir == "/srv/f"
    with pytest.raises(ConfigError, match="file_dir must be an absolute path"):
        build_config({"server_url": url, "file_dir": "files"})


def test_file_dir_problem(tmp_path: Path) -> None:
    from pushjobs.agent.process import file_dir_problem

    assert file_dir_problem(str(tmp_path / "missing")) is None  # created 0711 at start
    good = tmp_path / "good"
    good.mkdir(mode=0o711)
    assert file_dir_problem(str(good)) is None
    good.chmod(0o731)
    assert "writable by group or others (mode 0731)" in (file_dir_problem(str(good)) or "")
    (tmp_path / "plain").write_text("")
    assert "is not a directory" in (file_dir_problem(str(tmp_path / "plain")) or "")

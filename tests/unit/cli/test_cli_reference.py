"""The parser documents itself: help for every argument, examples for every command, the
generated reference in docs/cli.md, and shell completion scripts (cli.md)."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pushjobs.cli.main import build_parser, run

ROOT = Path(__file__).resolve().parents[3]


def _generator() -> ModuleType:
    path = ROOT / "scripts" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return list(_generator()._walk(build_parser(), ("pushjobs",)))


def test_the_committed_reference_is_what_the_parser_gives_now() -> None:
    gen = _generator()
    document = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert gen.BEGIN in document and gen.END in document
    assert gen.updated(document, gen.render(build_parser())) == document, (
        "docs/cli.md is out of date: run .venv/bin/python scripts/cli_reference.py"
    )


def test_every_argument_and_option_has_help() -> None:
    missing = [
        f"{' '.join(words)} {action.option_strings or action.dest}"
        for words, parser in _commands()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_every_command_has_an_example() -> None:
    lacking = [
        " ".join(words)
        for words, parser in _commands()
        if len(words) > 1 and "example: pushjobs " not in (parser.epilog or "")
    ]
    assert lacking == []


def test_the_generated_reference_names_every_command() -> None:
    text = _generator().render(build_parser())
    for words, _ in _commands()[1:]:
        assert f"### `{' '.join(words)}`" in text


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_name_the_subcommands(
    shell: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("job", "node", "start", "watch", "status", "completion", "--max-concurrency"):
        assert word in script, word
    path = tmp_path / f"pushjobs.{shell}"
    path.write_text(script)
    checks = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}
    program = shutil.which(checks[shell][0])
    if program is None:
        pytest.skip(f"{shell} is not installed: output checked, syntax not")
    result = subprocess.run(
        [program, *checks[shell][1:], str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["completion", "tcsh"]) == 3
    assert "invalid choice" in capsys.readouterr().err


def test_help_prints_the_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushjobs.cli", "job", "start", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "example: pushjobs job start chef-client web1 web2" in result.stdout

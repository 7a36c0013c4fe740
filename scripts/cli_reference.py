#!/usr/bin/env python3
"""Write the command reference of docs/cli.md from the `pushjobs` argument parser.

    .venv/bin/python scripts/cli_reference.py          # rewrite the section in docs/cli.md
    .venv/bin/python scripts/cli_reference.py --check  # exit 1 when it is out of date

The section between the BEGIN/END markers is rendered from the parser's actions (not from
argparse's help layout, which differs between Python versions and terminal widths), so the
same parser always gives the same text; tests/unit/cli/test_cli_reference.py checks it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE: scripts/cli_reference.py writes this section -->"
END = "<!-- END GENERATED REFERENCE -->"
GLOBAL_GROUP = "global options"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    return text % {**vars(action), "prog": ""} if "%" in text else text


def _name(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return str(action.dest).upper()


def _option(action: argparse.Action) -> str:
    flags = ", ".join(action.option_strings)
    return flags if action.nargs == 0 else f"{flags} {_name(action)}"


def _positional_usage(action: argparse.Action) -> str:
    name = _name(action)
    if action.nargs == "?":
        return f"[{name}]"
    if action.nargs == "*":
        return f"[{name} ...]"
    if action.nargs == "+":
        return f"{name} [{name} ...]"
    return name


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _is_global(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    return any(
        g.title == GLOBAL_GROUP and action in g._group_actions for g in parser._action_groups
    )


def _walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield words, parser
    subs = _subcommands(parser)
    if subs is None:
        return
    for name, child in subs.choices.items():
        yield from _walk(child, (*words, name))


def _section(words: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    positionals = [
        a
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]
    options = [
        a
        for a in parser._actions
        if a.option_strings
        and not isinstance(a, argparse._HelpAction)
        and not _is_global(parser, a)
    ]
    subs = _subcommands(parser)
    usage = ["pushjobs", *words[1:]]
    if options:
        usage.append("[options]")
    if subs is not None:
        usage.append("{" + ",".join(subs.choices) + "} ...")
    usage += [_positional_usage(a) for a in positionals]
    lines = [f"### `{' '.join(words)}`", ""]
    if parser.description:
        lines += [parser.description, ""]
    lines += [f"Usage: `{' '.join(usage)}`", ""]
    if subs is not None:
        lines += ["| Subcommand | Meaning |", "|---|---|"]
        for choice in subs._choices_actions:
            lines.append(f"| `{choice.dest}` | {_cell(choice.help or '')} |")
        lines.append("")
    if positionals:
        lines += ["| Argument | Meaning |", "|---|---|"]
        lines += [f"| `{_cell(_name(a))}` | {_cell(_help(a))} |" for a in positionals]
        lines.append("")
    if options:
        lines += ["| Option | Meaning |", "|---|---|"]
        lines += [f"| `{_cell(_option(a))}` | {_cell(_help(a))} |" for a in options]
        lines.append("")
    examples = [
        line.removeprefix("example: ")
        for line in (parser.epilog or "").splitlines()
        if line.startswith("example: ")
    ]
    if examples:
        lines += ["Examples:", "", "```sh", *examples, "```", ""]
    return lines


def _globals_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = [a for a in parser._actions if a.option_strings and _is_global(parser, a)]
    lines = [
        "Global options (accepted before or after any subcommand):",
        "",
        "| Option | Meaning |",
        "|---|---|",
    ]
    lines += [f"| `{_cell(_option(a))}` | {_cell(_help(a))} |" for a in rows]
    return [*lines, ""]


def render(parser: argparse.ArgumentParser) -> str:
    """The generated section, markers included."""
    lines = [
        BEGIN,
        "",
        "## Command reference",
        "",
        "Generated from the argument parser by `scripts/cli_reference.py`; `pushjobs COMMAND "
        "--help` prints the same.",
        "",
        *_globals_table(parser),
    ]
    for words, sub in _walk(parser, ("pushjobs",)):
        if len(words) == 1:
            continue
        lines += _section(words, sub)
    return "\n".join([*lines, END])


def updated(document: str, section: str) -> str:
    """`document` with the marked section replaced (appended when there is none yet)."""
    if BEGIN in document and END in document:
        head, _, rest = document.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + section + tail
    return document.rstrip("\n") + "\n\n" + section + "\n"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(DOC.parents[1]))
    from pushjobs.cli.main import build_parser

    current = DOC.read_text(encoding="utf-8")
    wanted = updated(current, render(build_parser()))
    if "--check" in argv:
        if wanted != current:
            print(f"{DOC} is out of date: run scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        DOC.write_text(wanted, encoding="utf-8")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

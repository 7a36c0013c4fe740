"""Every specification citation in the code and the docs names a section that exists.

The specifications live in `docs/spec/` (see its README); the code and the user documentation
cite them by file and section, and this test keeps those citations true as the files change.

What is scanned: every `*.py` under protocol/ server/ agent/ cli/ bench/ scripts/ tests/ (its
comments and string literals, docstrings included) and every `*.md` under docs/ and bench/, plus
README.md. This file is left out: its samples below are wrong on purpose.

What counts as a citation: a section sign with a number (`§N`, `§N.M`), possibly a list or a
range: `§N, §M`, `§N/§M`, `§N–§M`, `§N.M–N.K`, `§N and §M`. It belongs to the file named
right before it: `lifecycle.md §4`, `` `http-api.md` §7.4 ``, `http-api.md (§3)`, a Markdown
link `[whitelist.md](whitelist.md) §4.1` (resolved like the link, relative to the page), or
right after it: `§8 of wire-protocol.md`.

A bare `§N` (no file named right before or after it) belongs to:
- in Python, the file named last before it in the same comment block or string literal
  ("`http-api.md §7.1, §7.2` and node states (§7.7)"); failing that, the one specification
  file the module docstring names (`test_job_state.py`: "lifecycle.md §5.1 ... §6.3 streams").
  A bare section in a module whose docstring names no file, or several, is an error: which
  specification is meant must be readable where it is cited.
- in Markdown, the page itself (a page numbers its own sections; `[§4.1](#41-...)`).
  Code blocks are read too, but a `#` line in them is not a heading.

A named file is `docs/spec/<name>` (also below it, e.g. `vectors/...`), else `docs/<name>`; the
specifications win where both exist (`cli.md`, `http-api.md`). A section exists when the file
has a heading with that number: `## 4. Title` or `### 4.2 Title`. The short forms
`lifecycle §4` and `vectors §1` are reported too: a citation names the file.

A failure lists every problem as `path:line: citation -> problem`. A second test refuses
paths into the folder outside the repository the specifications were first copied from.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SPEC = DOCS / "spec"
PY_FOLDERS = ("protocol", "server", "agent", "cli", "bench", "scripts", "tests")
MD_FOLDERS = ("docs", "bench")

# Short names that mean a file, reported with the file name to write instead.
ALIASES = {"vectors": "ruby-client-2.0-frames.md", "wire": "wire-protocol.md"}

_NUMBER = r"\d+(?:\.\d+)*"
# One citation group: a section, then more sections joined by lists or ranges.
GROUP_RE = re.compile(
    rf"§\s?(?P<first>{_NUMBER})"
    rf"(?P<rest>(?:\s*(?:[–—-]\s*§?|(?:,|/|\band\b|\bor\b)\s*§)\s?{_NUMBER})*)"
)
NUMBER_RE = re.compile(_NUMBER)
_FILE = r"[A-Za-z0-9_][A-Za-z0-9_./-]*\.md"
# What names the file right before a group: a link, a file name, or a short name.
BEFORE_RE = re.compile(
    rf"(?:\[[^\]\n]*\]\((?P<target>[^)\s#]+\.md)(?:#[^)\s]*)?\)"
    rf"|`?(?P<file>{_FILE})`?"
    rf"|(?P<word>\b[A-Za-z][A-Za-z0-9_-]*))"
    rf"(?P<sep>[ \t]*,?[ \t]*\(?[ \t]*)$"
)
AFTER_RE = re.compile(rf"^[ \t]+of[ \t]+(?:the[ \t]+)?`?(?P<file>{_FILE})`?")
FILE_MENTION_RE = re.compile(rf"(?<![A-Za-z0-9_./-])`?(?P<file>{_FILE})`?")
HEADING_RE = re.compile(rf"^#{{1,6}}\s+(?P<number>{_NUMBER})\.?\s")
FENCE_RE = re.compile(r"^\s*(```|~~~)")
OUTSIDE_RE = re.compile(r"\bshared/(?:spec|vectors)/|/work/shared\b|\bshared\s+folder\b")


@dataclass(frozen=True)
class Text:
    """One piece of text where citations are read together: a comment block, a string literal,
    a Markdown paragraph. `starts` maps offsets in `text` to line numbers."""

    text: str
    starts: tuple[tuple[int, int], ...]  # (offset where a line begins, its line number)

    def line_at(self, offset: int) -> int:
        line = self.starts[0][1]
        for start, number in self.starts:
            if start > offset:
                break
            line = number
        return line


def join_lines(lines: list[tuple[int, str]]) -> Text:
    """Join lines with a space, or with nothing after a hyphen-broken word (`wire-`/`protocol`)."""
    text = ""
    starts: list[tuple[int, int]] = []
    for number, line in lines:
        if text:
            text = text if text.endswith("-") and line[:1].isalpha() else text + " "
        starts.append((len(text), number))
        text += line
    return Text(text, tuple(starts))


# ---- where the text comes from --------------------------------------------------------


def python_texts(source: str) -> Iterator[Text]:
    """Comment blocks (consecutive `#` lines) and string literals of a Python file."""
    block: list[tuple[int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            if block and block[-1][0] != tok.start[0] - 1:
                yield join_lines(block)
                block = []
            block.append((tok.start[0], tok.string.lstrip("#").strip()))
        elif tok.type == tokenize.STRING:
            lines = tok.string.split("\n")
            yield join_lines([(tok.start[0] + i, line.strip()) for i, line in enumerate(lines)])
    if block:
        yield join_lines(block)


def markdown_texts(source: str) -> Iterator[Text]:
    """The paragraphs of a Markdown page (blank-line separated; a code block is one of its own)."""
    paragraph: list[tuple[int, str]] = []
    for number, line in enumerate(source.splitlines(), start=1):
        fence = FENCE_RE.match(line) is not None
        if fence or not line.strip():
            if paragraph:
                yield join_lines(paragraph)
                paragraph = []
            if fence:
                continue
        else:
            paragraph.append((number, line.strip()))
    if paragraph:
        yield join_lines(paragraph)


def scanned_files() -> list[Path]:
    files = [p for folder in PY_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    files += [p for folder in MD_FOLDERS for p in sorted((ROOT / folder).rglob("*.md"))]
    files.append(ROOT / "README.md")
    return [p for p in files if p.is_file() and p != Path(__file__).resolve()]


# ---- files and sections ---------------------------------------------------------------


def resolve(name: str, page: Path | None = None) -> Path | None:
    """The file a citation names: a link target relative to `page`, else by name."""
    if page is not None:
        target = (page.parent / name).resolve()
        return target if target.is_file() else None
    for base in (SPEC, DOCS, ROOT):
        if (base / name).is_file():
            return (base / name).resolve()
    found = sorted(SPEC.rglob(Path(name).name))
    return found[0].resolve() if found else None


@cache
def sections(path: Path) -> frozenset[str]:
    """The section numbers of a Markdown file's headings (code blocks left out)."""
    numbers = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE_RE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING_RE.match(line)):
            numbers.add(m.group("number"))
    return frozenset(numbers)


@cache
def short_names() -> dict[str, str]:
    """`lifecycle` → `lifecycle.md` for every specification, plus the aliases."""
    names = {p.stem: p.name for p in SPEC.glob("*.md") if p.name != "README.md"}
    return {**names, **ALIASES}


def module_home(source: str) -> tuple[Path | None, list[str]]:
    """The one file the module docstring names (or None) and every name it mentions."""
    try:
        doc = ast.get_docstring(ast.parse(source)) or ""
    except SyntaxError:
        doc = ""
    named: dict[Path, str] = {}
    for m in FILE_MENTION_RE.finditer(doc.replace("\n", " ")):
        path = resolve(m.group("file"))
        if path is not None:
            named.setdefault(path, m.group("file"))
    names = sorted(set(named.values()))
    return (next(iter(named)) if len(named) == 1 else None), names


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ---- the check ------------------------------------------------------------------------


def problems_in(path: Path) -> list[str]:
    """`path:line: citation -> problem` for every citation in the file, in line order."""
    try:
        found = sorted(_problems(path), key=lambda item: item[0])
    except (SyntaxError, tokenize.TokenError) as exc:  # being edited: say so, do not crash
        return [f"{relative(path)}: cannot tokenize: {exc}"]
    return [f"{relative(path)}:{line}: {problem}" for line, problem in found]


def _problems(path: Path) -> Iterator[tuple[int, str]]:
    source = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        texts = python_texts(source)
        home, home_names = module_home(source)
    else:
        texts = markdown_texts(source)
        home, home_names = path.resolve(), [path.name]
    for text in texts:
        last_named: Path | None = None  # in Python, a bare section's file within this text
        for group in GROUP_RE.finditer(text.text):
            line = text.line_at(group.start())
            cited = group.group(0)
            numbers = [group.group("first"), *NUMBER_RE.findall(group.group("rest"))]
            before = BEFORE_RE.search(text.text[: group.start()])
            after = AFTER_RE.match(text.text[group.end() :])
            word = sep = None
            if before is not None:
                word, sep = before.group("word"), before.group("sep")
            if before is not None and before.group("target"):
                name = before.group("target")
                target = resolve(name, page=path if path.suffix == ".md" else None)
            elif before is not None and before.group("file"):
                name = before.group("file")
                target = resolve(name)
            elif after is not None:
                name = after.group("file")
                target = resolve(name)
            elif word and sep is not None and word.lower() in short_names() and "(" not in sep:
                fix = f"{short_names()[word.lower()]} {cited}"
                yield line, f"{word} {cited} -> name the file: {fix}"
                continue
            else:
                name = ""
                target = last_named if path.suffix == ".py" and last_named else home
                if target is None:
                    mentioned = ", ".join(home_names) if home_names else "none"
                    yield (
                        line,
                        (
                            f"{cited} -> bare section: name the file "
                            f"(the module docstring names {mentioned})"
                        ),
                    )
                    continue
            if target is None:
                yield line, f"{name} {cited} -> no file {name} in docs/spec/ or docs/"
                continue
            if name:
                last_named = target
            missing = [n for n in numbers if n not in sections(target)]
            if missing:
                label = f"{name} {cited}" if name else cited
                absent = ", ".join("§" + n for n in missing)
                yield line, f"{label} -> no section {absent} in {relative(target)}"


def test_every_citation_names_an_existing_section() -> None:
    problems = [p for path in scanned_files() for p in problems_in(path)]
    assert not problems, f"{len(problems)} unresolved citation(s):\n" + "\n".join(problems)


def test_nothing_points_outside_the_repository() -> None:
    """The specifications and vectors are cited where they are kept: `docs/spec/`."""
    problems = []
    for path in scanned_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if m := OUTSIDE_RE.search(line):
                problems.append(f"{relative(path)}:{number}: {m.group(0)} -> use docs/spec/")
    assert not problems, "\n".join(problems)


# ---- the parser itself ----------------------------------------------------------------


def check_text(tmp_path: Path, text: str, suffix: str = ".py") -> list[str]:
    path = tmp_path / f"sample{suffix}"
    path.write_text(text, encoding="utf-8")
    return [p.split(": ", 1)[1] for p in problems_in(path)]


def test_forms_that_resolve(tmp_path: Path) -> None:
    sample = (
        '"""Jobs (lifecycle.md §4, §5.1/§5.2, §6.3)."""\n'
        "# `http-api.md` §7.4 and §7.5, http-api.md (§3), wire-protocol.md §13–§15\n"
        "# agent.md §3–4, §16; §8 of wire-protocol.md\n"
        "x = 1  # bare: the docstring's file (§9)\n"
    )
    assert check_text(tmp_path, sample) == []


def test_forms_that_fail(tmp_path: Path) -> None:
    sample = (
        '"""Names two files: lifecycle.md and agent.md."""\n'
        "# lifecycle.md §99\n"
        "# wire-protocol §4\n"
        "x = 1\n"
        "# §2\n"
        "x = 2  # nosuch.md §1\n"
        "# http-api.md §7.4–§7.99\n"
    )
    assert check_text(tmp_path, sample) == [
        "lifecycle.md §99 -> no section §99 in docs/spec/lifecycle.md",
        "wire-protocol §4 -> name the file: wire-protocol.md §4",
        "§2 -> bare section: name the file (the module docstring names agent.md, lifecycle.md)",
        "nosuch.md §1 -> no file nosuch.md in docs/spec/ or docs/",
        "http-api.md §7.4–§7.99 -> no section §7.99 in docs/spec/http-api.md",
    ]


def test_markdown_bare_sections_are_the_page(tmp_path: Path) -> None:
    page = "# Page\n\n## 1. One\n\nSee §1 and [§1](#1-one); not §2.\n\n```\n# 2. no heading\n```\n"
    expected = f"§2 -> no section §2 in {(tmp_path / 'sample.md').resolve()}"
    assert check_text(tmp_path, page, ".md") == [expected]
    code = "```\nhttp/   pipeline (http-api.md §3), feeds (lifecycle.md §99)\n```\n"
    assert check_text(tmp_path, code, ".md") == [
        "lifecycle.md §99 -> no section §99 in docs/spec/lifecycle.md"
    ]

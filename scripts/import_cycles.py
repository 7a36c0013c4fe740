#!/usr/bin/env python3
"""Report import cycles among a package's modules; exit 1 when there is any.

    python scripts/import_cycles.py [DIR=PACKAGE ...]     (default: server=pushjobs.server)

Every import counts: module level, inside functions, and under `if TYPE_CHECKING:` — a cycle
that only the type checker sees is still two modules that cannot be understood apart. Only
imports of modules of the same package are followed; `from pkg import name` counts as an import
of `pkg.name` when that is a module, else of `pkg`.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ("server=pushjobs.server",)


def modules(folder: Path, package: str) -> dict[str, Path]:
    """Dotted module name → file, for every `.py` file under `folder`."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module of the package, line) for every import in the file at `path`."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _nearest(alias.name, known)
                if target is not None:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, is_package, node.module, node.level)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in known else _nearest(base, known)
                if target is not None:
                    yield target, node.lineno


def _absolute(name: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    parts = name.split(".")
    if not is_package:
        parts.pop()
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


def _nearest(dotted: str, known: dict[str, Path]) -> str | None:
    """The module itself, or the closest enclosing package of it that is known."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found)


def one_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest import path from the component's first module back to itself."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target not in members:
                continue
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if target not in previous:
                previous[target] = node
                queue.append(target)
    return component


def main(argv: list[str]) -> int:
    graph: dict[str, dict[str, int]] = {}
    files: dict[str, Path] = {}
    for spec in argv or DEFAULT:
        folder, _, package = spec.partition("=")
        known = modules(ROOT / folder, package)
        files.update(known)
        for name, file in known.items():
            edges = graph.setdefault(name, {})
            for target, line in imported(name, file, known):
                if target != name:
                    edges.setdefault(target, line)
    found = cycles(graph)
    if not found:
        print(f"no import cycles among {len(graph)} modules")
        return 0
    for component in found:
        path = one_cycle(graph, component)
        print(f"import cycle ({len(component)} modules): {', '.join(component)}")
        for source, target in itertools.pairwise(path):
            where = files[source].relative_to(ROOT)
            print(f"  {source} -> {target}  ({where}:{graph[source][target]})")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Building the `POST pushy/jobs` body from command-line options (cli.md §3.1–§3.4).

Also the rollout limits `--max-concurrency` / `--max-errors` (cli.md §3.7): checked with the
server's rules (http-api.md §7.4) and resolved against the node count as the server does
(lifecycle.md §12.1). Pure: no I/O besides the file readers named `read_*`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from pushjobs.cli.errors import UsageError
from pushjobs.protocol.limits import JOB_FILE_LIMIT
from pushjobs.protocol.selector import SelectorError, parse_selector

QUORUM_ERROR = "Invalid Format please enter integer or percent"
ENV_ERROR = "--with-env must be a JSON object of strings"
NO_NODES = "No nodes to run job on. Specify nodes as arguments or use -s to specify a search query."
WHERE_QUORUM = "with --where, --quorum must be a count or 100%"
_QUORUM_COUNT = re.compile(r"[0-9]+")
_QUORUM_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)%")
_LIMIT_COUNT = re.compile(r"[0-9]+")
_LIMIT_PERCENT = re.compile(r"([0-9]{1,3})%")
INT_MAX = 2**31 - 1
LIMIT_ERRORS = {
    "--max-concurrency": "--max-concurrency must be an integer >= 1 or a percentage N% "
    "(N from 1 to 100), not {value!r}",
    "--max-errors": "--max-errors must be an integer >= 0 or a percentage N% "
    "(N from 0 to 100), not {value!r}",
}


def parse_quorum(text: str, node_count: int) -> int:
    """`N` → N; `P%` → ceil(P/100 × node_count), computed exactly; anything else → UsageError."""
    text = text.strip()
    if _QUORUM_COUNT.fullmatch(text):
        return int(text)
    m = _QUORUM_PERCENT.fullmatch(text)
    if m:
        return math.ceil(Fraction(m.group(1)) * node_count / 100)
    raise UsageError(QUORUM_ERROR)


def parse_limit(text: str, option: str) -> int | str:
    """`--max-concurrency` (least 1) or `--max-errors` (least 0): an int, or `"N%"` as given.

    The same rules as the server's (http-api.md §7.4): integers up to 2^31-1, percentages
    `[0-9]{1,3}%` up to 100; anything else is a UsageError naming the option.
    """
    least = 1 if option == "--max-concurrency" else 0
    value = text.strip()
    if _LIMIT_COUNT.fullmatch(value) and least <= int(value) <= INT_MAX:
        return int(value)
    m = _LIMIT_PERCENT.fullmatch(value)
    if m and least <= int(m.group(1)) <= 100:
        return f"{int(m.group(1))}%"
    raise UsageError(LIMIT_ERRORS[option].format(value=text))


def _percent(value: int | str) -> int | None:
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        return int(value[:-1])
    return None


def resolve_concurrency(value: Any, node_count: int) -> int | None:
    """The concurrency limit L: an int as given, `"N%"` → ceil(N·n/100), at least 1."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    pct = _percent(value)
    return None if pct is None else max(1, -(-pct * node_count // 100))


def resolve_errors(value: Any, node_count: int) -> int | None:
    """The error budget E: an int as given, `"N%"` → floor(N·n/100)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    pct = _percent(value)
    return None if pct is None else pct * node_count // 100


def encode_file_content(data: bytes) -> str:
    """`raw:` + text when the bytes are valid UTF-8, else `base64:` + base64."""
    try:
        return "raw:" + data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode("ascii")


def read_job_file(path: str) -> str:
    """Read and encode `--file`; missing → `<file> not found`; over 100,000 bytes → UsageError."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path} not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > JOB_FILE_LIMIT:
        raise UsageError(
            f"{path} is too large: {len(data)} bytes (a job file may have at most "
            f"{JOB_FILE_LIMIT} bytes)"
        )
    return encode_file_content(data)


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def parse_env(text: str) -> dict[str, str]:
    """`--with-env`: a JSON object whose values are strings (duplicate keys refused)."""
    try:
        env = json.loads(text, object_pairs_hook=_pairs_no_duplicates)
    except ValueError:
        raise UsageError(ENV_ERROR) from None
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise UsageError(ENV_ERROR)
    return env


def parse_node_lines(text: str) -> list[str]:
    """Node names from a nodes file: one a line; blank lines and `#` comments ignored."""
    names = []
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def read_nodes_file(path: str, stdin: TextIO) -> list[str]:
    """`--nodes-file FILE` (`-` = stdin)."""
    if path == "-":
        return parse_node_lines(stdin.read())
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return parse_node_lines(text)


def unique(names: Iterable[str]) -> list[str]:
    """Duplicates removed, first occurrence kept."""
    return list(dict.fromkeys(names))


def build_job_body(
    *,
    command: str,
    nodes: list[str],
    quorum: int | None,
    capture: bool,
    env: dict[str, str],
    run_timeout: int | None = None,
    file: str | None = None,
    user: str | None = None,
    dir: str | None = None,
    max_concurrency: int | str | None = None,
    max_errors: int | str | None = None,
    selector: str | None = None,
) -> dict[str, Any]:
    """The request body of cli.md §3.4 step 2: five keys always (`quorum` not when None: the
    server's default, every node), the options only when given."""
    body: dict[str, Any] = {"command": command, "nodes": nodes}
    if quorum is not None:
        body["quorum"] = quorum
    body["capture_output"] = capture
    body["env"] = env
    if run_timeout is not None:
        body["run_timeout"] = run_timeout
    if file is not None:
        body["file"] = file
    if user is not None:
        body["user"] = user
    if dir is not None:
        body["dir"] = dir
    if max_concurrency is not None:
        body["max_concurrency"] = max_concurrency
    if max_errors is not None:
        body["max_errors"] = max_errors
    if selector is not None:
        body["selector"] = selector
    return body


def where_selector(where: list[str] | None) -> str | None:
    """`--where` options joined with commas into one label selector, checked; None without."""
    if not where:
        return None
    text = ",".join(where)
    try:
        parse_selector(text)
    except SelectorError as exc:
        raise UsageError(str(exc)) from None
    return text


def selector_quorum(text: str) -> int | None:
    """`--quorum` with `--where` (the node count is known only to the server): a count as
    given, `100%` → None (the server's default, every node); another percentage is refused."""
    text = text.strip()
    if _QUORUM_COUNT.fullmatch(text):
        return int(text)
    if _QUORUM_PERCENT.fullmatch(text) and Fraction(text[:-1]) == 100:
        return None
    raise UsageError(WHERE_QUORUM)

"""Validation of a `POST org/jobs` body (http-api.md §7.4): bytes → JobSpec or the error text."""

from __future__ import annotations

import base64
import binascii
import json
import re
from decimal import Decimal
from typing import Any

from pushjobs.protocol.limits import JOB_FILE_LIMIT, JOB_INT_MAX
from pushjobs.protocol.selector import SelectorError, parse_selector
from pushjobs.server.store.records import JobSpec

UNKNOWN = "an unknown validation error has occurred"
INVALID_COMMAND = "invalid command supplied"
NO_NODES = "at least one node must be supplied"
BAD_RUN_TIMEOUT = "invalid type supplied for run_timeout (expected a number)"
BAD_QUORUM = "invalid type supplied for quorum (expected a number)"
BAD_CAPTURE = "invalid type supplied for capture_output (expected a boolean)"
INVALID_KEY = "invalid key supplied"
DUPLICATE_ENV = "invalid environment value (duplicate key)"
BAD_FILE_PREFIX = "invalid file contents (expected 'base64:...' or 'raw:...')"
BAD_FILE_BASE64 = "invalid file contents (couldn't decode base64 string)"
BAD_FILE_SIZE = f"invalid file size (must be <= {JOB_FILE_LIMIT} bytes)"
BAD_MAX_CONCURRENCY = "invalid max_concurrency (expected an integer >= 1 or a percentage)"
BAD_MAX_ERRORS = "invalid max_errors (expected an integer >= 0 or a percentage)"
BAD_SELECTOR_TYPE = "invalid selector (expected a string)"

KEYS = (
    "command",
    "nodes",
    "run_timeout",
    "quorum",
    "user",
    "dir",
    "env",
    "file",
    "capture_output",
    "max_concurrency",  # extension (lifecycle.md §12)
    "max_errors",  # extension (lifecycle.md §12)
    "selector",  # extension (http-api.md §7.4)
)
_PERCENT = re.compile(r"([0-9]{1,3})%")


class JobValidationError(ValueError):
    """The body is invalid; `message` is the exact 400 text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Pairs(dict):
    """A decoded JSON object that remembers whether a key occurred twice."""

    duplicate: bool = False


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs()
    for key, value in pairs:
        if key in obj:
            obj.duplicate = True
        obj[key] = value  # last occurrence wins
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _has_surrogates(value: Any) -> bool:
    """True when a string anywhere in the document holds a lone surrogate (not valid Unicode)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _integer(value: Any) -> int | None:
    """The value as an int when it is a JSON number with an integral value in 0..2^31-1.

    Numbers are decoded as exact `Decimal`s, so `1e-400` is not mistaken for 0 and a
    5000-digit integer is simply out of range (int() refuses such strings).
    """
    if not isinstance(value, Decimal) or not 0 <= value <= JOB_INT_MAX:
        return None
    if value != value.to_integral_value():
        return None
    return int(value)


def _limit(value: Any, minimum: int) -> int | str | None:
    """A `max_concurrency`/`max_errors` value as given (a count >= `minimum`, or `"N%"` with
    `minimum` <= N <= 100); None when invalid."""
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value)
        if match is None or not minimum <= int(match.group(1)) <= 100:
            return None
        return value
    count = _integer(value)
    return count if count is not None and count >= minimum else None


def resolve_limit(value: int | str, node_count: int, *, round_up: bool) -> int:
    """A limit as given, as a node count: `"N%"` of `node_count`, rounded up or down."""
    if isinstance(value, int):
        return value
    share = int(value[:-1]) * node_count
    return -(-share // 100) if round_up else share // 100


def _file_size(text: str) -> int:
    """Decoded size of a `raw:`/`base64:` file value; raises JobValidationError."""
    if text.startswith("raw:"):
        return len(text[4:].encode("utf-8"))
    if text.startswith("base64:"):
        payload = text[7:]
        try:
            return len(base64.b64decode(payload.encode("ascii"), validate=True))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise JobValidationError(BAD_FILE_BASE64) from None
    raise JobValidationError(BAD_FILE_PREFIX)


def validate_job_body(body: bytes, default_run_timeout: int) -> JobSpec:
    """Validate the body in the spec's order; JobValidationError carries the first failure."""
    try:
        data = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_object_pairs,
            parse_constant=_reject_constant,
            parse_float=Decimal,
            parse_int=Decimal,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JobValidationError(UNKNOWN) from None
    if not isinstance(data, dict) or _has_surrogates(data):
        raise JobValidationError(UNKNOWN)

    command = data.get("command")
    if not isinstance(command, str):
        raise JobValidationError(INVALID_COMMAND)
    selector = data.get("selector")
    nodes = data.get("nodes", [] if "selector" in data else None)
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise JobValidationError(NO_NODES)
    run_timeout: int | None = default_run_timeout
    if "run_timeout" in data:
        run_timeout = _integer(data["run_timeout"])
        if run_timeout is None:
            raise JobValidationError(BAD_RUN_TIMEOUT)
    quorum: int | None = None
    if "quorum" in data:
        quorum = _integer(data["quorum"])
        if quorum is None:
            raise JobValidationError(BAD_QUORUM)
    for key in ("user", "dir"):
        if key in data and not isinstance(data[key], str):
            raise JobValidationError(UNKNOWN)
    env = data.get("env")
    if "env" in data and (
        not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values())
    ):
        raise JobValidationError(UNKNOWN)
    file = data.get("file")
    if "file" in data and not isinstance(file, str):
        raise JobValidationError(UNKNOWN)
    capture = data.get("capture_output", False)
    if not isinstance(capture, bool):
        raise JobValidationError(BAD_CAPTURE)
    max_concurrency = max_errors = None
    if "max_concurrency" in data:
        max_concurrency = _limit(data["max_concurrency"], 1)
        if max_concurrency is None:
            raise JobValidationError(BAD_MAX_CONCURRENCY)
    if "max_errors" in data:
        max_errors = _limit(data["max_errors"], 0)
        if max_errors is None:
            raise JobValidationError(BAD_MAX_ERRORS)
    if "selector" in data and not isinstance(selector, str):
        raise JobValidationError(BAD_SELECTOR_TYPE)

    if any(key not in KEYS for key in data):
        raise JobValidationError(INVALID_KEY)
    if not nodes and selector is None:
        raise JobValidationError(NO_NODES)
    if isinstance(env, _Pairs) and env.duplicate:
        raise JobValidationError(DUPLICATE_ENV)
    if file is not None and _file_size(file) > JOB_FILE_LIMIT:
        raise JobValidationError(BAD_FILE_SIZE)
    if selector is not None:
        try:
            parse_selector(selector)
        except SelectorError as exc:
            raise JobValidationError(str(exc)) from None

    distinct = list(dict.fromkeys(nodes))
    return JobSpec(
        command=command,
        nodes=distinct,
        quorum=len(distinct) if quorum is None else quorum,
        run_timeout=run_timeout if run_timeout is not None else default_run_timeout,
        user=data.get("user"),
        dir=data.get("dir"),
        env=dict(env) if env is not None else None,
        file=file,
        capture=capture,
        max_concurrency=max_concurrency,
        max_errors=max_errors,
        selector=selector,
        quorum_given=quorum is not None,
    )

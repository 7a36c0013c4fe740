"""Body codecs: protocol 2.0 (compact JSON) and 3.0 (msgpack) (wire-protocol.md §5)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgpack

from .errors import BodyError
from .header import VERSIONS

_SCALARS = (str, bytes, int, float, bool, type(None))


def encode_body(version: str, fields: Mapping[str, Any]) -> bytes:
    """Encode a message map: 2.0 compact UTF-8 JSON in the given key order; 3.0 msgpack."""
    try:
        if version == "2.0":
            text = json.dumps(
                dict(fields), separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
            return text.encode("utf-8")
        if version == "3.0":
            return msgpack.packb(dict(fields), use_bin_type=True)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise BodyError(f"cannot encode body: {exc}") from None
    raise BodyError(f"unsupported protocol version {version!r}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from a JSON "\\ud800" escape
        raise BodyError("string is not valid Unicode") from None


def _check_tree(root: Any) -> None:
    """Every map key is a str, every str valid Unicode; only plain types (no ext, no timestamps)."""
    stack = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if not isinstance(key, str):
                    raise BodyError("map keys must be strings")
                _check_text(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif not isinstance(item, _SCALARS):
            raise BodyError(f"unsupported value of type {type(item).__name__}")


def _check_msgpack_tree(root: Any) -> None:
    """`_check_tree` for what msgpack decoded: its strings are already strict UTF-8 (no lone
    surrogates) and ext types are refused (`max_ext_len=0`), so only map keys can be wrong
    (`strict_map_key` also admits bytes). Heartbeats take this path many thousand times a
    second: it looks only into containers."""
    stack = [root]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key, value in item.items():
                if type(key) is not str:
                    raise BodyError("map keys must be strings")
                if type(value) is dict or type(value) is list:
                    stack.append(value)
        elif type(item) is list:
            stack.extend(v for v in item if type(v) is dict or type(v) is list)


def decode_body(version: str, raw: bytes, max_size: int) -> dict[str, Any]:
    """Decode a body to a map; BodyError when too large, malformed or not an object/map."""
    if version not in VERSIONS:
        raise BodyError(f"unsupported protocol version {version!r}")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise BodyError("body must be bytes")
    raw = bytes(raw)
    if len(raw) > max_size:
        raise BodyError(f"body of {len(raw)} bytes exceeds {max_size} bytes")
    try:
        if version == "2.0":
            value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
            _check_tree(value)
        else:
            limit = max(max_size, 1)
            value = msgpack.unpackb(
                raw,
                raw=False,
                strict_map_key=True,
                use_list=True,
                max_str_len=limit,
                max_bin_len=limit,
                max_array_len=limit,
                max_map_len=limit,
                max_ext_len=0,
            )
            _check_msgpack_tree(value)
    except BodyError:
        raise
    # Malformed input shows up as many exception types (UnicodeDecodeError, JSONDecodeError,
    # msgpack's ExtraData/FormatError/StackError, RecursionError on deep nesting, ...).
    except Exception as exc:
        raise BodyError(f"malformed {version} body: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise BodyError("body is not an object/map")
    return value

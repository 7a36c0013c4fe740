"""JSON responses as the API sends them: compact, UTF-8, non-ASCII not escaped."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from pushjobs.protocol.vocabulary import MediaType


def dump_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON bytes (no spaces, non-ASCII kept as UTF-8, NaN refused)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A response with `Content-Type: application/json` and the compact JSON body of `obj`."""
    return Response(dump_json(obj), status_code=status, headers=headers, media_type=MediaType.JSON)

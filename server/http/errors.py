"""The HTTP error answer every pipeline step and handler raises (http-api.md §6.1)."""

from __future__ import annotations

from typing import Any

WWW_AUTHENTICATE = 'X-Ops-Sign version="1.0" version="1.1"'


class HttpError(Exception):
    """An error answer: status, the spec's text, and the body shape.

    The body is `{"error": [message]}`, or `{"error": message}` with `string_shape=True`
    (413 and job body validation, http-api.md §6.1).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        string_shape: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.string_shape = string_shape
        self.headers = dict(headers) if headers else {}

    def body(self) -> dict[str, Any]:
        """The JSON object sent for this error."""
        return {"error": self.message if self.string_shape else [self.message]}

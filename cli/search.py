"""Chef Server node search (cli.md §3.2): partial search for names, every page read."""

from __future__ import annotations

import json
from typing import Any

from pushjobs.cli.client import SignedClient, decode_json, with_query
from pushjobs.cli.errors import RequestError, UsageError

ROWS = 1000
NEEDS_CHEF = "--search needs chef_server_url (the Chef Server to search)"
PARTIAL_BODY = json.dumps({"name": ["name"]}, separators=(",", ":")).encode()


def row_names(rows: Any) -> list[str]:
    """Node names from search rows: partial search (`{"data": {"name": ...}}`) or full objects."""
    names = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        data = row.get("data", row)
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(name, str) and name:
            names.append(name)
    return names


def search_nodes(client: SignedClient, chef_server_url: str | None, query: str) -> list[str]:
    """All node names matching `query`; RequestError `search failed: ...` on any failure."""
    if not chef_server_url:
        raise UsageError(NEEDS_CHEF)
    base = chef_server_url.rstrip("/")
    names: list[str] = []
    start = 0
    while True:
        url = with_query(
            f"{base}/search/node", {"q": query, "start": str(start), "rows": str(ROWS)}
        )
        try:
            response = client.send("POST", url, body=PARTIAL_BODY, base=base)
            page = decode_json(response, url)
        except RequestError as e:
            raise RequestError(f"search failed: {e.message}") from None
        if not isinstance(page, dict):
            raise RequestError("search failed: unexpected answer from the Chef Server")
        rows = page.get("rows")
        names.extend(row_names(rows))
        count = len(rows) if isinstance(rows, list) else 0
        total = page.get("total")
        start += count
        if count == 0 or not isinstance(total, int) or start >= total:
            return names

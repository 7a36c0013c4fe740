"""What the server knows of an organization's nodes for listings and selectors (http-api.md
§7.7, §7.4): online nodes, nodes that ever connected with their last labels, registered
clients. Labels come from the store's inventory, overlaid by this server's live ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pushjobs.server.http.deps import HttpDeps


@dataclass(frozen=True)
class KnownNode:
    """A node of the organization as the listing shows it."""

    name: str
    phase: str | None  # None: offline
    labels: dict[str, str]
    last_seen: float | None  # epoch seconds of the last recorded connect / labels; None: never


async def known_nodes(deps: HttpDeps, org: str, *, registered: bool) -> list[KnownNode]:
    """Online nodes and nodes that ever connected (plus, with `registered`, every client of
    the organization), sorted by name."""
    online = dict(deps.nodes.online_nodes(org))
    stored = [] if deps.inventory is None else await deps.inventory.node_inventory(org)
    names = set(online)
    labels: dict[str, dict[str, str]] = {}
    seen: dict[str, float] = {}
    for record in stored:
        names.add(record.node_name)
        seen[record.node_name] = record.last_seen
        if record.labels is not None:
            labels[record.node_name] = record.labels
    labels.update(deps.nodes.labels(org))
    if registered and deps.inventory is not None:
        names.update(await deps.inventory.list_clients(org))
    return [
        KnownNode(name, online.get(name), labels.get(name, {}), seen.get(name))
        for name in sorted(names)
    ]

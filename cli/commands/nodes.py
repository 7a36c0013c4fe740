"""`node status` (cli.md §9)."""

from __future__ import annotations

from typing import Any

from pushjobs.cli import exitcodes
from pushjobs.cli.app import App
from pushjobs.cli.client import segment
from pushjobs.cli.errors import RequestError
from pushjobs.cli.jobspec import unique, where_selector
from pushjobs.cli.search import search_nodes
from pushjobs.protocol.vocabulary import Availability, NodePresence


def node_names(app: App, arguments: list[str]) -> list[str]:
    """Arguments in order; one containing `:` is a Chef Server search whose hits replace it."""
    names: list[str] = []
    for arg in arguments:
        if ":" in arg:
            names.extend(search_nodes(app.client(), app.settings().chef_server_url, arg))
        else:
            names.append(arg)
    return unique(names)


def node_line(
    state: dict[str, Any], long: bool, *, every: bool = False, labels: bool = False
) -> str:
    """`<node_name>\t<availability>` (+ `\t<status>` with --long or --all, `\t<last seen>`
    with --all, `\t<k=v,...>` with --labels)."""
    line = f"{state.get('node_name', '')}\t{state.get('availability', Availability.UNAVAILABLE)}"
    if long or every:
        line += f"\t{state.get('status', NodePresence.ONLINE)}"
    if every:
        line += f"\t{state.get('last_seen') or 'never connected'}"
    if labels:
        found = state.get("labels")
        pairs = found.items() if isinstance(found, dict) else ()
        line += "\t" + (",".join(f"{k}={v}" for k, v in sorted(pairs)) or "-")
    return line


def _listing(app: App, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    doc = app.client().get_json("node_states", params)
    if not isinstance(doc, list):
        raise RequestError("unexpected answer for node_states: not a JSON array")
    return sorted(
        (s for s in doc if isinstance(s, dict)), key=lambda s: str(s.get("node_name", ""))
    )


def cmd_node_status(app: App) -> int:
    """`node status` (§9)."""
    a = app.args
    selector = where_selector(a.where)
    states: list[dict[str, Any]]
    if selector is not None or a.labels or a.all:
        params = [("labels", "true")] if a.labels else []
        if a.all or a.nodes:  # named nodes are looked for among offline ones too
            params.append(("all", "true"))
        if selector is not None:
            params.append(("selector", selector))
        states = _listing(app, params)
        if a.nodes:
            wanted = set(node_names(app, a.nodes))
            states = [s for s in states if s.get("node_name") in wanted]
    elif not a.nodes:
        states = _listing(app, [])
    else:
        client = app.client()
        states = []
        for name in node_names(app, a.nodes):
            doc = client.get_json(f"node_states/{segment(name)}")
            if not isinstance(doc, dict):
                raise RequestError(f"unexpected answer for node {name}: not a JSON object")
            states.append(doc)
    if app.json:
        app.print_json(states)
    else:
        for state in states:
            # The list endpoint only lists online nodes, so a missing status means online.
            app.print(node_line(state, a.long, every=a.all, labels=a.labels))
    return exitcodes.OK

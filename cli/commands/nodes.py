"""`node status` (cli.md §9)."""

from __future__ import annotations

from typing import Any

from pushjobs.cli import exitcodes
from pushjobs.cli.app import App
from pushjobs.cli.client import segment
from pushjobs.cli.errors import RequestError
from pushjobs.cli.jobspec import unique
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


def node_line(state: dict[str, Any], long: bool) -> str:
    """`<node_name>\\t<availability>` (+ `\\t<status>` with --long)."""
    line = f"{state.get('node_name', '')}\t{state.get('availability', Availability.UNAVAILABLE)}"
    if long:
        line += f"\t{state.get('status', NodePresence.ONLINE)}"
    return line


def cmd_node_status(app: App) -> int:
    """`node status` (§9)."""
    a = app.args
    client = app.client()
    states: list[dict[str, Any]]
    if not a.nodes:
        doc = client.get_json("node_states")
        if not isinstance(doc, list):
            raise RequestError("unexpected answer for node_states: not a JSON array")
        states = sorted(
            (s for s in doc if isinstance(s, dict)), key=lambda s: str(s.get("node_name", ""))
        )
    else:
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
            app.print(node_line(state, a.long))
    return exitcodes.OK

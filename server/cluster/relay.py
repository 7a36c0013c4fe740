"""Agents' messages for jobs another server coordinates, and the other servers' batches for
this server's nodes (docs/cluster.md).

`ClusterJobs` stands between the broker and the job manager: a message about a job that is
live here goes to the manager; one about a job whose commands came from another server goes
back to that server through the outbox. `Inbox.handle` carries out what other servers sent:
commands and rehab requests for this server's nodes, and agents' messages for its jobs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pushjobs.protocol.errors import MessageError
from pushjobs.protocol.messages import parse_agent_message
from pushjobs.protocol.vocabulary import MessageType
from pushjobs.server.lru import LruCache

if TYPE_CHECKING:
    from pushjobs.protocol.messages import AgentMessage
    from pushjobs.server.cluster.nodes import Outbox
    from pushjobs.server.jobs.manager import JobManager
    from pushjobs.server.nodes.registry import NodeRegistry

log = logging.getLogger("pushjobs.server.cluster")

REMOTE_JOBS = 65536  # jobs coordinated elsewhere that this server remembers sending for


class ClusterJobs:
    """The broker's job engine in a cluster: the local manager, or a relay to the coordinator."""

    def __init__(self, manager: JobManager, outbox: Outbox) -> None:
        self.manager = manager
        self.outbox = outbox
        self.coordinators: LruCache[str, str] = LruCache(REMOTE_JOBS)  # job id → server id

    def _coordinator(self, org: str, job_id: str | None) -> str | None:
        if job_id is None or self.manager.live_job(org, job_id) is not None:
            return None
        return self.coordinators.get(job_id)

    def is_live_member(self, org: str, node: str, job_id: str) -> bool:
        return self.manager.is_live_member(org, node, job_id) or (
            self._coordinator(org, job_id) is not None
        )

    def on_job_message(self, org: str, node: str, msg: AgentMessage, version: str) -> bool:
        target = self._coordinator(org, msg.job_id)
        if target is None:
            return self.manager.on_job_message(org, node, msg, version)
        self.outbox.relay(target, org, node, version, msg.to_dict())
        return True

    def on_aborted(self, org: str, node: str, msg: AgentMessage) -> None:
        target = self._coordinator(org, msg.job_id)
        if target is None:
            self.manager.on_aborted(org, node, msg)
        else:
            self.outbox.relay(target, org, node, "", msg.to_dict())

    def on_output(self, org: str, node: str, msg: AgentMessage) -> None:
        target = self._coordinator(org, msg.job_id)
        if target is None:
            self.manager.on_output(org, node, msg)
        else:
            self.outbox.relay(target, org, node, "3.0", msg.to_dict())


class Inbox:
    """Carries out the entries other servers sent this server."""

    def __init__(self, registry: NodeRegistry, jobs: ClusterJobs, outbox: Outbox) -> None:
        self.registry = registry
        self.jobs = jobs
        self.outbox = outbox

    def handle(self, source: str, entry: Any) -> None:
        if not isinstance(entry, dict):
            log.warning("cluster message from %s ignored: not a map", source)
            return
        kind = entry.get("k")
        try:
            if kind == "cmd":
                self._command(source, entry)
            elif kind == "rehab":
                for node in entry["nodes"]:
                    self.registry.rehab(entry["org"], node)
            elif kind == "msg":
                self._agent_message(source, entry)
            else:
                log.warning("cluster message from %s ignored: unknown kind %r", source, kind)
        except (KeyError, TypeError, ValueError, MessageError) as exc:
            log.warning("cluster message from %s ignored: %s", source, exc)

    def _command(self, source: str, entry: dict[str, Any]) -> None:
        org, msg_type, fields = entry["org"], entry["type"], entry["fields"]
        job_id = fields.get("job_id")
        if isinstance(job_id, str) and msg_type in (MessageType.COMMIT, MessageType.RUN):
            self.jobs.coordinators.put(job_id, source)
        for node in entry["nodes"]:
            self.registry.send_command(org, node, msg_type, fields)

    def _agent_message(self, source: str, entry: dict[str, Any]) -> None:
        org, node, version, fields = entry["org"], entry["node"], entry["version"], entry["fields"]
        msg = parse_agent_message(fields, version or "2.0")
        manager = self.jobs.manager
        if msg.TYPE == MessageType.OUTPUT:
            manager.on_output(org, node, msg)
        elif msg.TYPE == MessageType.ABORTED:
            manager.on_aborted(org, node, msg)
        elif not manager.on_job_message(org, node, msg, version):
            # The job is not live here (any more): the node's server rehabs it, as the broker
            # does for a local node.
            self.outbox.rehab(source, org, node)

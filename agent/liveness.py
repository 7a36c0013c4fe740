"""Server liveness as the agent sees it (agent.md §7). Pure."""

from __future__ import annotations

from pushjobs.protocol.limits import OFFLINE_THRESHOLD, ONLINE_THRESHOLD

SEND, OFFLINE, QUIET = "send", "offline", "quiet"


class ServerLiveness:
    """Counts heartbeat ticks without a server heartbeat; declares the server offline/online."""

    def __init__(
        self, offline_threshold: int = OFFLINE_THRESHOLD, online_threshold: int = ONLINE_THRESHOLD
    ) -> None:
        self.offline_threshold = offline_threshold
        self.online_threshold = online_threshold
        self.reset()

    def reset(self) -> None:
        """At (re)connect: the server is online, both counters 0."""
        self.online = True
        self.offline_counter = 0
        self.online_counter = 0

    def tick(self) -> str:
        """Every interval: SEND a heartbeat, declare the server OFFLINE, or stay QUIET."""
        if not self.online:
            return QUIET
        if self.offline_counter > self.offline_threshold:
            self.online = False
            self.online_counter = 0
            return OFFLINE
        self.offline_counter += 1
        return SEND

    def heard(self) -> bool:
        """A valid server heartbeat arrived; True when that brings the server back online."""
        self.offline_counter = 0
        if self.online:
            return False
        self.online_counter += 1
        if self.online_counter > self.online_threshold:
            self.online = True
            return True
        return False

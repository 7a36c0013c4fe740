"""A userspace impairing link between network namespaces over TUN devices (tc netem's stand-in).

    python tun_link.py NAME=NETNS=ADDRESS ...

For each argument it creates a TUN device `pjlink` (IFF_TUN | IFF_NO_PI) in namespace NETNS
(entered with setns(2) just for the ioctl), gives it ADDRESS/24, brings it and `lo` up and prints
`ready`. Then it forwards every IPv4 packet read from one device to the device that owns the
packet's destination address: a star with this process at its centre, one "link" per namespace.

Each link has settings that apply to every packet crossing it, in either direction: `loss`
(probability of a silent drop), `delay` (seconds added, one way) and `down` (drop everything: a
silent partition, also for packets already queued). A packet from A to B crosses link A and
link B, so their losses both apply and their delays add up. Packets of one direction (source
link → destination link) leave in the order they came, whatever the delay (netem without
reordering); only loss takes some away.

Commands on stdin, one per line, each answered by one line on stdout (`ok ...` or `error: ...`):

    set NAMES [loss=P] [delay=S]    NAMES: comma-separated link names, or `*` for every link
    down NAMES | up NAMES           (either also ends flapping)
    flap NAMES PERIOD DURATION      down now, toggled every PERIOD s, up again after DURATION s
    clear                           every link: loss 0, delay 0, up, not flapping
    stats                           `ok {json}`: per link its state and packet counters: `in`
                                    (read from its device), `out` (written to it), `lost`
                                    (loss), `cut` (down), `unroutable`

End of input (the test process went away) stops the forwarder; its devices vanish with it.
Standard library only; Linux; needs CAP_NET_ADMIN and CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import itertools
import json
import os
import random
import selectors
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
DEVICE = "pjlink"
READ_BURST = 64  # packets read from one device before looking at the others
PACKET_MAX = 65535

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open as `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class Link:
    """One namespace's device and the settings of its link."""

    name: str
    netns: str
    address: str
    fd: int = -1
    loss: float = 0.0
    delay: float = 0.0
    down: bool = False
    flap_period: float = 0.0
    flap_next: float | None = None  # next toggle while flapping
    flap_end: float = 0.0
    toggles: int = 0
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("in", "out", "lost", "cut", "unroutable"), 0)
    )

    def reset(self) -> None:
        self.loss, self.delay = 0.0, 0.0
        self.set_down(False)

    def set_down(self, down: bool) -> None:
        """Down or up for good (flapping ends)."""
        self.down, self.flap_next = down, None

    def flap(self, period: float, duration: float, now: float) -> None:
        self.down, self.toggles = True, 1
        self.flap_period, self.flap_next, self.flap_end = period, now + period, now + duration

    def flap_due(self, now: float) -> None:
        """Toggle while a toggle is due; up (and steady) once the flapping time is over."""
        while self.flap_next is not None and self.flap_next <= now:
            if self.flap_next >= self.flap_end:
                self.set_down(False)
                return
            self.down = not self.down
            self.toggles += 1
            self.flap_next = min(self.flap_next + self.flap_period, self.flap_end)

    def state(self) -> dict[str, object]:
        return {
            **self.stats,
            "loss": self.loss,
            "delay": self.delay,
            "down": self.down,
            "flapping": self.flap_next is not None,
            "toggles": self.toggles,
        }


def open_tun(netns: str) -> int:
    """A non-blocking TUN device `pjlink` created inside `netns`; back in our own namespace."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            ifreq = struct.pack("16sH22x", DEVICE.encode(), IFF_TUN | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, ifreq)
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)
    return fd


def configure(link: Link) -> None:
    """Address, `lo` and the device up, with `ip -n NETNS`."""
    for args in (
        ["addr", "add", f"{link.address}/24", "dev", DEVICE],
        ["link", "set", DEVICE, "up"],
        ["link", "set", "lo", "up"],
    ):
        subprocess.run(["ip", "-n", link.netns, *args], check=True, capture_output=True)


class Hub:
    """The forwarding loop and its control commands."""

    def __init__(self, links: list[Link]) -> None:
        self.links = {link.name: link for link in links}
        self.by_address = {bytes(map(int, link.address.split("."))): link for link in links}
        self.by_fd = {link.fd: link for link in links}
        # (release time, tie-break, source, destination, packet)
        self.queue: list[tuple[float, int, Link, Link, bytes]] = []
        self.order = itertools.count()
        self.last_release: dict[tuple[str, str], float] = {}
        self.rng = random.Random()

    # ---- packets -------------------------------------------------------------------------

    def packet(self, source: Link, data: bytes, now: float) -> None:
        source.stats["in"] += 1
        if len(data) < 20 or data[0] >> 4 != 4:
            source.stats["unroutable"] += 1
            return
        target = self.by_address.get(data[16:20])
        if target is None or target is source:
            source.stats["unroutable"] += 1
            return
        if source.down or target.down:
            source.stats["cut"] += 1
            return
        rng = self.rng
        if (source.loss and rng.random() < source.loss) or (
            target.loss and rng.random() < target.loss
        ):
            source.stats["lost"] += 1
            return
        direction = (source.name, target.name)
        release = max(now + source.delay + target.delay, self.last_release.get(direction, 0.0))
        if release <= now:
            self.deliver(target, data)
            return
        self.last_release[direction] = release
        heapq.heappush(self.queue, (release, next(self.order), source, target, data))

    def deliver(self, target: Link, data: bytes) -> None:
        try:
            os.write(target.fd, data)
        except OSError:
            target.stats["unroutable"] += 1
            return
        target.stats["out"] += 1

    def release_due(self, now: float) -> None:
        queue = self.queue
        while queue and queue[0][0] <= now:
            _, _, source, target, data = heapq.heappop(queue)
            if source.down or target.down:
                source.stats["cut"] += 1
            else:
                self.deliver(target, data)

    def read(self, link: Link, now: float) -> None:
        for _ in range(READ_BURST):
            try:
                data = os.read(link.fd, PACKET_MAX)
            except BlockingIOError:
                return
            self.packet(link, data, now)

    # ---- commands ------------------------------------------------------------------------

    def named(self, names: str) -> list[Link]:
        if names == "*":
            return list(self.links.values())
        unknown = [name for name in names.split(",") if name not in self.links]
        if unknown:
            raise ValueError(f"unknown link {', '.join(unknown)}")
        return [self.links[name] for name in names.split(",")]

    def command(self, line: str) -> str:
        words = line.split()
        if not words:
            return "error: empty command"
        verb, args = words[0], words[1:]
        try:
            if verb == "stats" and not args:
                return "ok " + json.dumps({n: link.state() for n, link in self.links.items()})
            if verb == "clear" and not args:
                for link in self.links.values():
                    link.reset()
                return "ok"
            if verb in ("down", "up") and len(args) == 1:
                for link in self.named(args[0]):
                    link.set_down(verb == "down")
                return "ok"
            if verb == "flap" and len(args) == 3:
                period, duration = float(args[1]), float(args[2])
                if period <= 0 or duration < period:
                    raise ValueError(f"need 0 < PERIOD <= DURATION: {line!r}")
                for link in self.named(args[0]):
                    link.flap(period, duration, time.monotonic())
                return "ok"
            if verb == "set" and args:
                links = self.named(args[0])
                settings = dict(arg.split("=", 1) for arg in args[1:])
                values = {key: float(value) for key, value in settings.items()}
                if not set(values) <= {"loss", "delay"}:
                    raise ValueError(f"unknown setting in {line!r}")
                if not 0.0 <= values.get("loss", 0.0) <= 1.0 or values.get("delay", 0.0) < 0:
                    raise ValueError(f"out of range: {line!r}")
                for link in links:
                    link.loss = values.get("loss", link.loss)
                    link.delay = values.get("delay", link.delay)
                return "ok"
        except ValueError as exc:
            return f"error: {exc}"
        return f"error: unknown command {line!r}"

    # ---- loop ----------------------------------------------------------------------------

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        for link in self.links.values():
            selector.register(link.fd, selectors.EVENT_READ, link)
        stdin = sys.stdin.fileno()
        selector.register(stdin, selectors.EVENT_READ, None)
        pending = b""
        links = list(self.links.values())
        while True:
            now = time.monotonic()
            for link in links:
                link.flap_due(now)
            self.release_due(now)
            wakes = [link.flap_next for link in links if link.flap_next is not None]
            if self.queue:
                wakes.append(self.queue[0][0])
            timeout = max(0.0, min(wakes) - now) if wakes else None
            for key, _ in selector.select(timeout):
                link = key.data
                if link is not None:
                    self.read(link, time.monotonic())
                    continue
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    reply = self.command(line.decode(errors="replace"))
                    sys.stdout.write(reply + "\n")
                    sys.stdout.flush()


def parse_links(args: list[str]) -> list[Link]:
    links = []
    for arg in args:
        parts = arg.split("=")
        if len(parts) != 3 or not all(parts):
            raise SystemExit(f"tun_link: bad link {arg!r}: give NAME=NETNS=ADDRESS")
        links.append(Link(*parts))
    if len({link.name for link in links}) != len(links):
        raise SystemExit("tun_link: link names must be unique")
    return links


def main(argv: list[str]) -> int:
    links = parse_links(argv)
    if not links:
        raise SystemExit(__doc__)
    for link in links:
        link.fd = open_tun(link.netns)
        configure(link)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        Hub(links).run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

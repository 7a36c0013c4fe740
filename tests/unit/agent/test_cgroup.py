"""Pure parts of the agent's job cgroups (issue 15 F10) and the unit that enables them."""

from __future__ import annotations

from pathlib import Path

from pushjobs.agent.cgroup import cgroup2_mount, cgroup2_path
from tests.unit.test_systemd_units import AGENT_UNIT, one, parse_unit

HYBRID = """9:name=systemd:/system.slice/pushjobs-agent.service
4:memory:/system.slice/pushjobs-agent.service
0::/system.slice/pushjobs-agent.service
"""
MOUNTINFO = """22 1 0:21 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""


def test_cgroup2_path_from_proc_self_cgroup() -> None:
    assert cgroup2_path(HYBRID) == "/system.slice/pushjobs-agent.service"
    assert cgroup2_path("0::/\n") == "/"
    assert cgroup2_path("4:memory:/x\n") is None  # cgroup v1 only


def test_cgroup2_mount_from_mountinfo() -> None:
    assert cgroup2_mount(MOUNTINFO) == "/sys/fs/cgroup/unified"
    assert cgroup2_mount("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n") == (
        "/sys/fs/cgroup"
    )
    assert cgroup2_mount(MOUNTINFO.splitlines()[0]) is None
    # a bind mount of a sub-tree does not name the hierarchy's root
    assert cgroup2_mount("41 31 0:38 /sub /mnt rw - cgroup2 cgroup2 rw\n") is None


def test_agent_unit_delegates_its_cgroup() -> None:
    unit = parse_unit(Path(AGENT_UNIT).read_text())
    assert one(unit, "Service", "Delegate") == "yes"

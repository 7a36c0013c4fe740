"""The agent's labels: `[labels]` checks, built-ins, and when heartbeats carry them."""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq

from pushjobs.agent.config import ConfigError, build_config
from pushjobs.agent.labels import builtin_labels, node_labels, os_version
from pushjobs.agent.link import Identity, Link
from pushjobs.protocol.envelope import open_envelope
from pushjobs.protocol.signing import HMAC_SHA256
from tests.unit.agent.test_link_session import _config

URL = "https://push.example.com/organizations/acme"


def config(labels: Any) -> Any:
    return build_config({"server_url": URL, "node_name": "web1", "labels": labels})


def test_labels_table_is_kept() -> None:
    assert config({"role": "web", "dc": "fra1"}).labels == {"role": "web", "dc": "fra1"}
    assert build_config({"server_url": URL, "node_name": "web1"}).labels == {}
    assert ("labels", {"role": "web"}) in config({"role": "web"}).summary()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("web", "[labels] must be a table of strings"),
        ({"role": 1}, "[labels]: label 'role' must be a string"),
        ({"Role": "web"}, "[labels]: label key 'Role' must be lower-case letters"),
        ({"role": "a\tb"}, "[labels]: label 'role' holds a non-printable character"),
        ({"role": "v" * 254}, "[labels]: label 'role' is longer than 253 characters"),
        ({"os": "plan9"}, "[labels]: 'os' is a built-in label and cannot be set"),
        ({f"k{i}": "v" for i in range(60)}, "[labels]: at most 59 labels (64 with the 5 built-in"),
    ],
)
def test_bad_labels_are_config_errors(labels: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(labels)
    assert str(info.value).startswith(message)


def test_builtins(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    v = sys.version_info
    assert builtin_labels("1.2.3", str(release)) == {
        "os": platform.system().lower(),
        "os_version": "12",
        "arch": platform.machine(),
        "agent_version": "1.2.3",
        "python": f"{v.major}.{v.minor}.{v.micro}",
    }


def test_os_version_falls_back_to_the_kernel_release(tmp_path: Path) -> None:
    assert os_version(str(tmp_path / "missing")) == platform.release()
    empty = tmp_path / "os-release"
    empty.write_text("NAME=Alpine\nVERSION_ID=\n")
    assert os_version(str(empty)) == platform.release()


def test_node_labels_are_user_and_builtins() -> None:
    labels = node_labels({"role": "web"}, {"os": "linux"})
    assert labels == {"role": "web", "os": "linux"}
    assert set(node_labels({})) == {"os", "os_version", "arch", "agent_version", "python"}


# ---- heartbeats -----------------------------------------------------------------------------


class Beats:
    """A Link on a real DEALER towards a ROUTER this test reads heartbeats from."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        self.config = _config(
            self.pub.bind_to_random_port("tcp://127.0.0.1"),
            self.router.bind_to_random_port("tcp://127.0.0.1"),
        )
        self.link = Link(
            Identity("web1", "acme", "inc", "", ""),
            on_command=lambda fields: None,
            on_trigger=lambda reason: None,
            on_watchdog=lambda n: None,
            on_send_failure=lambda: None,
            on_new_incarnation=lambda incarnation, interval: None,
            on_abandoned=lambda reason, interval: None,
            job_state=lambda: ("idle", None),
            log=logging.getLogger("test"),
        )
        self.link.apply(self.config)

    def send(self) -> dict[str, Any]:
        """Send one heartbeat and return its fields as the server receives them."""
        assert self.link.session is not None
        self.link._send_heartbeat(self.link.session)
        self.router.setsockopt(zmq.RCVTIMEO, 5000)
        _, header, body = self.router.recv_multipart()
        return open_envelope(header, body, 1 << 20, HMAC_SHA256).fields

    def close(self) -> None:
        self.link.close()
        self.router.close(linger=0)
        self.pub.close(linger=0)
        self.ctx.term()


async def test_labels_go_with_the_first_heartbeat_of_a_connection_and_on_change() -> None:
    beats = Beats()  # inside trio: closing a session tells trio its descriptors close
    try:
        beats.link.set_labels({"role": "web"})
        assert beats.send()["labels"] == {"role": "web"}
        assert "labels" not in beats.send()
        beats.link.set_labels({"role": "web"})  # unchanged: nothing to send
        assert "labels" not in beats.send()
        beats.link.set_labels({"role": "db"})
        assert beats.send()["labels"] == {"role": "db"}
        assert "labels" not in beats.send()
        beats.link.apply(beats.config)  # reconnect (a fresh config fetch): sent again
        assert beats.send()["labels"] == {"role": "db"}
        assert "labels" not in beats.send()
    finally:
        beats.close()

"""Names and clients for test nodes: unique names, and clients made in bulk.

`unique_name` is unique across processes (a random suffix); `node_name` is unique within this
test process and readable (pid and a counter). `pooled_client` hands out clients of a server's
org that were created 64 at a time with one `client import` (all share one key): far quicker
than one `client create` process per test node.
"""

from __future__ import annotations

import os
import uuid
from itertools import count

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from pushjobs.protocol.keys import generate_rsa_key, public_key_pem
from tests.support.server import ServerProcess

POOL_SIZE = 64
_names = count(1)


def unique_name(prefix: str = "node") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def node_name(prefix: str) -> str:
    """A new node name (nobody has a client for it until a test makes one)."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


class ClientPool:
    """Clients created in one `client import` (all share one key): fast unique node names."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.key = generate_rsa_key()
        self.names: list[str] = []

    def take(self) -> tuple[str, RSAPrivateKey]:
        if not self.names:
            self._refill()
        return self.names.pop(0), self.key

    def _refill(self) -> None:
        base = self.srv.base_dir
        pub = base / "pool-key.pub"
        pub.write_text(public_key_pem(self.key))
        names = [f"n{os.getpid()}-{next(_names)}" for _ in range(POOL_SIZE)]
        listing = base / f"pool-{names[0]}.txt"
        listing.write_text("\n".join(names) + "\n")
        self.srv.admin("client", "import", self.srv.org, str(listing), "--public-key", str(pub))
        self.names = names


_pools: dict[int, ClientPool] = {}


def pooled_client(srv: ServerProcess, prefix: str) -> tuple[str, RSAPrivateKey]:
    """A new client (= node name) of `srv`'s org and its private key.

    `prefix` only says what the test uses the node for: pooled names are `n<pid>-<counter>`.
    """
    if id(srv) not in _pools:
        _pools[id(srv)] = ClientPool(srv)
    return _pools[id(srv)].take()

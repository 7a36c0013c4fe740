"""A scripted protocol peer: a fake agent that speaks the real wire protocol, step by step.

Tests use it to drive the server's ZeroMQ side exactly (and to misbehave on purpose). It has
its own RSA client key and CURVE key pair, real DEALER and SUB sockets, and does what an agent
does, but only when told:

    async with open_peer(server.http_url, server.org, name, key_path) as peer:
        first = await peer.expect("abort")        # a new node is sent abort at once
        await peer.send("aborted", job_id=None)   # ... and becomes idle
        peer.start_heartbeats()                   # background heartbeats every interval
        commit = await peer.expect("commit", skip=("abort", "ack"))
        await peer.send("ack_commit", job_id=commit.job_id)

What `open_peer` does: a Chef-signed (1.3) `GET .../pushy/config/<node>?ccpk=...` as client
`<node>` (use `client_name=` for another principal), decrypts the session key, connects SUB to
`out_addr` and DEALER to `command_addr` (CURVE when the config has `curve_public_key`), and sends
one heartbeat (unless `hello=False`) — the agent's handshake (wire-protocol.md §11).

Sending (`send`): builds the common fields (§13) in the Ruby client's order, `sequence` from 1
per connection, RFC 1123 `timestamp`, then your fields; any common field can be overridden
(`node=`, `timestamp=`, `sequence=`...) or left out (`omit=("sequence",)`). The body is
msgpack (3.0) or JSON (2.0) per the peer's `version` (override per message with `version=`)
and HMAC-signed with the session key (override with `hmac_key=`). `send_frames` sends raw
frames for garbage and forgery tests; `seal` gives the frames `send` would send.

Receiving: a background task reads the DEALER, verifies every message (2 frames, header,
HMAC with the session key, increasing sequence) and queues it as an `Incoming`; anything that
fails is recorded in `peer.errors` (tests should assert it stays empty). `recv(timeout)` pops
the next message, `expect(type, timeout, skip=...)` waits for one type. With
`answer_aborts=True` every `abort` is answered with `aborted` (job_id = `peer.job_id`) as a
real agent does; the abort is still queued. `server_heartbeats(count)` reads the SUB socket and
verifies each heartbeat's rsa2048_sha1 signature with the config's `public_key`.

`reconnect()` replaces the DEALER (new routing id, sequence restarts at 1), optionally with a
new client incarnation (`new_incarnation=True`). `node_state()` reads `node_states/<node>`
over signed HTTP, without blocking the event loop, as `reader=(name, key)` when given, else as
the admin of the test's `ServerProcess` at `http_url` (a plain node key may not read), else as
the peer's own client.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
import zmq

from pushjobs.protocol.envelope import open_envelope, seal_hmac, verify_envelope_hmac
from pushjobs.protocol.errors import ProtocolError
from pushjobs.protocol.keys import decrypt_session_key, load_public_key
from pushjobs.protocol.limits import AGENT_BODY_LIMIT
from pushjobs.protocol.messages import ServerHeartbeat, ServerMessage, parse_server_message
from pushjobs.protocol.signing import HMAC_SHA256, RSA2048_SHA1, verify_rsa_sha1
from pushjobs.protocol.timestamps import format_rfc1123
from pushjobs.server.zeromq.trio_socket import TrioSocket
from tests.support.api import load_key, prepare
from tests.support.server import ServerProcess

PEER_MAX_BODY = AGENT_BODY_LIMIT
SEND_ROOM_TIMEOUT = 30.0  # seconds a send waits for room in a full DEALER queue


class PeerError(AssertionError):
    """The peer could not do what the test asked (timeout, bad reply, HTTP failure)."""


@dataclass
class Incoming:
    """A verified server → peer message: its type, version, raw fields and parsed object."""

    type: str
    version: str
    sequence: int
    fields: dict[str, Any]
    message: ServerMessage

    @property
    def job_id(self) -> str | None:
        return self.fields.get("job_id")

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


class Peer:
    """One fake agent connection; see the module docstring. Build it with `open_peer`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        http_url: str,
        org: str,
        node: str,
        key: Any,
        *,
        client_name: str | None = None,
        version: str = "3.0",
        incarnation_id: str | None = None,
        answer_aborts: bool = False,
        heartbeat_interval: float | None = None,
        curve: bool | None = None,
        reader: tuple[str, Any] | None = None,
    ) -> None:
        self._nursery = nursery
        self.http_url = http_url.rstrip("/")
        self.org = org
        self.node = node
        self.client_name = client_name or node
        self.key = load_key(key)
        self.version = version
        self.incarnation_id = incarnation_id or str(uuid.uuid4())
        self.answer_aborts = answer_aborts
        self.heartbeat_interval = heartbeat_interval
        self.want_curve = curve
        self.reader = (reader[0], load_key(reader[1])) if reader else None
        public, secret = zmq.curve_keypair()
        self.curve_public = public.decode("ascii")
        self.curve_secret = secret.decode("ascii")
        self.config: dict[str, Any] = {}
        self.session_key: bytes | None = None
        self.server_public_key: Any = None
        self.job_state = "idle"
        self.job_id: str | None = None
        self.sequence = 0
        self.errors: list[str] = []
        self.received: list[Incoming] = []  # every verified message, in order
        self._queue: deque[Incoming] = deque()
        self._arrived = trio.Event()
        self._ctx = zmq.Context()
        self._dealer: TrioSocket | None = None
        self._sub: TrioSocket | None = None
        self._reader_scope: trio.CancelScope | None = None
        self._heartbeat_scope: trio.CancelScope | None = None
        self._last_server_seq: int | None = None
        self._last_heartbeat_seq: dict[str, int] = {}

    # -- config -------------------------------------------------------------------------------

    @property
    def config_path(self) -> str:
        return f"/organizations/{self.org}/pushy/config/{self.node}"

    async def fetch_config(self, *, ccpk: str | None = None) -> dict[str, Any]:
        """Signed GET of the config document; decrypts the session key (when present)."""
        params = {"ccpk": ccpk or self.curve_public, "version": self.version}
        request = prepare(
            self.http_url, "GET", self.config_path, user=self.client_name, key=self.key
        )
        response = await request.send_async(params=params)
        if response.status_code != 200:
            raise PeerError(f"config fetch failed: {response.status_code} {response.text}")
        config = response.json()
        self.config = config
        self.server_public_key = load_public_key(config["public_key"])
        encoded = config.get("encoded_session_key")
        if encoded is not None:
            if encoded.get("method") != HMAC_SHA256:
                raise PeerError(f"unexpected session key method {encoded.get('method')!r}")
            self.session_key = decrypt_session_key(self.key, encoded["key"])
        if self.heartbeat_interval is None:
            self.heartbeat_interval = float(config["push_jobs"]["heartbeat"]["interval"])
        return config

    @property
    def uses_curve(self) -> bool:
        if self.want_curve is not None:
            return self.want_curve
        return "curve_public_key" in self.config

    # -- connection ---------------------------------------------------------------------------

    async def connect(self, *, hello: bool = True) -> None:
        """Open SUB and DEALER per the config; with `hello`, send the first heartbeat."""
        heartbeat = self.config["push_jobs"]["heartbeat"]
        if self._sub is None:
            sub = self._ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(heartbeat["out_addr"])
            self._sub = TrioSocket(sub)
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVHWM, 0)
        if self.uses_curve:
            server_key = self.config.get("curve_public_key") or ""
            dealer.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
            dealer.setsockopt(zmq.CURVE_PUBLICKEY, self.curve_public.encode("ascii"))
            dealer.setsockopt(zmq.CURVE_SECRETKEY, self.curve_secret.encode("ascii"))
        dealer.connect(heartbeat["command_addr"])
        self._dealer = TrioSocket(dealer)
        self.sequence = 0
        self._last_server_seq = None
        self._reader_scope = await self._nursery.start(self._reader, self._dealer)
        if hello:
            await self.send("heartbeat")

    async def reconnect(self, *, new_incarnation: bool = False, hello: bool = True) -> None:
        """New DEALER (new routing id, sequence from 1); optionally a new client incarnation."""
        self._close_dealer()
        if new_incarnation:
            self.incarnation_id = str(uuid.uuid4())
        await self.connect(hello=hello)

    def _close_dealer(self) -> None:
        if self._reader_scope is not None:
            self._reader_scope.cancel()
            self._reader_scope = None
        if self._dealer is not None:
            self._dealer.close()
            self._dealer = None

    def close(self) -> None:
        """Stop background tasks and close both sockets."""
        self.stop_heartbeats()
        self._close_dealer()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        self._ctx.destroy(linger=0)

    # -- sending ------------------------------------------------------------------------------

    def build_fields(
        self, msg_type: str, omit: Iterable[str] = (), **fields: Any
    ) -> dict[str, Any]:
        """The body fields `send` would use (advances the sequence unless `sequence=` given)."""
        version = fields.pop("protocol_version", self.version)
        if "sequence" in fields:
            sequence = fields.pop("sequence")
        else:
            self.sequence += 1
            sequence = self.sequence
        body: dict[str, Any] = {
            "node": fields.pop("node", self.node),
            "client": fields.pop("client", self.node),
            "protocol_version": version,
            "org": fields.pop("org", self.org),
            "type": msg_type,
            "sequence": sequence,
            "timestamp": fields.pop("timestamp", format_rfc1123(time.time())),
            "incarnation_id": fields.pop("incarnation_id", self.incarnation_id),
        }
        if msg_type == "heartbeat":
            body["job_state"] = fields.pop("job_state", self.job_state)
            body["job_id"] = fields.pop("job_id", self.job_id)
        else:
            body["job_id"] = fields.pop("job_id", None)
        body.update(fields)
        for name in omit:
            body.pop(name, None)
        return body

    def seal(
        self,
        msg_type: str,
        *,
        version: str | None = None,
        hmac_key: bytes | None = None,
        omit: Iterable[str] = (),
        **fields: Any,
    ) -> list[bytes]:
        """The `[header, body]` frames for a message (see `send`)."""
        body = self.build_fields(msg_type, omit, **fields)
        key = hmac_key if hmac_key is not None else self.session_key
        if key is None:
            raise PeerError("no session key: fetch config as the node's own client first")
        header, payload = seal_hmac(version or self.version, body, key)
        return [header, payload]

    async def send(
        self,
        msg_type: str,
        *,
        version: str | None = None,
        hmac_key: bytes | None = None,
        omit: Iterable[str] = (),
        **fields: Any,
    ) -> dict[str, Any]:
        """Send one message; returns the body fields sent (for assertions)."""
        frames = self.seal(msg_type, version=version, hmac_key=hmac_key, omit=omit, **fields)
        await self.send_frames(frames)
        return open_envelope(frames[0], frames[1], PEER_MAX_BODY, HMAC_SHA256).fields

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        """Send raw frames on the DEALER (the server sees a routing id frame in front)."""
        if self._dealer is None:
            raise PeerError("not connected")
        # A flood (tens of thousands of messages) can fill the send queue while a loaded
        # server drains it: wait for room, as a real agent would, before giving up.
        with trio.move_on_after(SEND_ROOM_TIMEOUT):
            while not self._dealer.send_nowait(list(frames)):
                await trio.sleep(0.005)
            await trio.lowlevel.checkpoint()
            return
        raise PeerError(f"DEALER would block for {SEND_ROOM_TIMEOUT} s")

    # -- heartbeats ---------------------------------------------------------------------------

    def start_heartbeats(self, interval: float | None = None) -> None:
        """Send a heartbeat (with `job_state` / `job_id`) every interval, in the background."""
        self.stop_heartbeats()
        period = interval or self.heartbeat_interval or 1.0
        scope = trio.CancelScope()
        self._heartbeat_scope = scope

        async def loop() -> None:
            with scope:
                while True:
                    await trio.sleep(period)
                    if self._dealer is not None:
                        await self.send("heartbeat")

        self._nursery.start_soon(loop)

    def stop_heartbeats(self) -> None:
        if self._heartbeat_scope is not None:
            self._heartbeat_scope.cancel()
            self._heartbeat_scope = None

    # -- receiving ----------------------------------------------------------------------------

    async def _reader(self, dealer: TrioSocket, task_status: Any = trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            task_status.started(scope)
            while True:
                try:
                    batch = await dealer.recv_batch()
                except (trio.ClosedResourceError, zmq.ZMQError):
                    return
                for frames in batch:
                    incoming = self._verify(frames)
                    if incoming is None:
                        continue
                    self.received.append(incoming)
                    self._queue.append(incoming)
                    self._arrived.set()
                    if incoming.type == "abort" and self.answer_aborts:
                        await self.send("aborted", job_id=self.job_id)

    def _verify(self, frames: list[bytes]) -> Incoming | None:
        if len(frames) != 2:
            self.errors.append(f"{len(frames)} frames from the server")
            return None
        try:
            env = open_envelope(frames[0], frames[1], PEER_MAX_BODY, HMAC_SHA256)
        except ProtocolError as exc:
            self.errors.append(f"bad server message: {exc}")
            return None
        if self.session_key is None or not verify_envelope_hmac(env, self.session_key):
            self.errors.append("server message does not verify with the session key")
            return None
        try:
            message = parse_server_message(env.fields)
        except ProtocolError as exc:
            self.errors.append(f"bad server message: {exc}")
            return None
        if message.TYPE == "heartbeat":
            self.errors.append("heartbeat on the command socket")
            return None
        if self._last_server_seq is not None and message.sequence <= self._last_server_seq:
            self.errors.append(
                f"server sequence {message.sequence} not after {self._last_server_seq}"
            )
        self._last_server_seq = message.sequence
        return Incoming(message.TYPE, env.version, message.sequence, env.fields, message)

    async def recv(self, timeout: float = 15.0) -> Incoming:
        """The next verified message from the server; PeerError after `timeout` seconds."""
        with trio.move_on_after(timeout):
            while not self._queue:
                self._arrived = trio.Event()
                await self._arrived.wait()
            return self._queue.popleft()
        raise PeerError(f"{self.node}: nothing received within {timeout}s")

    async def expect(
        self, msg_type: str, timeout: float = 15.0, *, skip: Iterable[str] = ()
    ) -> Incoming:
        """Wait for a message of `msg_type`; types in `skip` are discarded, others fail."""
        skipped = set(skip)
        deadline = trio.current_time() + timeout
        while True:
            remaining = deadline - trio.current_time()
            try:
                msg = await self.recv(max(remaining, 0))
            except PeerError:
                raise PeerError(f"{self.node}: no {msg_type} within {timeout}s") from None
            if msg.type == msg_type:
                return msg
            if msg.type not in skipped:
                raise PeerError(f"{self.node}: expected {msg_type}, got {msg.type}: {msg.fields}")

    async def expect_nothing(self, duration: float, *, skip: Iterable[str] = ()) -> None:
        """Fail if a message (other than `skip` types) arrives within `duration` seconds."""
        skipped = set(skip)
        with trio.move_on_after(duration):
            while True:
                msg = await self.recv(duration + 1)
                if msg.type not in skipped:
                    raise PeerError(f"{self.node}: unexpected {msg.type}: {msg.fields}")

    def drain(self) -> list[Incoming]:
        """Remove and return everything queued so far."""
        items = list(self._queue)
        self._queue.clear()
        return items

    async def server_heartbeats(
        self, count: int = 1, timeout: float = 15.0
    ) -> list[ServerHeartbeat]:
        """Read `count` server heartbeats from SUB, each verified with the server's RSA key."""
        if self._sub is None:
            raise PeerError("not connected")
        public_key = self.server_public_key
        beats: list[ServerHeartbeat] = []
        with trio.move_on_after(timeout):
            while len(beats) < count:
                for frames in await self._sub.recv_batch(limit=count - len(beats)):
                    if len(frames) != 2:
                        raise PeerError(f"{len(frames)} frames on the heartbeat socket")
                    env = open_envelope(frames[0], frames[1], PEER_MAX_BODY, RSA2048_SHA1)
                    if env.version != "2.0":
                        raise PeerError(f"server heartbeat of version {env.version}")
                    if not verify_rsa_sha1(public_key, env.body, env.header.signature):
                        raise PeerError("server heartbeat signature does not verify")
                    beat = ServerHeartbeat.from_dict(env.fields)
                    last = self._last_heartbeat_seq.get(beat.incarnation_id)
                    if last is not None and beat.sequence <= last:
                        raise PeerError(f"heartbeat sequence {beat.sequence} not after {last}")
                    self._last_heartbeat_seq[beat.incarnation_id] = beat.sequence
                    beats.append(beat)
            return beats
        raise PeerError(f"only {len(beats)} of {count} server heartbeats within {timeout}s")

    # -- HTTP views ---------------------------------------------------------------------------

    async def node_state(self, node: str | None = None) -> dict[str, Any]:
        """`GET node_states/<node>` (default: this peer's node), signed as `_read_as`."""
        path = f"/organizations/{self.org}/pushy/node_states/{node or self.node}"
        name, key = self._read_as()
        response = await prepare(self.http_url, "GET", path, user=name, key=key).send_async()
        if response.status_code != 200:
            raise PeerError(f"node_states failed: {response.status_code} {response.text}")
        return response.json()

    def _read_as(self) -> tuple[str, Any]:
        """Who reads the HTTP views: see the module docstring."""
        if self.reader is not None:
            return self.reader
        for srv in ServerProcess.running():
            if srv.state.get("http_url", "").rstrip("/") == self.http_url and srv.org == self.org:
                return srv.admin_user, srv.admin_key
        return self.client_name, self.key

    async def wait_node_state(
        self,
        *,
        status: str | None = None,
        availability: str | None = None,
        node: str | None = None,
        timeout: float = 20.0,
    ) -> dict[str, Any]:
        """Poll `node_states/<node>` until it shows the given status / availability."""
        state: dict[str, Any] = {}
        with trio.move_on_after(timeout):
            while True:
                state = await self.node_state(node)
                if (status is None or state["status"] == status) and (
                    availability is None or state["availability"] == availability
                ):
                    return state
                await trio.sleep(0.05)
        raise PeerError(f"node state never became {status}/{availability}: last {state}")


@asynccontextmanager
async def open_peer(
    http_url: str,
    org: str,
    node: str,
    key: Any,
    *,
    connect: bool = True,
    hello: bool = True,
    **options: Any,
) -> AsyncIterator[Peer]:
    """Fetch config, connect and say hello (see the module docstring); close on exit.

    `key`: the client's private key (object, PEM bytes or a path). Options go to `Peer`:
    `client_name`, `version` ("3.0" or "2.0"), `incarnation_id`, `answer_aborts`,
    `heartbeat_interval`, `curve` (force CURVE on/off instead of following the config).
    """
    async with trio.open_nursery() as nursery:
        peer = Peer(nursery, http_url, org, node, key, **options)
        try:
            if connect:
                await peer.fetch_config()
                await peer.connect(hello=hello)
            yield peer
        finally:
            peer.close()
            nursery.cancel_scope.cancel()

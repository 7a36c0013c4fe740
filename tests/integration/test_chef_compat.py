"""Existing Chef clients against the real server: knife-push 2.0.1's HTTP requests and the Ruby
push client 3.0.13's protocol-2.0 behaviour.

Both are replayed from the recordings in `docs/spec/vectors/ruby-client-2.0-frames.md`:

- `ChefHttp` sends requests the way Chef 16's HTTP stack does for knife and for the Ruby agent's
  config fetch (signing protocol 1.1, `X-Ops-Server-API-Version` 2 on the first request and 0
  after a response without that header, Chef's `Accept`/`Accept-Encoding` headers, exact bodies).
- `RubyClient` drives a scripted 2.0 peer (`tests.support.peer`) the way the Ruby client answered
  in the recording: abort → aborted (a running job: after the kill grace, with its job id),
  whitelisted commit → ack_commit, anything else → nack_commit, run of the committed job →
  ack_run then succeeded/failed (with `stdout`/`stderr` only for capture jobs), any other run →
  nack_run, ack ignored, heartbeats carrying `job_state`/`job_id`, `client` = the host name.

Every server → client frame is recorded raw and checked independently of the peer: header form,
compact JSON, HMAC-SHA256 with the session key (stdlib), and parsing with `pushjobs.protocol`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
import trio
import zmq

from pushjobs.protocol.chef_auth import sign_request
from pushjobs.protocol.keys import decrypt_session_key, load_public_key
from pushjobs.protocol.messages import Commit, parse_server_message
from tests.support.peer import Incoming, Peer, open_peer
from tests.support.server import FINAL_JOB_STATUSES, ServerProcess

CHEF_VERSION = "16.4.41"
PLATFORM = "(ruby-3.1.2-p20; ohai-16.4.12; x86_64-linux-gnu; +https://chef.io)"
KNIFE_AGENT = f"Chef Knife/{CHEF_VERSION} {PLATFORM}"
CLIENT_AGENT = f"Chef Client/{CHEF_VERSION} {PLATFORM}"
ACCEPT_ENCODING = "gzip;q=1.0,deflate;q=0.6,identity;q=0.3"

HEADER_2_0 = re.compile(rb"Version:2\.0;SigningMethod:hmac_sha256;Signature:[A-Za-z0-9+/]{43}=")
RFC1123 = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")
JOB_ID = re.compile(r"[0-9a-f]{32}")
COMMON_OUT = ["sequence", "timestamp", "type"]


# ---- Chef HTTP (knife, and the Ruby agent's config fetch) --------------------------------


class ChefHttp:
    """One Chef 16 process's HTTP client: protocol 1.1 signing and API-version negotiation."""

    def __init__(self, base_url: str, user: str, key: Any, user_agent: str) -> None:
        self.base_url = base_url
        self.user = user
        self.key = key
        self.user_agent = user_agent
        self.api_version = "2"
        self.request_id = str(uuid.uuid4())  # one per process (ruby-client-2.0-frames.md §1)
        self.sent: list[tuple[str, str, str]] = []  # (method, signed path, API version sent)

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        accept: str = "application/json",
    ) -> httpx.Response:
        """`url` absolute (as knife polls a job URI) or a path under the server's base URL."""
        if url.startswith("/"):
            url = self.base_url + url
        path = httpx.URL(url).raw_path.decode("ascii").split("?", 1)[0]
        raw = body or b""
        headers = {"Accept": accept, "Accept-Encoding": ACCEPT_ENCODING}
        headers.update(
            sign_request(
                method=method,
                path=path,
                body=raw,
                user_id=self.user,
                private_key=self.key,
                version="1.1",
                server_api_version=self.api_version,
            )
        )
        headers.update(
            {
                "X-Remote-Request-Id": self.request_id,
                "X-Chef-Version": CHEF_VERSION,
                "User-Agent": self.user_agent,
            }
        )
        if body is not None:
            headers["Content-Type"] = "application/json"
        assert headers["X-Ops-Sign"] == "algorithm=sha1;version=1.1;"
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.request(method, url, content=raw, headers=headers)
        self.sent.append((method, path, self.api_version))
        # Chef's negotiation: a response without the header makes every later request send 0.
        returned = response.headers.get("x-ops-server-api-version")
        if returned is None:
            self.api_version = "0"
        else:
            self.api_version = str(json.loads(returned).get("response_version", "0"))
        return response


def cgi_escape(text: str) -> str:
    """Ruby's `CGI.escape` for text without spaces: everything but `[A-Za-z0-9_.~-]` → %XX."""
    return quote(text, safe="")


def test_cgi_escape_matches_the_recorded_ccpk() -> None:
    # the exact query string of the recorded config request (ruby-client-2.0-frames.md §1)
    ccpk = "88UPpcf#SZFHVBSne^zXWnt<F^6PvP*^:%5G.Z<y"
    assert cgi_escape(ccpk) == "88UPpcf%23SZFHVBSne%5EzXWnt%3CF%5E6PvP%2A%5E%3A%255G.Z%3Cy"


def awkward_curve_keypair() -> tuple[str, str]:
    """A CURVE key pair whose Z85 public key needs `%` escaping (so `%25` must decode once)."""
    for _ in range(500):
        public, secret = zmq.curve_keypair()
        if b"%" in public:
            return public.decode("ascii"), secret.decode("ascii")
    raise AssertionError("no CURVE key with '%' in 500 tries")


async def ruby_config_fetch(chef: ChefHttp, peer: Peer) -> httpx.Response:
    """The Ruby agent's config request (ruby-client-2.0-frames.md §1), applied to `peer` like
    `fetch_config`."""
    query = f"ccpk={cgi_escape(peer.curve_public)}&version=2.0"
    response = await chef.request("GET", f"{peer.config_path}?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    config = response.json()
    peer.config = config
    peer.server_public_key = load_public_key(config["public_key"])
    encoded = config["encoded_session_key"]
    assert encoded["method"] == "hmac_sha256"
    peer.session_key = decrypt_session_key(peer.key, encoded["key"])
    peer.heartbeat_interval = float(config["push_jobs"]["heartbeat"]["interval"])
    return response


# ---- the Ruby client's behaviour ---------------------------------------------------------


FAIL = re.compile(r"^fail (\d+)$")
WHITELIST = ("hello", FAIL, "sleep")  # ruby-client-2.0-frames.md §3


class RubyClient:
    """Makes a 2.0 `Peer` answer like the Ruby push client of the recording (see module doc)."""

    def __init__(self, peer: Peer, host: str, abort_delay: float = 1.0) -> None:
        self.peer = peer
        self.host = host  # Ohai short host name, sent as `client`
        self.abort_delay = abort_delay  # Ruby: TERM, 3 s grace, KILL
        # when set by a test: a running job's kill "takes" until this event is set
        self.kill_done: trio.Event | None = None
        self.state = "idle"
        self.job_id: str | None = None
        self.commit: Commit | None = None
        self.heartbeats_on = True
        # ("S", fields) for every verified server message, ("C", fields) for every sent one
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.frames: list[list[bytes]] = []  # raw server → client frames
        verify = peer._verify

        def record(frames: list[bytes]) -> Incoming | None:
            self.frames.append([bytes(f) for f in frames])
            incoming = verify(frames)
            if incoming is not None:
                self.log.append(("S", incoming.fields))
            return incoming

        peer._verify = record  # type: ignore[method-assign]

    async def send(self, msg_type: str, **fields: Any) -> dict[str, Any]:
        sent = await self.peer.send(msg_type, client=self.host, **fields)
        self.log.append(("C", sent))
        return sent

    async def heartbeat(self) -> dict[str, Any]:
        return await self.send("heartbeat", job_state=self.state, job_id=self.job_id)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeats and message handling until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeats)
            task_status.started()
            while True:
                await self.handle(await self.peer.recv(timeout=3600))

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(self.peer.heartbeat_interval or 1.0)
            if self.heartbeats_on:
                await self.heartbeat()

    def _idle(self) -> None:
        self.state, self.job_id, self.commit = "idle", None, None

    async def handle(self, msg: Incoming) -> None:
        if msg.type == "abort":
            if self.state == "running":
                if self.kill_done is not None:
                    await self.kill_done.wait()
                else:
                    await trio.sleep(self.abort_delay)
            job_id = self.job_id
            self._idle()
            await self.send("aborted", job_id=job_id)
        elif msg.type == "commit":
            commit = msg.message
            assert isinstance(commit, Commit)
            if self.state != "idle" or not self._whitelisted(commit.command):
                await self.send("nack_commit", job_id=commit.job_id)
                return
            self.state, self.job_id, self.commit = "committed", commit.job_id, commit
            await self.send("ack_commit", job_id=commit.job_id)
        elif msg.type == "run":
            if self.state != "committed" or msg.job_id != self.job_id:
                await self.send("nack_run", job_id=msg.job_id)
                return
            self.state = "running"
            await self.send("ack_run", job_id=self.job_id)
            await self._execute()
        # `ack` is silently accepted

    @staticmethod
    def _whitelisted(command: str) -> bool:
        return any(
            command == entry if isinstance(entry, str) else entry.match(command)
            for entry in WHITELIST
        )

    async def _execute(self) -> None:
        commit = self.commit
        assert commit is not None
        if commit.command == "sleep":
            return  # runs until aborted
        if commit.command == "hello":
            # echo hello from $CHEF_PUSH_NODE_NAME FOO=$FOO; cat $CHEF_PUSH_JOB_FILE; pwd;
            # echo to-stderr >&2
            result, err = "succeeded", "to-stderr\n"
            env = commit.env or {}
            out = f"hello from {self.peer.node} FOO={env.get('FOO', '')}\n"
            out += job_file_text(commit.file) + f"{commit.dir or '/'}\n"
        else:
            result, out, err = "failed", "failing\n", ""
        job_id = self.job_id
        self._idle()
        extra = {"stdout": out, "stderr": err} if commit.capture else {}
        await self.send(result, job_id=job_id, **extra)

    # -- views for assertions ---------------------------------------------------------------

    def messages(self, direction: str, job_id: str | None = None) -> list[dict[str, Any]]:
        return [
            f
            for d, f in self.log
            if d == direction and (job_id is None or f.get("job_id") == job_id)
        ]

    def types(self, direction: str, job_id: str) -> list[str]:
        """Message types naming `job_id`, heartbeats left out."""
        return [f["type"] for f in self.messages(direction, job_id) if f["type"] != "heartbeat"]

    async def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 15) -> Any:
        with trio.move_on_after(timeout):
            while not (value := predicate()):
                await trio.sleep(0.02)
            return value
        raise AssertionError(f"{self.peer.node}: timed out waiting for {what}; log {self.log}")


def job_file_text(file: str | None) -> str:
    if file is None:
        return ""
    if file.startswith("raw:"):
        return file[len("raw:") :]
    return base64.b64decode(file[len("base64:") :]).decode()


def check_server_frames(client: RubyClient) -> None:
    """Every server → client frame: 2.0 header, compact JSON, HMAC with the session key."""
    assert client.peer.errors == []
    assert client.frames, "no server frames recorded"
    key = client.peer.session_key
    assert key is not None
    for header, body in client.frames:
        assert HEADER_2_0.fullmatch(header), header
        signature = header.rsplit(b"Signature:", 1)[1]
        expected = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest())
        assert hmac.compare_digest(signature, expected), body
        fields = json.loads(body)
        compact = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        assert body == compact, body
        message = parse_server_message(fields)
        assert message.TYPE in {"abort", "ack", "commit", "run"}
        assert RFC1123.fullmatch(fields["timestamp"]), fields
        base = set(COMMON_OUT)
        if message.TYPE in {"abort", "ack"}:
            assert set(fields) == base, fields
        elif message.TYPE == "run":
            assert set(fields) == base | {"job_id"}, fields
        else:
            # commit: `capture` always present, never `run_timeout` in 2.0 (wire-protocol.md §14)
            assert {"job_id", "server", "command", "capture"} <= set(fields), fields
            assert set(fields) - base <= {
                "job_id",
                "server",
                "command",
                "capture",
                "user",
                "dir",
                "env",
                "file",
            }, fields
            assert isinstance(fields["capture"], bool)


def check_client_envelope(client: RubyClient) -> None:
    """What the peer sent follows the Ruby client's envelope (ruby-client-2.0-frames.md §4)."""
    order = ["node", "client", "protocol_version", "org", "type", "sequence", "timestamp"]
    for direction, fields in client.log:
        if direction != "C":
            continue
        assert list(fields)[: len(order)] == order, fields
        assert fields["client"] == client.host != fields["node"]
        assert fields["protocol_version"] == "2.0"


# ---- fixtures-in-code --------------------------------------------------------------------


async def connect_ruby(
    nursery: trio.Nursery, srv: ServerProcess, peer: Peer, host: str, **options: Any
) -> tuple[RubyClient, ChefHttp]:
    """Config fetch as the Ruby agent, connect, first heartbeat, handshake until available."""
    peer.curve_public, peer.curve_secret = awkward_curve_keypair()
    chef = ChefHttp(srv.http_url, peer.node, peer.key, CLIENT_AGENT)
    await ruby_config_fetch(chef, peer)
    client = RubyClient(peer, host, **options)
    await peer.connect(hello=False)
    await client.heartbeat()
    await nursery.start(client.run)
    await peer.wait_node_state(status="online", availability="available")
    return client, chef


async def http_json(srv: ServerProcess, method: str, path: str, body: Any = None) -> httpx.Response:
    """An admin request (Chef 1.1 signing, as knife) for test set-up and checks."""
    chef = ChefHttp(srv.http_url, srv.admin_user, srv.admin_key, KNIFE_AGENT)
    raw = json.dumps(body).encode() if body is not None else None
    return await chef.request(method, f"/organizations/{srv.org}/pushy/{path}", raw)


async def final_job(srv: ServerProcess, job_id: str, timeout: float = 15) -> dict[str, Any]:
    with trio.move_on_after(timeout):
        while True:
            job = (await http_json(srv, "GET", f"jobs/{job_id}")).json()
            if job["status"] in FINAL_JOB_STATUSES:
                return job
            await trio.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished: {job}")


async def post_job(srv: ServerProcess, body: dict[str, Any]) -> str:
    response = await http_json(srv, "POST", "jobs", body)
    assert response.status_code == 201, response.text
    return response.json()["uri"][-32:]


def without_dates(job: dict[str, Any]) -> dict[str, Any]:
    assert RFC1123.fullmatch(job["created_at"]) and RFC1123.fullmatch(job["updated_at"]), job
    return {k: v for k, v in job.items() if k not in {"created_at", "updated_at"}}


# ---- 1. knife-push 2.0.1 -----------------------------------------------------------------


async def knife_job_start(
    knife: ChefHttp, org_url: str, body: bytes, wait: bool = True
) -> tuple[str, dict[str, Any] | None]:
    """`knife job start`: POST, `Started.  Job ID: <last 32>`, poll the absolute URI."""
    response = await knife.request("POST", f"{org_url}/pushy/jobs", body)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    uri = response.json()["uri"]
    assert response.json() == {"uri": uri}
    assert response.headers["location"] == uri
    assert uri.startswith(f"{org_url}/pushy/jobs/")
    job_id = uri[-32:]
    assert JOB_ID.fullmatch(job_id) and uri.endswith(f"/jobs/{job_id}")
    if not wait:
        return job_id, None
    with trio.move_on_after(15):
        while True:  # knife: one poll per --poll-interval 0.5
            polled = await knife.request("GET", uri)
            assert polled.status_code == 200, polled.text
            job = polled.json()
            if job["status"] in FINAL_JOB_STATUSES:
                return job_id, job
            await trio.sleep(0.5)
    raise AssertionError(f"job {job_id} never finished")


async def test_knife_push_2_0_1_requests_against_a_ruby_2_0_node(server: ServerProcess) -> None:
    """ruby-client-2.0-frames.md §5: knife's requests in order, against node1 played as the Ruby
    client."""
    srv = server
    _, key_path = srv.make_client("node1")
    org_url = srv.org_url
    knife = ChefHttp(srv.http_url, srv.admin_user, srv.admin_key, KNIFE_AGENT)
    async with (
        open_peer(srv.http_url, srv.org, "node1", key_path, version="2.0", connect=False) as peer,
        trio.open_nursery() as nursery,
    ):
        ruby, _ = await connect_ruby(nursery, srv, peer, "node1host")

        # $ knife node status  → node1<TAB>available
        states = await knife.request("GET", f"{org_url}/pushy/node_states")
        assert states.status_code == 200 and states.headers["content-type"].startswith(
            "application/json"
        )
        listed = states.json()
        assert all(set(e) == {"node_name", "availability"} for e in listed)
        assert [e["node_name"] for e in listed] == sorted(e["node_name"] for e in listed)
        assert {"node_name": "node1", "availability": "available"} in listed
        # $ knife node status node1
        one = await knife.request("GET", f"{org_url}/pushy/node_states/node1")
        assert one.json() == {"node_name": "node1", "status": "online", "availability": "available"}

        # $ knife job start hello node1 --capture --with-env {"FOO":"bar"} --file job.txt
        #   --in-dir /tmp --poll-interval 0.5
        hello_body = (
            b'{"command":"hello","nodes":["node1"],"quorum":1,'
            b'"file":"raw:job file for knife\\n","capture_output":true,'
            b'"env":{"FOO":"bar"},"dir":"/tmp"}'
        )
        assert json.loads(hello_body)["file"] == "raw:job file for knife\n"
        hello_id, hello = await knife_job_start(knife, org_url, hello_body)
        assert hello is not None
        # knife prints command, created_at, id, nodes, run_timeout, status, updated_at (the
        # recording's test server sent only those); the options given are echoed too
        # (http-api.md §7.5), and so is the audit field `requested_by` (knife ignores both)
        assert without_dates(hello) == {
            "id": hello_id,
            "command": "hello",
            "status": "complete",
            "run_timeout": 3600,
            "requested_by": "admin",
            "nodes": {"succeeded": ["node1"]},
            "dir": "/tmp",
            "env": {"FOO": "bar"},
            "capture_output": True,
            "file_specified": True,
        }
        assert _epoch(hello["updated_at"]) >= _epoch(hello["created_at"])
        commit = next(f for f in ruby.messages("S", hello_id) if f["type"] == "commit")
        assert commit["file"] == "raw:job file for knife\n" and commit["capture"] is True
        assert commit["env"] == {"FOO": "bar"} and commit["dir"] == "/tmp"
        succeeded = next(f for f in ruby.messages("C", hello_id) if f["type"] == "succeeded")
        assert succeeded["stdout"] == "hello from node1 FOO=bar\njob file for knife\n/tmp\n"

        # $ knife job status <id>  (also -F json: the same GET)
        status = await knife.request("GET", f"{org_url}/pushy/jobs/{hello_id}")
        assert status.status_code == 200 and status.json() == hello

        # $ knife job output <id> node1 [--channel stderr]
        for channel in ("stdout", "stderr"):
            out = await knife.request(
                "GET",
                f"{org_url}/pushy/jobs/{hello_id}/output/node1/{channel}",
                accept="application/octet-stream",
            )
            assert out.status_code == 200, out.text
            assert out.headers["content-type"] == "application/octet-stream"
            assert out.content == succeeded[channel].encode()
        assert out.content == b"to-stderr\n"

        # $ knife job start rm -rf / node1 --poll-interval 0.5  → Quorum_failed, nacked: node1
        rm_body = (
            b'{"command":"rm -rf /","nodes":["node1"],"quorum":1,"capture_output":false,"env":{}}'
        )
        rm_id, rm = await knife_job_start(knife, org_url, rm_body)
        assert rm is not None and without_dates(rm) == {
            "id": rm_id,
            "command": "rm -rf /",
            "status": "quorum_failed",
            "run_timeout": 3600,
            "requested_by": "admin",
            "nodes": {"nacked": ["node1"]},
            "env": {},
        }
        assert ruby.types("C", rm_id) == ["nack_commit"]

        # $ knife job start fail 3 node1 --poll-interval 0.5  → Complete, failed: node1
        fail_body = (
            b'{"command":"fail 3","nodes":["node1"],"quorum":1,"capture_output":false,"env":{}}'
        )
        fail_id, failed = await knife_job_start(knife, org_url, fail_body)
        assert failed is not None and without_dates(failed) == {
            "id": fail_id,
            "command": "fail 3",
            "status": "complete",
            "run_timeout": 3600,
            "requested_by": "admin",
            "nodes": {"failed": ["node1"]},
            "env": {},
        }
        assert ruby.types("C", fail_id) == ["ack_commit", "ack_run", "failed"]

        # $ knife job start hello -s 'name:node1 OR name:other' --nowait: the search goes to the
        # organization URL, double-encoded; a standalone pushjobs server has no search (the
        # docs say so), a Chef Server behind the same URL would answer it
        search = await knife.request(
            "GET",
            f"{srv.http_url}/organizations/{srv.org}/search/node"
            "?q=name:node1%2520OR%2520name:other&start=0&rows=1000",
        )
        assert search.status_code == 404
        nowait_body = (
            b'{"command":"hello","nodes":["node1"],"quorum":1,"capture_output":false,"env":{}}'
        )
        nowait_id, _ = await knife_job_start(knife, org_url, nowait_body, wait=False)
        nowait = await final_job(srv, nowait_id)
        assert nowait["status"] == "complete" and nowait["nodes"] == {"succeeded": ["node1"]}
        # a Ruby client without capture sends no output: there is none to download
        none = await knife.request(
            "GET",
            f"{org_url}/pushy/jobs/{nowait_id}/output/node1/stdout",
            accept="application/octet-stream",
        )
        assert none.status_code == 404

        # $ knife job list  (404 against the recording's test server; served here)
        listing = await knife.request("GET", f"{org_url}/pushy/jobs")
        assert listing.status_code == 200, listing.text
        summaries = [s for s in listing.json() if s["id"] in {hello_id, rm_id, fail_id, nowait_id}]
        jobs = {}
        for job_id in (hello_id, rm_id, fail_id, nowait_id):
            jobs[job_id] = (await knife.request("GET", f"{org_url}/pushy/jobs/{job_id}")).json()
        newest_first = sorted(jobs.values(), key=lambda j: (_epoch(j["created_at"]), j["id"]))
        assert summaries == [
            {k: v for k, v in j.items() if k != "nodes"} for j in reversed(newest_first)
        ]

        # every knife request: API version 2 first, then 0 (no version header came back)
        assert knife.sent[0][2] == "2"
        assert {v for _, _, v in knife.sent[1:]} == {"0"}
        check_server_frames(ruby)
        check_client_envelope(ruby)
        nursery.cancel_scope.cancel()


def _epoch(rfc1123: str) -> float:
    return parsedate_to_datetime(rfc1123).timestamp()


# ---- 2. the Ruby agent on the wire --------------------------------------------------------


async def test_ruby_client_2_0_wire_behaviour(server: ServerProcess) -> None:
    """ruby-client-2.0-frames.md §1 and §3: config fetch, then the recorded command-channel
    scenario."""
    srv = server
    name = f"ruby-{uuid.uuid4().hex[:6]}"
    other = f"{name}-b"
    _, key_path = srv.make_client(name)
    _, other_key = srv.make_client(other)
    async with (
        open_peer(srv.http_url, srv.org, name, key_path, version="2.0", connect=False) as peer,
        open_peer(srv.http_url, srv.org, other, other_key, version="2.0", connect=False) as peer_b,
        trio.open_nursery() as nursery,
    ):
        # -- ruby-client-2.0-frames.md §1: the config request, signed 1.1 with version=2.0 and a
        # CGI-escaped ccpk
        peer.curve_public, peer.curve_secret = awkward_curve_keypair()
        chef = ChefHttp(srv.http_url, name, peer.key, CLIENT_AGENT)
        response = await ruby_config_fetch(chef, peer)
        assert chef.sent == [("GET", f"/organizations/{srv.org}/pushy/config/{name}", "2")]
        query = response.request.url.raw_path.split(b"?", 1)[1].decode()
        assert query == f"ccpk={cgi_escape(peer.curve_public)}&version=2.0" and "%25" in query
        config = peer.config
        heartbeat = config["push_jobs"]["heartbeat"]
        assert isinstance(heartbeat["interval"], float)
        for field in ("out_addr", "command_addr"):
            assert heartbeat[field].startswith("tcp://")
        assert (heartbeat["offline_threshold"], heartbeat["online_threshold"]) == (3, 2)
        assert config["type"] == "config" and config["node"] == name
        assert config["organization"] == srv.org and len(config["curve_public_key"]) == 40
        for field in ("lifetime", "max_message_skew", "max_body_size"):
            assert isinstance(config[field], int)
        first_key = peer.session_key

        # -- frames 1–3: heartbeat (idle, seq 1) → abort → aborted (null) → available
        ruby = RubyClient(peer, "rubyhost", abort_delay=1.0)
        await peer.connect(hello=False)
        hello = await ruby.heartbeat()
        assert hello["sequence"] == 1 and hello["job_state"] == "idle" and hello["job_id"] is None
        assert list(hello)[-2:] == ["job_state", "job_id"]
        await nursery.start(ruby.run)
        await peer.wait_node_state(status="online", availability="available")
        first = next(i for i, (d, _) in enumerate(ruby.log) if d == "S")
        assert ruby.log[first][1]["type"] == "abort"
        answer = next(f for d, f in ruby.log[first:] if d == "C")
        assert (answer["type"], answer["job_id"]) == ("aborted", None)

        # server heartbeats on SUB: 2.0, rsa2048_sha1, verified with the config's public_key
        beats = await peer.server_heartbeats(1)
        assert beats[0].incarnation_id == config["incarnation_id"]

        # -- frames 4–9: commit (exact whitelist, every option) → ack → run → ack → succeeded
        hello_id = await post_job(
            srv,
            {
                "command": "hello",
                "nodes": [name],
                "capture_output": True,
                "env": {"FOO": "bar"},
                "dir": "/tmp",
                "file": "raw:file-contents\n",
            },
        )
        job = await final_job(srv, hello_id)
        assert job["status"] == "complete" and job["nodes"] == {"succeeded": [name]}
        assert ruby.types("S", hello_id) == ["commit", "run"]
        assert ruby.types("C", hello_id) == ["ack_commit", "ack_run", "succeeded"]
        commit = ruby.messages("S", hello_id)[0]
        assert {k: v for k, v in commit.items() if k not in {"sequence", "timestamp"}} == {
            "type": "commit",
            "job_id": hello_id,
            "server": "127.0.0.1",
            "command": "hello",
            "dir": "/tmp",
            "env": {"FOO": "bar"},
            "file": "raw:file-contents\n",
            "capture": True,
        }
        result = next(f for f in ruby.messages("C", hello_id) if f["type"] == "succeeded")
        assert result["stdout"] == f"hello from {name} FOO=bar\nfile-contents\n/tmp\n"
        assert list(result)[-2:] == ["stdout", "stderr"]
        for channel, expected in (("stdout", result["stdout"]), ("stderr", "to-stderr\n")):
            out = await ChefHttp(srv.http_url, srv.admin_user, srv.admin_key, KNIFE_AGENT).request(
                "GET",
                f"/organizations/{srv.org}/pushy/jobs/{hello_id}/output/{name}/{channel}",
                accept="application/octet-stream",
            )
            assert out.status_code == 200 and out.content == expected.encode()
        detail = (await http_json(srv, "GET", f"jobs/{hello_id}/nodes")).json()
        assert detail[0]["exit_status"] is None and detail[0]["signal"] is None  # 2.0: no codes

        # -- frames 10–11: commit of a command not whitelisted → nack_commit → quorum_failed
        rm_id = await post_job(srv, {"command": "rm -rf /", "nodes": [name]})
        job = await final_job(srv, rm_id)
        assert job["status"] == "quorum_failed" and job["nodes"] == {"nacked": [name]}
        commit = ruby.messages("S", rm_id)[0]
        assert set(commit) == {
            "sequence",
            "timestamp",
            "type",
            "job_id",
            "server",
            "command",
            "capture",
        }
        assert commit["capture"] is False
        assert ruby.types("C", rm_id) == ["nack_commit"]

        # -- frames 12–16: regex whitelist, exit 7 → failed with stdout "failing\n", stderr ""
        fail_id = await post_job(
            srv, {"command": "fail 7", "nodes": [name], "capture_output": True}
        )
        job = await final_job(srv, fail_id)
        assert job["status"] == "complete" and job["nodes"] == {"failed": [name]}
        assert ruby.types("C", fail_id) == ["ack_commit", "ack_run", "failed"]
        failed = next(f for f in ruby.messages("C", fail_id) if f["type"] == "failed")
        assert (failed["stdout"], failed["stderr"]) == ("failing\n", "")
        base = f"jobs/{fail_id}/output/{name}"
        admin = ChefHttp(srv.http_url, srv.admin_user, srv.admin_key, KNIFE_AGENT)
        org_path = f"/organizations/{srv.org}/pushy/"
        out = await admin.request("GET", org_path + f"{base}/stdout", accept="*/*")
        err = await admin.request("GET", org_path + f"{base}/stderr", accept="*/*")
        assert (out.content, err.status_code, err.content) == (b"failing\n", 200, b"")

        # -- frames 17–18: a run the client never committed → nack_run. Our server never sends
        # one; the server side of it is a nack_run naming a job the node is not part of: that
        # node is rehabbed (abort → aborted → available), the job is not touched.
        ruby_b, _ = await connect_ruby(nursery, srv, peer_b, "rubyhost-b", abort_delay=1.0)
        foreign_id = await post_job(srv, {"command": "sleep", "nodes": [other]})
        await ruby_b.wait(lambda: "ack_run" in ruby_b.types("C", foreign_id), "b running")
        aborts_before = sum(1 for d, f in ruby.log if d == "S" and f["type"] == "abort")
        await ruby.send("nack_run", job_id=foreign_id)
        await ruby.wait(
            lambda: (
                sum(1 for d, f in ruby.log if d == "S" and f["type"] == "abort") > aborts_before
            ),
            "rehab abort after a foreign nack_run",
        )
        await peer.wait_node_state(status="online", availability="available")
        foreign = (await http_json(srv, "GET", f"jobs/{foreign_id}")).json()
        assert foreign["status"] == "running" and foreign["nodes"] == {"running": [other]}

        # -- frames 19–25: long job; abort while running → `aborted` with the job id later
        long_id = await post_job(srv, {"command": "sleep", "nodes": [name]})
        await ruby.wait(lambda: "ack_run" in ruby.types("C", long_id), "long job running")
        running = await ruby.heartbeat()
        assert (running["job_state"], running["job_id"]) == ("running", long_id)
        ruby.kill_done = trio.Event()
        mark = len(ruby.log)
        aborted = await http_json(srv, "POST", f"jobs/{long_id}/abort")
        assert aborted.status_code == 200, aborted.text
        assert aborted.json()["status"] == "aborted"
        assert aborted.json()["nodes"] == {"aborted": [name]}
        await ruby.wait(
            lambda: any(d == "S" and f["type"] == "abort" for d, f in ruby.log[mark:]), "abort"
        )
        # while the command is still being killed the node is in rehab
        state = await peer.node_state()
        assert state == {"node_name": name, "status": "online", "availability": "unavailable"}
        ruby.kill_done.set()
        await ruby.wait(lambda: "aborted" in ruby.types("C", long_id), "aborted with the job id")
        assert ruby.types("C", long_id) == ["ack_commit", "ack_run", "aborted"]
        await peer.wait_node_state(status="online", availability="available")
        job = await final_job(srv, long_id)
        assert job["status"] == "aborted" and job["nodes"] == {"aborted": [name]}
        idle = await ruby.heartbeat()  # frame 27
        assert (idle["job_state"], idle["job_id"]) == ("idle", None)

        # the other node's job ran on untouched; abort it too (its client answers later)
        stopped = await http_json(srv, "POST", f"jobs/{foreign_id}/abort")
        assert stopped.status_code == 200 and stopped.json()["nodes"] == {"aborted": [other]}
        await ruby_b.wait(lambda: "aborted" in ruby_b.types("C", foreign_id), "b aborted")

        # -- reconfigure: same incarnation and CURVE key, new connection → `ack`, no rehab
        ruby.heartbeats_on = False
        response = await ruby_config_fetch(chef, peer)
        assert chef.sent[-1][2] == "0"  # the first response carried no API version header
        # Same key for the server's life (wire-protocol.md §11).
        assert peer.session_key == first_key
        before = len(ruby.log)
        await peer.reconnect(hello=False)
        again = await ruby.heartbeat()
        assert again["sequence"] == 1
        reply = await ruby.wait(
            lambda: next((f for d, f in ruby.log[before:] if d == "S"), None),
            "a reply on the new connection",
        )
        assert reply["type"] == "ack"
        ruby.heartbeats_on = True
        assert (await peer.node_state())["availability"] == "available"

        for client in (ruby, ruby_b):
            check_server_frames(client)
            check_client_envelope(client)
        assert srv.proc is not None and srv.proc.poll() is None
        assert "Traceback" not in srv.log_path.read_text(errors="replace")
        nursery.cancel_scope.cancel()

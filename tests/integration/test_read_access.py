"""Least-privilege reads (security issue 15, F4): a node's key reads only its own config.

A real server, a scripted node that runs a job with `env`, `file` and captured output, and
signed HTTP as a plain client: every read endpoint answers 403 until the operator adds the
client to `pushy_job_readers` with `pushjobs-server group ...`; an admin client reads anyway.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

import httpx
import trio
import zmq

from tests.support.api import load_key, prepare
from tests.support.jobs import post_job
from tests.support.peer import open_peer
from tests.support.server import ServerProcess

SECRET_ENV = {"DB_PASSWORD": "hunter2"}
SECRET_FILE = "raw:top secret"


def denied(name: str) -> dict[str, list[str]]:
    return {
        "error": [f"User or client '{name}' does not have access to that action on this server."]
    }


def read_paths(job_id: str, node: str) -> list[tuple[str, str]]:
    """(path, Accept) for every read endpoint of one job and node."""
    return [
        ("jobs", "application/json"),
        (f"jobs/{job_id}", "application/json"),
        (f"jobs/{job_id}?include_file=true", "application/json"),
        (f"jobs/{job_id}/nodes", "application/json"),
        (f"jobs/{job_id}/output/{node}/stdout", "application/octet-stream"),
        (f"jobs/{job_id}/output/{node}/stdout", "text/event-stream"),
        (f"job_status_feed/{job_id}", "text/event-stream"),
        ("job_status_feed", "text/event-stream"),
        ("node_states", "application/json"),
        (f"node_states/{node}", "application/json"),
    ]


def get_status(srv: ServerProcess, path: str, accept: str, user: str, key: Any) -> tuple[int, Any]:
    """A signed GET as `user`; the status and, for JSON, the body (SSE: only the headers)."""
    full = f"/organizations/{srv.org}/pushy/{path}"
    p = prepare(srv.http_url, "GET", full, user=user, key=key, headers={"Accept": accept})
    with httpx.stream("GET", p.url, headers=p.headers, timeout=30) as response:
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.status_code, json.loads(response.read())
        return response.status_code, None


def statuses(srv: ServerProcess, paths: list[tuple[str, str]], user: str, key: Any):
    return {f"{p} [{a}]": get_status(srv, p, a, user, key) for p, a in paths}


async def run_secret_job(srv: ServerProcess, node: str, key_path: Any) -> str:
    """A job with env, file and captured output, run to success by a scripted node."""
    async with open_peer(srv.http_url, srv.org, node, key_path) as peer:
        await peer.expect("abort")
        await peer.send("aborted", job_id=None)
        peer.start_heartbeats()
        await trio.to_thread.run_sync(srv.wait_node, node)
        job_id = await trio.to_thread.run_sync(
            lambda: post_job(
                srv, "deploy", [node], env=SECRET_ENV, file=SECRET_FILE, capture_output=True
            )
        )
        await peer.expect("commit", skip=("ack", "abort"))
        await peer.send("ack_commit", job_id=job_id)
        await peer.expect("run")
        await peer.send("ack_run", job_id=job_id)
        await peer.send("output", job_id=job_id, channel="stdout", offset=0, data=b"deployed\n")
        await peer.send(
            "succeeded",
            job_id=job_id,
            exit_status=0,
            signal=None,
            stdout_bytes=9,
            stderr_bytes=0,
        )
        await trio.to_thread.run_sync(srv.wait_job, job_id)
        assert peer.errors == []
    return job_id


async def test_node_key_reads_nothing_until_it_joins_the_readers(server_factory) -> None:
    srv: ServerProcess = server_factory()
    suffix = os.getpid()
    node, node_key_path = srv.make_client(f"ra-node-{suffix}")
    snoop, snoop_key_path = srv.make_client(f"ra-snoop-{suffix}")
    boss, boss_key_path = srv.make_client(f"ra-boss-{suffix}", admin=True)
    job_id = await run_secret_job(srv, node, node_key_path)
    paths = read_paths(job_id, node)
    keys = {
        name: load_key(path)
        for name, path in ((node, node_key_path), (snoop, snoop_key_path), (boss, boss_key_path))
    }

    def check() -> None:
        # A plain client, and the job's own node, are denied everywhere, with the http-api.md §5
        # body.
        for name in (snoop, node):
            for where, (status, body) in statuses(srv, paths, name, keys[name]).items():
                assert (status, body) == (403, denied(name)), where
        # The node still fetches its own config (the agent's only request).
        ccpk = quote(zmq.curve_keypair()[0].decode("ascii"), safe="")
        status, config = get_status(
            srv, f"config/{node}?ccpk={ccpk}", "application/json", node, keys[node]
        )
        assert status == 200 and "encoded_session_key" in config, config
        # An admin client reads (no readers group yet); so does a user.
        for where, (status, _) in statuses(srv, paths, boss, keys[boss]).items():
            assert status == 200, where
        assert srv.get(f"jobs/{job_id}").status_code == 200

        # The operator lets `snoop` read: it sees the job's env, file and output.
        srv.admin("group", "create", srv.org, "pushy_job_readers")
        srv.admin("group", "add", srv.org, "pushy_job_readers", "--client", snoop)
        for where, (status, _) in statuses(srv, paths, snoop, keys[snoop]).items():
            assert status == 200, where
        status, job = get_status(
            srv, f"jobs/{job_id}?include_file=true", "application/json", snoop, keys[snoop]
        )
        assert status == 200 and job["env"] == SECRET_ENV and job["file"] == SECRET_FILE
        # The node itself is still not a reader.
        assert get_status(srv, "jobs", "application/json", node, keys[node]) == (403, denied(node))

    await trio.to_thread.run_sync(check)

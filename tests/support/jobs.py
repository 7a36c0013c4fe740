"""Jobs of a test server over signed HTTP, as its org admin.

Blocking (plain tests, or `trio.to_thread.run_sync` from trio code): `post_job`, `job_nodes`,
`node_details`, `output`; `ServerProcess.wait_job` waits for the end. From trio code:
`start_job`, `get_job`, `wait_job`.
"""

from __future__ import annotations

from typing import Any

import trio

from tests.support.api import api
from tests.support.server import FINAL_JOB_STATUSES, ServerProcess


def job_id_of(response: Any) -> str:
    """The id at the end of a `201 Created` job's `uri`."""
    assert response.status_code == 201, response.text
    return response.json()["uri"].rsplit("/", 1)[1]


# ---- blocking ------------------------------------------------------------------------------


def post_job(server: ServerProcess, command: str, nodes: list[str], **options: Any) -> str:
    """POST a job with a real Chef 1.3 signature (admin user); return its id."""
    return job_id_of(server.post("jobs", body={"command": command, "nodes": nodes, **options}))


def job_nodes(server: ServerProcess, job_id: str) -> list[dict[str, Any]]:
    """`GET jobs/{id}/nodes` (extension): per-node detail incl. exit status."""
    response = server.get(f"jobs/{job_id}/nodes")
    assert response.status_code == 200, response.text
    return response.json()


def node_details(server: ServerProcess, job_id: str) -> dict[str, dict[str, Any]]:
    """`job_nodes` by node name."""
    return {n["node_name"]: n for n in job_nodes(server, job_id)}


def output(server: ServerProcess, job_id: str, node: str, channel: str) -> bytes | None:
    """The stored bytes of one output channel, or None when there is none (404)."""
    response = server.get(
        f"jobs/{job_id}/output/{node}/{channel}", headers={"Accept": "application/octet-stream"}
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.content


# ---- trio ----------------------------------------------------------------------------------


async def start_job(srv: ServerProcess, command: str, nodes: list[str], **options: Any) -> str:
    """POST a job; return its id."""
    body = {"command": command, "nodes": nodes, **options}
    return job_id_of(await api(srv, "POST", "jobs", body=body))


async def get_job(srv: ServerProcess, job_id: str, query: str = "") -> dict[str, Any]:
    """The job object (`query`: e.g. `?include_file=true`)."""
    response = await api(srv, "GET", f"jobs/{job_id}{query}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_job(srv: ServerProcess, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the job has a final status; return the job object."""
    job: dict[str, Any] = {}
    with trio.move_on_after(timeout):
        while True:
            job = await get_job(srv, job_id)
            if job["status"] in FINAL_JOB_STATUSES:
                return job
            await trio.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished: {job}")

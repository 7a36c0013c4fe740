"""docs/openapi.yaml against the real server: every documented operation answers with a
documented status, and every JSON body and SSE event validates against its documented schema.

A real server and one real agent run on 127.0.0.1 (module fixtures); requests carry real Chef
signatures. Each documented operation has a success case (the test fails for an operation
without one, so a new route must be exercised here), and the error cases check that each error
status is documented for its route and has the documented body shape.

Needs PyYAML (to read the document) and jsonschema (Draft 2020-12, as used by OpenAPI 3.1).
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.agents import AgentProcess
from tests.support.api import prepare
from tests.support.jobs import post_job
from tests.support.server import ServerProcess
from tests.support.waits import wait_for

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docs/openapi.yaml")
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is needed to check bodies")

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ORG_PREFIX = "/organizations/{org}/pushy"

NODE = "oa-node"
WHITELIST = """
"greet" = { run = 'echo "hello from $CHEF_PUSH_NODE_NAME"; echo warn >&2', shell = true }
"sleep" = { pattern = '^sleep ([0-9]{1,2})$', run = 'sleep \\1' }
"""


# ---------------------------------------------------------------- the document


def operations() -> dict[str, tuple[str, str]]:
    """operationId → (path template, method) for every documented operation."""
    found = {}
    for template, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                found[item[method]["operationId"]] = (template, method)
    return found


OPERATIONS = operations()


def deref(obj: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (`#/components/...`) of a response or parameter object."""
    while "$ref" in obj:
        node: Any = SPEC
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def validate(schema: dict[str, Any], instance: Any, where: str) -> None:
    """Validate `instance` against a schema of the document (refs resolve inside it)."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    root["components"] = SPEC["components"]
    errors = sorted(
        jsonschema.Draft202012Validator(root).iter_errors(instance), key=lambda e: list(e.path)
    )
    if errors:
        details = "\n".join(f"  {list(e.path)}: {e.message}" for e in errors[:10])
        raise AssertionError(f"{where}: body does not match the schema:\n{details}\n{instance!r}")


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Events of an SSE body: [{"event", "id", "data"}]; comments (`:keepalive`) skipped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


def check(
    response: httpx.Response, template: str, method: str, *, body_text: str | None = None
) -> Any:
    """Assert the answer is documented for the operation; return the decoded body."""
    operation = SPEC["paths"][template][method]
    where = f"{method.upper()} {template} → {response.status_code}"
    documented = operation["responses"]
    assert str(response.status_code) in documented, (
        f"{where} is not documented (documented: {sorted(documented)}): {response.text[:300]}"
    )
    spec = deref(documented[str(response.status_code)])
    for name, header in spec.get("headers", {}).items():
        if name in response.headers:
            validate(header["schema"], response.headers[name], f"{where} header {name}")
        else:
            assert not header.get("required"), f"{where}: header {name} missing"
    content = spec.get("content", {})
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if not content:
        return None
    assert media in content, f"{where}: Content-Type {media!r} not in {sorted(content)}"
    media_spec = content[media]
    if media == "application/json":
        body = response.json()
        validate(media_spec["schema"], body, where)
        return body
    if media == "text/event-stream":
        events = parse_sse(body_text if body_text is not None else response.text)
        catalogue = media_spec["x-sse-events"]
        for event in events:
            name = event.get("event")
            assert name in catalogue, f"{where}: undocumented event {name!r}"
            assert "id" in event, f"{where}: event {name} without id"
            validate(catalogue[name], json.loads(event["data"]), f"{where} event {name}")
        return events
    return response.content


def test_document_is_consistent() -> None:
    """Every schema is valid Draft 2020-12 and every local `$ref` resolves."""
    assert SPEC["openapi"].startswith("3.1")
    for name, schema in SPEC["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert isinstance(name, str)

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for ref in walk(SPEC):
        assert ref.startswith("#/components/"), ref
        deref({"$ref": ref})
    ids = [item[m]["operationId"] for item in SPEC["paths"].values() for m in METHODS if m in item]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)


# ---------------------------------------------------------------- a server with one agent


class World:
    """The running server, one agent, and jobs in known states."""

    def __init__(self, server: ServerProcess, base: Path) -> None:
        self.server = server
        self.agent = AgentProcess(server, base / NODE, NODE, whitelist=WHITELIST)
        self.agent.start()
        self.cfg_client, self.cfg_key = server.make_client("oa-config-client")
        self.plain_client, self.plain_key = server.make_client("oa-plain-client")
        self.me = pwd.getpwuid(os.getuid()).pw_name
        self.done_job = post_job(
            server,
            "greet",
            [NODE],
            capture_output=True,
            env={"GREETING": "hi"},
            user=self.me,
            dir=str(base),
            file="raw:hello file\n",
        )
        server.wait_job(self.done_job)
        wait_for(lambda: self.output_closed(self.done_job), 15, what="output record closed")
        self.offline_job = post_job(server, "greet", ["oa-never-seen"])
        server.wait_job(self.offline_job)
        # past its grace period the job is no longer live: its feed answers with one summary
        wait_for(
            lambda: self.offline_job not in server.get("/pushy/_status").json()["job_processes"],
            15,
            what="finished job to leave memory",
        )

    def output_closed(self, job_id: str) -> bool:
        nodes = self.server.get(f"jobs/{job_id}/nodes").json()
        return nodes[0]["stdout_bytes"] > 0 and nodes[0]["status"] == "succeeded"

    def path(self, template: str, **values: str) -> str:
        values.setdefault("org", self.server.org)
        return template.format(**values)

    def call(
        self,
        method: str,
        template: str,
        *,
        query: str = "",
        accept: str | None = "application/json",
        **kw: Any,
    ) -> httpx.Response:
        """A signed request (admin unless `user`/`key` given) to the template's concrete path."""
        values = {k: kw.pop(k) for k in ("org", "node", "id", "channel") if k in kw}
        path = self.path(template, **values) + query
        headers = dict(kw.pop("headers", {}) or {})
        if accept is not None:
            headers["Accept"] = accept
        return self.server.request(method.upper(), path, headers=headers, **kw)

    def signed_headers(self, method: str, path: str, accept: str) -> dict[str, str]:
        srv, accepting = self.server, {"Accept": accept}
        signed = prepare(
            srv.http_url, method, path, user=srv.admin_user, key=srv.admin_key, headers=accepting
        )
        return signed.headers

    def wait_running(self, job_id: str) -> None:
        def running() -> bool:
            job = self.server.get(f"jobs/{job_id}").json()
            return job["status"] == "running" and "running" in job["nodes"]

        wait_for(running, 15, what=f"job {job_id} running")


@pytest.fixture(scope="module")
def world(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    made = World(server, tmp_path_factory.mktemp("openapi"))
    try:
        yield made
    finally:
        made.agent.stop()


def ccpk() -> str:
    """A fresh CurveZMQ public key, URL-encoded for the query string."""
    from pushjobs.protocol.keys import curve_keypair

    return quote(curve_keypair()[0], safe="")


# ---------------------------------------------------------------- success cases


def _status(w: World) -> None:
    response = httpx.get(w.server.http_url + "/pushy/_status", timeout=10)
    body = check(response, "/pushy/_status", "get")
    assert response.status_code == 200 and body["status"] == "it's alive"


def _config(route: str) -> Callable[[World], None]:
    template = f"{ORG_PREFIX}/{route}/{{node}}"

    def case(w: World) -> None:
        query = f"?ccpk={ccpk()}&version=3.0"
        response = w.call(
            "get", template, node=w.cfg_client, query=query, user=w.cfg_client, key=w.cfg_key
        )
        body = check(response, template, "get")
        assert response.status_code == 200, response.text
        assert "encoded_session_key" in body and body["node"] == w.cfg_client
        # a user allowed to read gets the document without the session key
        response = w.call("get", template, node=w.cfg_client, query=query)
        body = check(response, template, "get")
        assert response.status_code == 200 and "encoded_session_key" not in body

    return case


def _list_jobs(w: World) -> None:
    template = f"{ORG_PREFIX}/jobs"
    body = check(w.call("get", template), template, "get")
    assert {w.done_job, w.offline_job} <= {job["id"] for job in body}
    response = w.call("get", template, query="?status=complete,quorum_failed&limit=5&offset=0")
    body = check(response, template, "get")
    assert response.status_code == 200 and 1 <= len(body) <= 5
    # the audit filters (extension), and a `Link` to the next page when there is one
    query = f"?node={NODE}&node=oa-never-seen&requested_by={w.server.admin_user}"
    query += "&since=2000-01-01&until=Fri,%2001%20Jan%202100%2000:00:00%20GMT&command=greet"
    response = w.call("get", template, query=query + "&limit=1")
    body = check(response, template, "get")
    assert len(body) == 1 and body[0]["requested_by"] == w.server.admin_user
    assert response.headers["link"].endswith('offset=1>; rel="next"'), response.headers


def _start_job(w: World) -> None:
    template = f"{ORG_PREFIX}/jobs"
    response = w.call(
        "post", template, body={"command": "greet", "nodes": ["oa-offline-a", "oa-offline-a"]}
    )
    body = check(response, template, "post")
    assert response.status_code == 201
    assert response.headers["location"] == body["uri"]
    w.server.wait_job(body["uri"].rsplit("/", 1)[1])
    # a rollout (extension): the node overruns its own deadline and spends the error budget
    rollout = {"max_concurrency": "100%", "max_errors": 0, "run_timeout": 1}
    job_id = post_job(w.server, "sleep 30", [NODE], **rollout)
    feed = f"{ORG_PREFIX}/job_status_feed/{{id}}"
    response = w.call("get", feed, id=job_id, accept="text/event-stream", timeout=30)
    events = check(response, feed, "get")
    names = [e["event"] for e in events]
    assert names[-2:] == ["budget_exhausted", "job_complete"], names
    assert json.loads(events[-1]["data"])["status"] == "stopped"
    job = check(
        w.call("get", f"{ORG_PREFIX}/jobs/{{id}}", id=job_id), f"{ORG_PREFIX}/jobs/{{id}}", "get"
    )
    assert (job["max_concurrency"], job["max_errors"], job["nodes"]) == (
        "100%",
        0,
        {"timed_out": [NODE]},
    )
    w.agent.wait_available()


def _get_job(w: World) -> None:
    template = f"{ORG_PREFIX}/jobs/{{id}}"
    body = check(w.call("get", template, id=w.done_job), template, "get")
    assert body["status"] == "complete" and body["file_specified"] is True
    assert body["user"] == w.me and body["env"] == {"GREETING": "hi"}
    body = check(
        w.call("get", template, id=w.done_job, query="?include_file=true"), template, "get"
    )
    assert body["file"] == "raw:hello file\n" and "file_specified" not in body


def _output(w: World) -> None:
    template = f"{ORG_PREFIX}/jobs/{{id}}/output/{{node}}/{{channel}}"
    for channel, expected in (("stdout", b"hello from oa-node\n"), ("stderr", b"warn\n")):
        response = w.call(
            "get",
            template,
            id=w.done_job,
            node=NODE,
            channel=channel,
            accept="application/octet-stream",
        )
        assert check(response, template, "get") == expected
    response = w.call(
        "get", template, id=w.done_job, node=NODE, channel="stdout", accept="text/event-stream"
    )
    events = check(response, template, "get")
    assert [e["event"] for e in events][-1] == "end"
    assert any(e["event"] == "output" for e in events)


def _node_states(w: World) -> None:
    template = f"{ORG_PREFIX}/node_states"
    body = check(w.call("get", template), template, "get")
    assert {"node_name": NODE, "availability": "available"} in body
    query = "?labels=true&all=true&selector=os"
    body = check(w.call("get", template, query=query), template, "get")
    mine = next(item for item in body if item["node_name"] == NODE)
    assert mine["status"] == "online" and "os" in mine["labels"]
    response = w.call("get", template, query="?selector=Role")
    assert check(response, template, "get")["error"][0].startswith("invalid selector 'Role': ")


def _node_state(w: World) -> None:
    template = f"{ORG_PREFIX}/node_states/{{node}}"
    body = check(w.call("get", template, node=NODE), template, "get")
    assert body == {"node_name": NODE, "status": "online", "availability": "available"}
    body = check(w.call("get", template, node="oa-unknown"), template, "get")
    assert body["status"] == "offline"


def _job_feed(route: str) -> Callable[[World], None]:
    template = f"{ORG_PREFIX}/{route}/{{id}}"

    def case(w: World) -> None:
        # a live job: the whole event history, streamed until job_complete
        job_id = post_job(w.server, "sleep 1", [NODE])
        response = w.call("get", template, id=job_id, accept="text/event-stream", timeout=30)
        events = check(response, template, "get")
        names = [e["event"] for e in events]
        assert names[0] == "start" and names[-1] == "job_complete", names
        assert {"quorum_vote", "quorum_succeeded", "run_start", "run_complete"} <= set(names)
        # a job that is no longer live: one summary event
        response = w.call("get", template, id=w.offline_job, accept="text/event-stream")
        events = check(response, template, "get")
        assert [e["event"] for e in events] == ["summary"]

    return case


def _org_feed(route: str) -> Callable[[World], None]:
    template = f"{ORG_PREFIX}/{route}"

    def case(w: World) -> None:
        # the org feed never ends: read the replayed history, then hang up
        post_job(w.server, "greet", [NODE])
        path = w.path(template)
        headers = w.signed_headers("GET", path, "text/event-stream")
        headers["Last-Event-ID"] = "not-a-retained-id"
        text = ""
        timeout = httpx.Timeout(10.0, read=3.0)
        with httpx.stream("GET", w.server.http_url + path, headers=headers, timeout=timeout) as r:
            assert r.status_code == 200, r.read()
            try:
                for chunk in r.iter_text():
                    text += chunk
                    names = [e.get("event") for e in parse_sse(text)]
                    if "start" in names and "job_complete" in names and text.endswith("\n\n"):
                        break
            except httpx.ReadTimeout:
                pass
            events = check(r, template, "get", body_text=text)
        names = [e["event"] for e in events]
        assert names[0] == "start_of_history" and "start" in names, names

    return case


def _abort(w: World) -> None:
    template = f"{ORG_PREFIX}/jobs/{{id}}/abort"
    job_id = post_job(w.server, "sleep 30", [NODE])
    w.wait_running(job_id)
    response = w.call("post", template, id=job_id, body=b"")
    body = check(response, template, "post")
    assert response.status_code == 200 and body["status"] == "aborted"
    response = w.call("post", template, id=job_id, body=b"")
    body = check(response, template, "post")
    assert response.status_code == 409
    w.agent.wait_available()


def _job_output_feed(w: World) -> None:
    template = f"{ORG_PREFIX}/jobs/{{id}}/output"
    live_job = post_job(w.server, "greet", [NODE], capture_output=True)
    for job_id in (w.done_job, live_job):  # replayed from the store, then followed live
        response = w.call("get", template, id=job_id, accept="text/event-stream", timeout=30)
        events = check(response, template, "get")
        assert response.status_code == 200
        got: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        for event in events:
            data = json.loads(event["data"])
            if event["event"] == "output":
                assert data["node"] == NODE and data["offset"] == len(got[data["channel"]])
                got[data["channel"]] += data["data"].encode()
                assert event["id"] == f"{NODE}:{data['channel']}:{len(got[data['channel']])}"
        assert got == {"stdout": b"hello from oa-node\n", "stderr": b"warn\n"}
        ends = [e["id"] for e in events if e["event"] == "end"]
        assert sorted(ends) == [f"{NODE}:stderr:end", f"{NODE}:stdout:end"]
        assert (events[-1]["event"], events[-1]["id"]) == ("job_complete", "job_complete")


def _job_nodes(w: World) -> None:
    template = f"{ORG_PREFIX}/jobs/{{id}}/nodes"
    body = check(w.call("get", template, id=w.done_job), template, "get")
    assert body[0]["node_name"] == NODE and body[0]["exit_status"] == 0


SUCCESS_CASES: dict[str, Callable[[World], None]] = {
    "getStatus": _status,
    "getConfig": _config("config"),
    "getConnect": _config("connect"),
    "listJobs": _list_jobs,
    "startJob": _start_job,
    "getJob": _get_job,
    "getOutput": _output,
    "listNodeStates": _node_states,
    "getNodeState": _node_state,
    "jobFeed": _job_feed("job_status_feed"),
    "jobFeedAlias": _job_feed("jobs_status_feed"),
    "orgFeed": _org_feed("job_status_feed"),
    "orgFeedAlias": _org_feed("jobs_status_feed"),
    "abortJob": _abort,
    "jobNodes": _job_nodes,
    "jobOutputFeed": _job_output_feed,
}


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_documented_operation_succeeds(world: World, operation_id: str) -> None:
    if operation_id not in SUCCESS_CASES:
        pytest.fail(f"documented operation {operation_id} has no request in this test")
    SUCCESS_CASES[operation_id](world)


def test_every_case_is_documented() -> None:
    assert set(SUCCESS_CASES) == set(OPERATIONS)


# ---------------------------------------------------------------- error cases


def test_authentication_errors_are_documented(world: World) -> None:
    template = f"{ORG_PREFIX}/jobs"
    path = world.path(template)
    # unsigned: 400 missing headers
    response = httpx.get(world.server.http_url + path, timeout=10)
    assert check(response, template, "get")["error"][0].startswith(
        "missing required authentication header(s) 'X-Ops-UserId'"
    )
    # signed with a key that is not the user's: 401 with WWW-Authenticate
    response = world.call("get", template, key=world.plain_key)
    assert response.status_code == 401
    check(response, template, "get")
    assert "www-authenticate" in response.headers
    # unknown organization: 404
    response = world.call("get", template, org="oa-no-such-org")
    assert check(response, template, "get") == {
        "error": ["organization 'oa-no-such-org' does not exist."]
    }
    # a client that is not an admin may not write: 403
    response = world.call(
        "post",
        template,
        body={"command": "greet", "nodes": [NODE]},
        user=world.plain_client,
        key=world.plain_key,
    )
    assert response.status_code == 403
    check(response, template, "post")


def test_config_errors_are_documented(world: World) -> None:
    template = f"{ORG_PREFIX}/config/{{node}}"
    kw = {"node": world.cfg_client, "user": world.cfg_client, "key": world.cfg_key}
    response = world.call("get", template, **kw)
    assert check(response, template, "get") == {"error": ["Missing ccpk"]}
    response = world.call("get", template, query="?ccpk=short", **kw)
    assert check(response, template, "get") == {"error": ["Bad ccpk"]}
    response = world.call(
        "get",
        template,
        node="oa-someone-else",
        query=f"?ccpk={ccpk()}",
        user=world.cfg_client,
        key=world.cfg_key,
    )
    assert check(response, template, "get") == {"error": ["Client and node name must match"]}


def test_job_errors_are_documented(world: World) -> None:
    jobs = f"{ORG_PREFIX}/jobs"
    response = world.call("post", jobs, body={"command": "greet", "nodes": []})
    assert check(response, jobs, "post") == {"error": "at least one node must be supplied"}
    response = world.call(
        "post", jobs, body={"command": "greet", "nodes": [NODE], "max_errors": "101%"}
    )
    assert check(response, jobs, "post") == {
        "error": "invalid max_errors (expected an integer >= 0 or a percentage)"
    }
    response = world.call("get", jobs, query="?limit=0")
    assert response.status_code == 400
    check(response, jobs, "get")
    response = world.call("get", jobs, query="?since=yesterday")
    assert check(response, jobs, "get") == {
        "error": ["invalid since 'yesterday' (expected an RFC 1123 or ISO 8601 time)"]
    }
    response = world.call(
        "post",
        jobs,
        body=json.dumps({"command": "greet", "nodes": [NODE]}).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    check(response, jobs, "post")
    response = world.call(
        "post",
        jobs,
        body=b"{" + b" " * 1_000_001 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert check(response, jobs, "post") == {"error": "JSON must be no more than 1000000 bytes."}

    unknown = "0" * 32
    for template, method in (
        (f"{ORG_PREFIX}/jobs/{{id}}", "get"),
        (f"{ORG_PREFIX}/jobs/{{id}}/nodes", "get"),
        (f"{ORG_PREFIX}/jobs/{{id}}/abort", "post"),
    ):
        response = world.call(method, template, id=unknown)
        assert check(response, template, method) == {"error": [f"job '{unknown}' not found"]}
    feed = f"{ORG_PREFIX}/job_status_feed/{{id}}"
    response = world.call("get", feed, id=unknown, accept="text/event-stream")
    assert response.status_code == 404
    check(response, feed, "get")

    abort = f"{ORG_PREFIX}/jobs/{{id}}/abort"
    response = world.call("post", abort, id=world.done_job, body=b"")
    assert check(response, abort, "post") == {
        "error": [f"job '{world.done_job}' has already finished with status 'complete'"]
    }


def test_output_and_negotiation_errors_are_documented(world: World) -> None:
    output = f"{ORG_PREFIX}/jobs/{{id}}/output/{{node}}/{{channel}}"
    response = world.call(
        "get",
        output,
        id=world.offline_job,
        node="oa-never-seen",
        channel="stdout",
        accept="application/octet-stream",
    )
    assert check(response, output, "get") == {
        "error": [f"no output for node 'oa-never-seen' in job '{world.offline_job}'"]
    }
    response = world.call("get", output, id=world.done_job, node=NODE, channel="stdout")
    assert response.status_code == 406  # Accept: application/json
    check(response, output, "get")
    feed = f"{ORG_PREFIX}/job_status_feed/{{id}}"
    response = world.call("get", feed, id=world.done_job, accept="application/json")
    assert response.status_code == 406
    check(response, feed, "get")
    job_output = f"{ORG_PREFIX}/jobs/{{id}}/output"
    response = world.call("get", job_output, id=world.done_job)  # Accept: application/json
    assert response.status_code == 406
    check(response, job_output, "get")
    unknown = "0" * 32
    for job_id, text in (
        (unknown, f"job '{unknown}' not found"),
        (world.offline_job, f"no output for job '{world.offline_job}'"),
    ):
        response = world.call("get", job_output, id=job_id, accept="text/event-stream")
        assert check(response, job_output, "get") == {"error": [text]}


@pytest.mark.parametrize("template", sorted(SPEC["paths"]))
def test_undocumented_methods_get_405(world: World, template: str) -> None:
    """The document says: methods not listed for a path get 405 with an `Allow` header."""
    values = {"node": NODE, "id": world.done_job, "channel": "stdout"}
    path = world.path(template, **values)
    documented = {m.upper() for m in METHODS if m in SPEC["paths"][template]}
    for method in ("PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "POST"):
        if method in documented:
            continue
        response = httpx.request(method, world.server.http_url + path, timeout=10)
        assert response.status_code == 405, (method, path, response.status_code)
        assert set(response.headers["allow"].split(", ")) == documented
        if method != "HEAD":
            validate({"$ref": "#/components/schemas/ErrorArray"}, response.json(), path)

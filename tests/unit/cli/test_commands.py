"""Whole `pushjobs` commands run through `main.run` against a scripted HTTP peer (MockTransport).

The peer plays the server's documented answers (http-api.md); signatures are verified on every
request. End-to-end runs against the real server are in tests/integration/test_cli.py.
"""

import base64
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pushjobs.cli import main as cli_main
from pushjobs.cli.app import App
from pushjobs.cli.client import SignedClient
from pushjobs.protocol.chef_auth import validate_auth_headers, verify_request
from pushjobs.protocol.keys import generate_rsa_key, private_key_pem

BASE = "http://push.test/organizations/acme"
JOB_ID = "0123456789abcdef0123456789abcdef"
DATE = "Fri, 27 Nov 2026 06:00:51 GMT"


def job_object(status: str, nodes: dict[str, list[str]], **extra: Any) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "command": "hello",
        "status": status,
        "run_timeout": 3600,
        "created_at": DATE,
        "updated_at": DATE,
        "nodes": nodes,
        **extra,
    }


class Peer:
    """Answers like the pushjobs server for one job whose outcome the test chooses."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.final = job_object("complete", {"succeeded": ["n1"]})
        self.events: list[tuple[str, dict]] = [("job_complete", {"status": "complete"})]
        self.posted: list[Any] = []
        self.requests: list[httpx.Request] = []
        self.outputs: dict[tuple[str, str], bytes] = {}
        self.errors: dict[str, httpx.Response] = {}
        self.node_rows: list[dict] = []
        self.search_hits: list[str] = []
        # per-job output feed: the events of each successive connection, and the
        # Last-Event-ID each connection sent
        self.output_feeds: list[list[tuple[str, dict, str]]] = []
        self.feed_last_ids: list[str | None] = []
        self.list_headers: dict[str, str] = {}
        self.job_answers: list[dict] = []  # answers of GET jobs/<id> before `final`

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        auth = validate_auth_headers(
            {k.lower(): v for k, v in request.headers.items()}, time.time()
        )
        path = request.url.raw_path.split(b"?")[0].decode()
        assert verify_request(
            auth,
            method=request.method,
            path=path,
            body=request.content,
            public_key=self.key.public_key(),
        )
        self.requests.append(request)
        rel = path.removeprefix("/organizations/acme/pushy/")
        for pattern, response in self.errors.items():
            if re.fullmatch(pattern, f"{request.method} {rel}"):
                return response
        if request.method == "POST" and rel == "jobs":
            self.posted.append(json.loads(request.content))
            uri = f"{BASE}/pushy/jobs/{JOB_ID}"
            return httpx.Response(201, json={"uri": uri}, headers={"Location": uri})
        if rel == f"jobs/{JOB_ID}":
            return httpx.Response(
                200, json=self.job_answers.pop(0) if self.job_answers else self.final
            )
        if rel == f"jobs/{JOB_ID}/output":
            return self.output_feed(request)
        if rel == f"job_status_feed/{JOB_ID}":
            body = "".join(
                f"event: {n}\nid: job-{i}\ndata: {json.dumps(d)}\n\n"
                for i, (n, d) in enumerate(self.events, 1)
            )
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=httpx.ByteStream(body.encode()),
            )
        m = re.fullmatch(rf"jobs/{JOB_ID}/output/([^/]+)/(stdout|stderr)", rel)
        if m and request.headers["accept"] == "text/event-stream":
            return self.live_output(m.group(1), m.group(2), request.headers.get("last-event-id"))
        if m:
            data = self.outputs.get((m.group(1), m.group(2)))
            if data is None:
                return httpx.Response(
                    404, json={"error": [f"no output for node '{m.group(1)}' in job '{JOB_ID}'"]}
                )
            return httpx.Response(200, content=data)
        if rel == f"jobs/{JOB_ID}/nodes":
            return httpx.Response(200, json=self.node_rows)
        if rel == f"jobs/{JOB_ID}/abort":
            return httpx.Response(200, json=job_object("aborted", {"aborted": ["n1"]}))
        if rel == "jobs":
            return httpx.Response(
                200,
                json=[{k: v for k, v in self.final.items() if k != "nodes"}],
                headers=self.list_headers,
            )
        if rel == "node_states":
            return httpx.Response(
                200,
                json=[
                    {"node_name": "b", "availability": "unavailable"},
                    {"node_name": "a", "availability": "available"},
                ],
            )
        if rel == "/organizations/acme/search/node":
            q = request.url.params
            hits = [n for n in self.search_hits if q["q"] == "role:web"]
            start = int(q["start"])
            rows = [{"url": "u", "data": {"name": n}} for n in hits[start : start + 2]]
            return httpx.Response(200, json={"rows": rows, "start": start, "total": len(hits)})
        m = re.fullmatch(r"node_states/(.+)", rel)
        if m:
            return httpx.Response(
                200,
                json={"node_name": m.group(1), "status": "offline", "availability": "unavailable"},
            )
        return httpx.Response(404, json={"error": ["not found"]})

    def output_feed(self, request: httpx.Request) -> httpx.Response:
        """`GET jobs/<id>/output` (http-api.md §7.13): the next scripted connection."""
        assert request.headers["accept"] == "text/event-stream"
        self.feed_last_ids.append(request.headers.get("last-event-id"))
        if not self.output_feeds:
            return httpx.Response(404, json={"error": [f"no output for job '{JOB_ID}'"]})
        body = "".join(
            f"event: {n}\nid: {i}\ndata: {json.dumps(d)}\n\n"
            for n, d, i in self.output_feeds.pop(0)
        )
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=httpx.ByteStream(body.encode()),
        )

    def live_output(self, node: str, channel: str, last_id: str | None) -> httpx.Response:
        """Chunks of `outputs`, 4 bytes each; the first stream of each channel drops midway."""
        if not any(n == node for n, _ in self.outputs):
            return httpx.Response(
                404, json={"error": [f"no output for node '{node}' in job '{JOB_ID}'"]}
            )
        data = self.outputs.get((node, channel), b"")
        start = int(last_id) if last_id else 0
        events = []
        pos = start
        while pos < len(data):
            chunk = data[pos : pos + 4]
            try:
                fields = {"offset": pos, "encoding": "text", "data": chunk.decode()}
            except UnicodeDecodeError:
                fields = {
                    "offset": pos,
                    "encoding": "base64",
                    "data": base64.b64encode(chunk).decode(),
                }
            pos += len(chunk)
            events.append(f"event: output\nid: {pos}\ndata: {json.dumps(fields)}\n\n")
        end = "event: end\nid: end\ndata: {}\n\n"
        if last_id is None and len(events) > 1:
            body = "".join(events[: len(events) // 2])  # dropped before the end event
        else:
            body = "".join(events) + end
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=httpx.ByteStream(body.encode()),
        )


@pytest.fixture(scope="module")
def key() -> Any:
    return generate_rsa_key(2048)


@pytest.fixture
def peer(key: Any) -> Peer:
    return Peer(key)


@pytest.fixture
def run(peer: Peer, key: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    keyfile = tmp_path / "alice.pem"
    keyfile.write_bytes(private_key_pem(key))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("PUSHJOBS_CONFIG", "PUSHJOBS_PROFILE", "CHEF_PROFILE", "PUSHJOBS_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PUSHJOBS_SERVER_URL", BASE)
    monkeypatch.setenv("PUSHJOBS_USER", "alice")
    monkeypatch.setenv("PUSHJOBS_KEY", str(keyfile))

    class TestApp(App):
        def client(self) -> SignedClient:
            if self._client is None:
                self._client = SignedClient(
                    self.settings(), key, transport=httpx.MockTransport(peer)
                )
            return self._client

    def _run(*argv: str) -> tuple[int, str, str]:
        code = cli_main.run(list(argv), app_factory=TestApp)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_job_start_success_plain(run, peer: Peer) -> None:
    peer.events = [
        ("start", {"node_count": 1}),
        ("quorum_vote", {"node": "n1", "status": "success"}),
        ("quorum_succeeded", {}),
        ("run_start", {"node": "n1"}),
        ("run_complete", {"node": "n1", "status": "success"}),
        ("job_complete", {"status": "complete"}),
    ]
    code, out, err = run("job", "start", "hello", "n1", "n1", "--capture")
    assert code == 0, err
    assert peer.posted == [
        {"command": "hello", "nodes": ["n1"], "quorum": 1, "capture_output": True, "env": {}}
    ]
    lines = out.splitlines()
    assert lines[:5] == [
        f"Started.  Job ID: {JOB_ID}",
        "Voting.",
        "Running (1/1 in progress) ...",
        "Running (0/1 in progress) ...",
        "Complete.",
    ]
    assert f"id:          {JOB_ID}" in lines
    assert lines[-1] == "1 node: 1 succeeded"


def test_job_start_body_options(run, peer: Peer, tmp_path: Path) -> None:
    f = tmp_path / "job.txt"
    f.write_bytes(b"\xff\x00")
    code, _, err = run(
        "job", "start", "hello", "a", "b", "c", "--quorum", "50%", "--timeout", "30",
        "--with-env", '{"FOO": "bar"}', "--file", str(f), "--as-user", "bob", "--in-dir", "/tmp",
        "--poll",
    )  # fmt: skip
    assert code == 0, err
    assert peer.posted == [
        {
            "command": "hello",
            "nodes": ["a", "b", "c"],
            "quorum": 2,
            "capture_output": False,
            "env": {"FOO": "bar"},
            "run_timeout": 30,
            "file": "base64:/wA=",
            "user": "bob",
            "dir": "/tmp",
        }
    ]
    # --poll: no feed request at all
    assert not any("job_status_feed" in r.url.path for r in peer.requests)


def test_job_start_exit_codes(run, peer: Peer) -> None:
    peer.final = job_object("complete", {"succeeded": ["n1"], "failed": ["n2"]})
    assert run("job", "start", "hello", "n1", "n2")[0] == 1
    peer.final = job_object("quorum_failed", {"nacked": ["n1"]})
    peer.events = [("job_complete", {"status": "quorum_failed"})]
    code, out, _ = run("job", "start", "hello", "n1")
    assert code == 2 and "Quorum_failed." in out
    assert run("job", "start", "hello", "n1", "--knife-compatible-exit")[0] == 1
    peer.final = job_object("complete", {"succeeded": ["n1"], "unavailable": ["n2"]})
    peer.events = [("job_complete", {"status": "complete"})]
    assert run("job", "start", "hello", "n1", "n2")[0] == 1
    assert run("job", "start", "hello", "n1", "n2", "--knife-compatible-exit")[0] == 0


def test_job_start_nowait(run, peer: Peer) -> None:
    code, out, _ = run("job", "start", "hello", "n1", "--nowait")
    assert (code, out) == (0, f"Started.  Job ID: {JOB_ID}\n")
    code, out, _ = run("--json", "job", "start", "hello", "n1", "-b")
    assert code == 0
    assert json.loads(out) == {"id": JOB_ID, "uri": f"{BASE}/pushy/jobs/{JOB_ID}"}
    assert [r.method for r in peer.requests] == ["POST", "POST"]


def test_job_start_json_prints_only_the_job(run, peer: Peer) -> None:
    code, out, _ = run("job", "start", "hello", "n1", "--json")
    assert code == 0 and json.loads(out) == peer.final


def test_job_start_events(run, peer: Peer) -> None:
    code, out, _ = run("job", "start", "hello", "n1", "--events")
    lines = out.splitlines()
    assert json.loads(lines[0]) == {
        "event": "job_complete",
        "id": "job-1",
        "data": {"status": "complete"},
    }
    assert "Started." not in out and code == 0
    assert [json.loads(line) for line in lines[1:]] == [{"event": "job", "data": peer.final}]


def test_events_output_lines_then_the_job(run, peer: Peer) -> None:
    peer.final = job_object("complete", {"failed": ["b"], "succeeded": ["a"]})
    peer.outputs = {("b", "stdout"): b"\xffbin", ("b", "stderr"): "é\n".encode()}
    code, out, _ = run("job", "start", "hello", "a", "b", "--events", "--show-output", "failed")
    assert code == 1
    assert [json.loads(line) for line in out.splitlines()][1:] == [
        {"event": "output", "data": {"node": "b", "channel": "stdout", "base64": "/2Jpbg=="}},
        {"event": "output", "data": {"node": "b", "channel": "stderr", "text": "é\n"}},
        {"event": "job", "data": peer.final},
    ]
    code, out, _ = run("job", "start", "hello", "a", "--events", "--nowait")
    uri = f"{BASE}/pushy/jobs/{JOB_ID}"
    assert (code, json.loads(out)) == (0, {"event": "created", "data": {"id": JOB_ID, "uri": uri}})


def test_job_start_usage_errors(run, peer: Peer) -> None:
    code, _, err = run("job", "start")
    assert code == 3 and err.startswith("ERROR: No job specified.\nusage: pushjobs job start")
    assert run("job", "start", "--knife-compatible-exit")[0] == 1
    code, _, err = run("job", "start", "hello")
    assert code == 3 and "No nodes to run job on. Specify nodes as arguments" in err
    code, _, err = run("job", "start", "hello", "n1", "--with-env", "[1]")
    assert code == 3 and "--with-env must be a JSON object of strings" in err
    code, _, err = run("job", "start", "hello", "n1", "-q", "most")
    assert code == 3 and "Invalid Format please enter integer or percent" in err
    code, _, err = run("job", "start", "hello", "n1", "--timeout", "1.5")
    assert code == 3 and "--timeout" in err
    code, _, err = run("job", "start", "hello", "n1", "--file", "/nonexistent/f")
    assert code == 3 and "/nonexistent/f not found" in err
    code, _, err = run("job", "start", "hello", "n1", "-s", "name:x")
    assert code == 3 and "--search needs chef_server_url" in err
    assert peer.requests == []


def test_server_error_is_reported(run, peer: Peer) -> None:
    peer.errors["POST jobs"] = httpx.Response(400, json={"error": "invalid key supplied"})
    code, _, err = run("job", "start", "hello", "n1")
    assert code == 3
    assert err == (
        "ERROR: 400 Bad Request: invalid key supplied (the server rejected a job option; "
        "is it a Chef Push Jobs 1.x server?)\n"
    )
    assert run("job", "start", "hello", "n1", "--knife-compatible-exit")[0] == 100
    peer.errors["POST jobs"] = httpx.Response(
        403,
        json={
            "error": ["User or client 'alice' does not have access to that action on this server."]
        },
    )
    code, _, err = run("job", "start", "hello", "n1")
    assert err == (
        "ERROR: 403 Forbidden: User or client 'alice' does not have access to that action "
        "on this server.\n"
    )


def test_show_output_failed(run, peer: Peer) -> None:
    peer.final = job_object("complete", {"succeeded": ["a"], "failed": ["c", "b"]})
    peer.outputs = {("b", "stdout"): b"out-b", ("b", "stderr"): b"err-b\n"}
    peer.node_rows = [{"node_name": "b", "exit_status": 2}, {"node_name": "c", "exit_status": None}]
    code, out, _ = run("job", "start", "hello", "a", "b", "c", "--show-output", "failed")
    assert code == 1
    assert peer.posted[0]["capture_output"] is True  # implied
    tail = out.split("3 nodes: 1 succeeded, 2 failed\n", 1)[1]
    assert tail == (
        "==> b stdout (failed, exit 2) <==\nout-b\n==> b stderr <==\nerr-b\n"
        "==> c stdout (failed) <==\n(no output captured)\n"
    )
    code, out, _ = run("--json", "job", "start", "hello", "a", "--show-output", "all")
    doc = json.loads(out)
    assert doc["job"] == peer.final
    assert doc["output"] == {
        "a": {"stdout": None, "stderr": None},
        "b": {"stdout": "out-b", "stderr": "err-b\n"},
        "c": {"stdout": None, "stderr": None},
    }


def test_job_watch_finished_job_printed_at_once(run, peer: Peer) -> None:
    code, out, _ = run("job", "watch", JOB_ID)
    assert code == 0 and out.startswith(f"id:          {JOB_ID}\n")
    assert [r.url.path.rsplit("/", 1)[-1] for r in peer.requests] == [JOB_ID]


def test_job_watch_unknown_job(run, peer: Peer) -> None:
    peer.errors[f"GET jobs/{JOB_ID}"] = httpx.Response(
        404, json={"error": [f"job '{JOB_ID}' not found"]}
    )
    code, _, err = run("job", "watch", JOB_ID)
    assert code == 3 and err == f"ERROR: 404 Not Found: job '{JOB_ID}' not found\n"


def test_job_list(run, peer: Peer) -> None:
    code, out, _ = run("job", "list", "--status", "complete,running", "--limit", "5")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["ID", "STATUS", "COMMAND", "CREATED", "RUN_TIMEOUT"]
    assert row.split()[:3] == [JOB_ID, "complete", "hello"]
    assert peer.requests[0].url.params["status"] == "complete,running"
    code, out, _ = run("job", "list", "--json")
    assert json.loads(out)[0]["id"] == JOB_ID


def test_job_status_with_nodes(run, peer: Peer) -> None:
    peer.node_rows = [
        {
            "node_name": "n1",
            "status": "succeeded",
            "exit_status": 0,
            "signal": None,
            "started_at": DATE,
            "finished_at": DATE,
            "stdout_bytes": 5,
            "stderr_bytes": 0,
            "truncated": False,
        }
    ]
    code, out, _ = run("job", "status", JOB_ID, "--nodes", "--include-file")
    assert code == 0
    assert peer.requests[0].url.params["include_file"] == "true"
    assert "NODE" in out and "TRUNCATED" in out and "\nn1 " in out
    code, out, _ = run("job", "status", JOB_ID, "--nodes", "--json")
    assert json.loads(out) == {"job": peer.final, "nodes": peer.node_rows}
    peer.final = job_object("complete", {"failed": ["n1"]})
    assert run("job", "status", JOB_ID)[0] == 0  # the job's outcome does not matter


def test_job_output(run, peer: Peer) -> None:
    peer.outputs = {("n1", "stdout"): b"line1\nno newline", ("n1", "stderr"): b"e\n"}
    code, out, _ = run("job", "output", JOB_ID, "n1")
    assert (code, out) == (0, "line1\nno newline")
    assert peer.requests[0].headers["accept"] == "application/octet-stream"
    code, out, err = run("job", "output", JOB_ID, "n1", "n2", "--channel", "both")
    assert code == 3
    assert out == "==> n1 stdout <==\nline1\nno newline\n==> n1 stderr <==\ne\n"
    assert err == (
        "no output for n2: the job did not capture output, the node did not run the command, "
        "or nothing has arrived yet\n"
    )
    code, _, err = run("job", "output", JOB_ID, "n1", "--channel", "all")
    assert code == 3 and "Invalid Format please enter stdout, stderr or both" in err


def test_job_abort(run, peer: Peer) -> None:
    code, out, _ = run("job", "abort", JOB_ID)
    assert code == 0 and out.startswith(f"Aborted.  Job ID: {JOB_ID}\nid:")
    assert peer.requests[-1].content == b""
    peer.errors[f"POST jobs/{JOB_ID}/abort"] = httpx.Response(
        409, json={"error": [f"job '{JOB_ID}' has already finished with status 'complete'"]}
    )
    code, _, err = run("job", "abort", JOB_ID)
    assert code == 3 and err == f"ERROR: job {JOB_ID} has already finished with status complete\n"


def test_node_status(run, peer: Peer) -> None:
    code, out, _ = run("node", "status")
    assert (code, out) == (0, "a\tavailable\nb\tunavailable\n")
    code, out, _ = run("node", "status", "-l")
    assert out == "a\tavailable\tonline\nb\tunavailable\tonline\n"
    code, out, _ = run("node", "status", "x", "y", "--long")
    assert out == "x\tunavailable\toffline\ny\tunavailable\toffline\n"
    code, out, _ = run("node", "status", "x", "--json")
    assert json.loads(out) == [
        {"node_name": "x", "status": "offline", "availability": "unavailable"}
    ]


def test_global_options_after_subcommand(run, peer: Peer) -> None:
    code, out, _ = run("node", "status", "--json", "--server-url", BASE)
    assert code == 0 and json.loads(out)[0]["node_name"] == "a"


def test_missing_settings(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUSHJOBS_USER")
    code, _, err = run("node", "status")
    assert code == 3 and "missing setting 'user'" in err and "config.toml" in err


def test_no_command_and_version(run, capsys) -> None:
    code, _, err = run()
    assert code == 3 and "missing a command" in err
    with pytest.raises(SystemExit) as e:
        cli_main.run(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("pushjobs ")


def test_top_level_help_says_where_settings_come_from(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli_main.run(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for needle in ("~/.config/pushjobs/config.toml", "$PUSHJOBS_SERVER_URL", "/organizations/ORG"):
        assert needle in out
    assert "2 quorum failed" in out and "130 interrupted" in out


def test_job_output_follow(run, peer: Peer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pushjobs.cli.commands.output.time.sleep", lambda s: None)
    peer.outputs = {
        ("n1", "stdout"): b"alpha\nbeta\ngamma",
        ("n1", "stderr"): b"oops\n",
        # 4-byte chunks split the two-byte character: that chunk travels as base64
        ("n2", "stdout"): "abcü\n".encode(),
    }
    code, out, _ = run("job", "output", JOB_ID, "n1", "--follow")
    assert (code, out) == (0, "alpha\nbeta\ngamma")  # one stream: bytes unchanged
    code, out, err = run("job", "output", JOB_ID, "n1", "n2", "n3", "--follow", "--channel", "both")
    assert code == 3
    assert sorted(out.splitlines()) == [
        "n1 [stderr]: oops",
        "n1: alpha",
        "n1: beta",
        "n1: gamma",
        "n2: abcü",
    ]
    assert out.index("n1: alpha") < out.index("n1: beta") < out.index("n1: gamma")
    assert err == (
        "no output for n3: the job did not capture output, the node did not run the command, "
        "or nothing has arrived yet\n"
    )


def test_nodes_after_options_and_nodes_file(run, peer: Peer, tmp_path: Path) -> None:
    f = tmp_path / "nodes.txt"
    f.write_text("# fleet\nc\na\n\n")
    code, _, err = run("job", "start", "hello", "a", "--capture", "b", "--nodes-file", str(f))
    assert code == 0, err
    assert peer.posted[0]["nodes"] == ["a", "b", "c"]
    code, _, err = run("job", "start", "hello", "a", "--bogus")
    assert code == 3 and "unrecognized arguments: --bogus" in err


def test_search_for_nodes(run, peer: Peer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "pj.toml"
    cfg.write_text('[default]\nchef_server_url = "http://push.test/organizations/acme"\n')
    monkeypatch.setenv("PUSHJOBS_CONFIG", str(cfg))
    peer.search_hits = ["w1", "w2", "w3", "w1"]
    code, _, err = run("job", "start", "hello", "ignored", "-s", "role:web", "-q", "50%")
    assert code == 0, err
    assert "WARNING: --search given: node arguments and --nodes-file are ignored" in err
    assert peer.posted[0]["nodes"] == ["w1", "w2", "w3"]  # all pages, duplicates removed
    assert peer.posted[0]["quorum"] == 2
    code, out, _ = run("node", "status", "role:web", "extra")
    assert out.splitlines() == [f"{n}\tunavailable" for n in ("w1", "w2", "w3", "extra")]


# ---------------------------------------------------------------- rollouts (issue 10)


def piece(node: str, channel: str, offset: int, text: str) -> tuple[str, dict, str]:
    data = {"timestamp": "t", "node": node, "channel": channel, "offset": offset,
            "encoding": "text", "data": text}  # fmt: skip
    return "output", data, f"{node}:{channel}:{offset + len(text.encode())}"


def chan_end(node: str, channel: str) -> tuple[str, dict, str]:
    data = {"timestamp": "t", "node": node, "channel": channel, "status": "succeeded",
            "exit_status": 0, "signal": None, "bytes": 1, "omitted_bytes": 0}  # fmt: skip
    return "end", data, f"{node}:{channel}:end"


def feed_complete(status: str = "complete") -> tuple[str, dict, str]:
    return "job_complete", {"timestamp": "t", "status": status}, "job_complete"


# the first connection drops after two pieces; the second replays from the store: web1's
# stdout whole from offset 0 (overlapping what was held), web2's stderr again
DROPPED_FEEDS = [
    [piece("web1", "stdout", 0, "hello wo"), piece("web2", "stderr", 0, "oops\n")],
    [
        piece("web1", "stdout", 0, "hello world\nbye"),
        chan_end("web1", "stdout"),
        piece("web2", "stderr", 0, "oops\n"),
        chan_end("web2", "stderr"),
        feed_complete(),
    ],
]
TWO_NODE_EVENTS = [
    ("start", {"node_count": 2}),
    ("quorum_vote", {"node": "web1", "status": "success"}),
    ("quorum_vote", {"node": "web2", "status": "success"}),
    ("quorum_succeeded", {}),
    ("run_start", {"node": "web1"}),
    ("run_start", {"node": "web2"}),
    ("run_complete", {"node": "web1", "status": "success"}),
    ("run_complete", {"node": "web2", "status": "success"}),
    ("job_complete", {"status": "complete"}),
]


@pytest.fixture
def no_reopen_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pushjobs.cli.reopen.REOPEN_DELAY", 0.0)


def test_job_start_limits_are_sent_as_given(run, peer: Peer) -> None:
    code, _, err = run(
        "job", "start", "hello", "a", "b", "--max-concurrency", "10%", "--max-errors", "0"
    )
    assert code == 0, err
    assert peer.posted[0]["max_concurrency"] == "10%"
    assert peer.posted[0]["max_errors"] == 0
    run("job", "start", "hello", "a", "--max-concurrency", "3")
    assert peer.posted[1]["max_concurrency"] == 3 and "max_errors" not in peer.posted[1]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-concurrency", "0"),
        ("--max-concurrency", "101%"),
        ("--max-concurrency", "x"),
        ("--max-errors", "-1"),
        ("--max-errors", "10.5%"),
        ("--max-errors", "1.5"),
    ],
)
def test_job_start_invalid_limits_are_usage_errors(
    run, peer: Peer, option: str, value: str
) -> None:
    code, _, err = run("job", "start", "hello", "a", f"{option}={value}")
    assert code == 3
    assert err.startswith(f"ERROR: {option} must be an integer >= ")
    assert f"not '{value}'" in err
    assert peer.requests == []  # checked before any request


def test_stopped_job_prints_skipped_nodes_and_exits_1(run, peer: Peer) -> None:
    peer.final = job_object(
        "stopped",
        {"failed": ["a"], "skipped": ["b", "c"]},
        requested_by="alice",
        max_concurrency=1,
        max_errors=0,
    )
    peer.events = [
        ("start", {"node_count": 3, "max_concurrency": 1, "max_errors": 0}),
        *[("quorum_vote", {"node": n, "status": "success"}) for n in "abc"],
        ("quorum_succeeded", {}),
        ("run_start", {"node": "a"}),
        ("run_complete", {"node": "a", "status": "failure"}),
        ("budget_exhausted", {"errors": 1, "max_errors": 0}),
        ("run_skipped", {"node": "b"}),
        ("run_skipped", {"node": "c"}),
        ("job_complete", {"status": "stopped"}),
    ]
    code, out, err = run(
        "job", "start", "hello", "a", "b", "c", "--max-concurrency", "1", "--max-errors", "0"
    )
    assert code == 1, err
    lines = out.splitlines()
    assert "Running (3/3 in progress) ... running 1/3 (limit 1) · failed 0 of 0 allowed" in lines
    assert "Stopped." in lines
    assert "  skipped: b" in lines and "           c" in lines
    assert lines[-2:] == [
        "3 nodes: 1 failed, 2 skipped",
        "Stopped: 1 node failed, 0 allowed (max_errors 0); 2 nodes skipped: b, c",
    ]
    assert run("job", "start", "hello", "a", "--knife-compatible-exit")[0] == 1
    code, out, _ = run("job", "status", JOB_ID)
    assert code == 0 and out.splitlines()[-1].startswith("Stopped: 1 node failed")


def test_job_start_stream_prefixes_lines_and_keeps_progress_on_stderr(
    run, peer: Peer, no_reopen_delay: None
) -> None:
    peer.events = TWO_NODE_EVENTS
    peer.final = job_object("complete", {"succeeded": ["web1", "web2"]}, capture_output=True)
    peer.output_feeds = list(DROPPED_FEEDS)
    code, out, err = run("job", "start", "hello", "web1", "web2", "--stream")
    assert code == 0, err
    assert peer.posted[0]["capture_output"] is True  # implied
    # every line once, whole, prefixed; a partial line waits for its newline or its end
    assert out.splitlines()[:4] == [
        "web2 [stderr]: oops",
        "web1: hello world",
        "web1: bye",
        f"id:             {JOB_ID}",
    ]
    assert out.splitlines()[-1] == "2 nodes: 2 succeeded"
    assert f"Started.  Job ID: {JOB_ID}\nVoting.\n" in err and "Complete." in err
    # the reopened feed resumed after the last event id seen
    assert peer.feed_last_ids == [None, "web2:stderr:5"]


def test_job_start_stream_json_lines(run, peer: Peer, no_reopen_delay: None) -> None:
    peer.events = TWO_NODE_EVENTS
    peer.final = job_object("complete", {"succeeded": ["web1", "web2"]}, capture_output=True)
    peer.output_feeds = list(DROPPED_FEEDS)
    code, out, err = run("--json", "job", "start", "hello", "web1", "web2", "--stream")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["event"] for r in records] == [
        "output", "output", "output", "end", "end", "job_complete", "job",
    ]  # fmt: skip
    assert records[0] == {"event": "output", **DROPPED_FEEDS[0][0][1]}
    # the replayed piece is trimmed to the bytes not yet held
    assert records[2] == {"event": "output", **DROPPED_FEEDS[1][0][1], "offset": 8,
                          "data": "rld\nbye"}  # fmt: skip
    assert records[-1] == {"event": "job", **peer.final}
    assert "Started." not in out + err


def test_stream_option_conflicts(run, peer: Peer) -> None:
    for option in ("--nowait", "--events", "--show-output=all"):
        code, _, err = run("job", "start", "hello", "a", "--stream", option)
        assert code == 3 and err == f"ERROR: --stream cannot be used with {option.split('=')[0]}\n"
    code, _, err = run("job", "watch", JOB_ID, "--stream", "--events")
    assert code == 3 and "--stream cannot be used with --events" in err
    assert peer.requests == []


def test_stream_feed_failure_is_a_warning(run, peer: Peer) -> None:
    peer.events = TWO_NODE_EVENTS
    peer.final = job_object("complete", {"succeeded": ["web1", "web2"]})
    code, out, err = run("job", "start", "hello", "web1", "web2", "--stream")
    assert code == 0
    assert f"WARNING: no live output for job {JOB_ID}: no output for job '{JOB_ID}'" in err
    assert out.splitlines()[0] == f"id:          {JOB_ID}"


def test_job_watch_stream_running_and_finished(run, peer: Peer, no_reopen_delay: None) -> None:
    peer.job_answers = [job_object("running", {"running": ["web1", "web2"]}, capture_output=True)]
    peer.events = TWO_NODE_EVENTS[4:]
    peer.final = job_object("complete", {"succeeded": ["web1", "web2"]}, capture_output=True)
    peer.output_feeds = list(DROPPED_FEEDS)
    code, out, err = run("job", "watch", JOB_ID, "--stream")
    assert code == 0, err
    assert out.splitlines()[:3] == ["web2 [stderr]: oops", "web1: hello world", "web1: bye"]
    assert "Complete." in err
    # a finished job: the feed replays the stored output, then the job is printed
    peer.output_feeds = [DROPPED_FEEDS[1]]
    code, out, err = run("job", "watch", JOB_ID, "--stream")
    assert code == 0, err
    assert out.splitlines()[:3] == ["web1: hello world", "web1: bye", "web2 [stderr]: oops"]
    assert out.splitlines()[3] == f"id:             {JOB_ID}"
    # a job without capture_output has nothing to stream
    peer.final = job_object("complete", {"succeeded": ["web1"]})
    before = len(peer.feed_last_ids)
    code, out, err = run("job", "watch", JOB_ID, "--stream")
    assert code == 0
    assert err == f"WARNING: job {JOB_ID} does not capture output: --stream has nothing to show\n"
    assert len(peer.feed_last_ids) == before


def test_job_output_all_follow(run, peer: Peer, no_reopen_delay: None) -> None:
    peer.output_feeds = list(DROPPED_FEEDS)
    code, out, err = run("job", "output", JOB_ID, "--all", "--follow")
    assert code == 0, err
    assert out == "web2 [stderr]: oops\nweb1: hello world\nweb1: bye\n"
    peer.output_feeds = [DROPPED_FEEDS[1]]
    code, out, _ = run("job", "output", JOB_ID, "--all", "--follow", "--channel", "stderr")
    assert (code, out) == (0, "web2 [stderr]: oops\n")
    peer.output_feeds = [DROPPED_FEEDS[1]]
    code, out, _ = run("job", "output", JOB_ID, "--all", "--follow", "--json")
    assert [json.loads(line)["event"] for line in out.splitlines()] == [
        "output", "end", "output", "end", "job_complete",
    ]  # fmt: skip
    code, out, err = run("job", "output", JOB_ID, "--all", "--follow")
    assert (code, out) == (3, "")
    assert err == f"ERROR: 404 Not Found: no output for job '{JOB_ID}'\n"


def test_job_output_all_stored_and_usage(run, peer: Peer) -> None:
    peer.final = job_object("complete", {"succeeded": ["n2", "n1"], "nacked": ["n3"]})
    peer.outputs = {("n1", "stdout"): b"one", ("n1", "stderr"): b"", ("n2", "stdout"): b"two\n"}
    code, out, _ = run("job", "output", JOB_ID, "--all")
    assert code == 0
    assert out == (
        "==> n1 stdout <==\none\n==> n1 stderr <==\n==> n2 stdout <==\ntwo\n"
    )  # n2 has no stderr record here; n3 never ran
    peer.outputs = {}
    code, out, err = run("job", "output", JOB_ID, "--all")
    assert (code, out) == (3, "")
    assert err.startswith(f"no output for job {JOB_ID}:")
    code, _, err = run("job", "output", JOB_ID)
    assert code == 3 and err.startswith("ERROR: name at least one node, or use --all\nusage:")
    code, _, err = run("job", "output", JOB_ID, "n1", "--all")
    assert code == 3 and err == "ERROR: --all cannot be used with node names\n"


def test_job_list_filters_and_the_next_page_hint(run, peer: Peer) -> None:
    next_url = f"{BASE}/pushy/jobs?node=a&node=b&limit=50&offset=50"
    peer.list_headers = {"Link": f'<{next_url}>; rel="next"'}
    code, out, err = run(
        "job", "list", "--node", "a", "--node", "b", "--requested-by", "alice",
        "--since", "2h", "--until", "2026-12-01", "--command", "chef-client", "--status", "stopped",
    )  # fmt: skip
    assert code == 0
    params = peer.requests[-1].url.params
    assert params.get_list("node") == ["a", "b"]
    assert params["requested_by"] == "alice" and params["command"] == "chef-client"
    assert params["status"] == "stopped" and params["until"] == "2026-12-01"
    assert params["limit"] == "50"  # the default
    assert "offset" not in params
    since = datetime.strptime(params["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - since) - timedelta(hours=2)) < timedelta(minutes=1)
    assert err == "more jobs exist: use --offset 50 for the next page, or a larger --limit\n"
    assert out.splitlines()[1].startswith(JOB_ID)
    code, out, err = run("job", "list", "--json", "--limit", "0", "--offset", "5")
    assert json.loads(out)[0]["id"] == JOB_ID and err.startswith("more jobs exist")
    assert "limit" not in peer.requests[-1].url.params
    assert peer.requests[-1].url.params["offset"] == "5"
    peer.list_headers = {}
    code, _, err = run("job", "list")
    assert (code, err) == (0, "")
    code, _, err = run("job", "list", "--limit", "-1")
    assert code == 3 and "--limit must be 0 (all jobs) or more" in err


def test_job_status_shows_audit_and_limits(run, peer: Peer) -> None:
    peer.final = job_object(
        "aborted",
        {"aborted": ["n1"]},
        requested_by="alice",
        aborted_by="bob",
        max_concurrency="10%",
        max_errors=2,
    )
    code, out, _ = run("job", "status", JOB_ID)
    assert code == 0
    lines = out.splitlines()
    assert "requested_by:    alice" in lines and "aborted_by:      bob" in lines
    assert "max_concurrency: 10%" in lines and "max_errors:      2" in lines

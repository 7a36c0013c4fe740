"""POST org/jobs body validation (http-api.md §7.4): every text and the order of checks."""

from __future__ import annotations

import base64
import json

import pytest

from pushjobs.server.jobs.validation import JobValidationError, validate_job_body
from pushjobs.server.store.records import JobSpec

UNKNOWN = "an unknown validation error has occurred"
CMD = "invalid command supplied"
NODES = "at least one node must be supplied"
RT = "invalid type supplied for run_timeout (expected a number)"
QUORUM = "invalid type supplied for quorum (expected a number)"
CAPTURE = "invalid type supplied for capture_output (expected a boolean)"
KEY = "invalid key supplied"
DUP = "invalid environment value (duplicate key)"
PREFIX = "invalid file contents (expected 'base64:...' or 'raw:...')"
B64 = "invalid file contents (couldn't decode base64 string)"
SIZE = "invalid file size (must be <= 100000 bytes)"


def error_of(body) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(JobValidationError) as info:
        validate_job_body(raw, 3600)
    return info.value.message


def ok(body) -> JobSpec:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return validate_job_body(raw, 3600)


BASE = {"command": "uptime", "nodes": ["a"]}


def with_(**kw):
    body = dict(BASE)
    body.update(kw)
    return body


def test_minimal_body_defaults():
    spec = ok(BASE)
    assert spec == JobSpec(
        command="uptime",
        nodes=["a"],
        quorum=1,
        run_timeout=3600,
        user=None,
        dir=None,
        env=None,
        file=None,
        capture=False,
    )


def test_full_body():
    spec = ok(
        {
            "command": "",
            "nodes": ["b", "a", "b", "c", "a"],
            "quorum": 2.0,
            "run_timeout": 0,
            "user": "",
            "dir": "/tmp",
            "env": {},
            "file": "raw:",
            "capture_output": True,
        }
    )
    assert spec.command == ""
    assert spec.nodes == ["b", "a", "c"]
    assert spec.quorum == 2 and isinstance(spec.quorum, int)
    assert spec.run_timeout == 0
    assert spec.user == "" and spec.dir == "/tmp" and spec.env == {} and spec.file == "raw:"
    assert spec.capture is True


def test_default_quorum_counts_distinct_nodes():
    assert ok(with_(nodes=["a", "a", "b"])).quorum == 2


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1,2]", b'"x"', b"null", b"\xff\xfe", b'{"command": NaN}', b"{,}"],
)
def test_not_an_object(raw):
    assert error_of(raw) == UNKNOWN


def test_lone_surrogate_is_not_valid_unicode():
    assert error_of(b'{"command":"\\ud800","nodes":["a"]}') == UNKNOWN


@pytest.mark.parametrize("command", [None, 1, [], {}, True])
def test_bad_command(command):
    assert error_of(with_(command=command)) == CMD


def test_missing_command():
    assert error_of({"nodes": ["a"]}) == CMD


@pytest.mark.parametrize("nodes", [None, "a", {"a": 1}, ["a", 1], [None], 3])
def test_bad_nodes(nodes):
    assert error_of(with_(nodes=nodes)) == NODES


def test_missing_nodes():
    assert error_of({"command": "x"}) == NODES


def test_empty_nodes_after_key_check():
    assert error_of(with_(nodes=[])) == NODES
    # invalid key is checked before the empty node list
    assert error_of(with_(nodes=[], bogus=1)) == KEY


@pytest.mark.parametrize("value", [None, -1, 1.5, "5", True, False, 2_147_483_648, 1e300, [], {}])
def test_bad_run_timeout(value):
    assert error_of(with_(run_timeout=value)) == RT


@pytest.mark.parametrize("value", [None, -1, 0.5, "5", True, False, 2_147_483_648, [], {}])
def test_bad_quorum(value):
    assert error_of(with_(quorum=value)) == QUORUM


@pytest.mark.parametrize("value", [0, 2_147_483_647, 7.0])
def test_integer_bounds_accepted(value):
    spec = ok(with_(quorum=value, run_timeout=value))
    assert spec.quorum == int(value) and spec.run_timeout == int(value)


def test_huge_exponent_number_refused():
    assert error_of(b'{"command":"x","nodes":["a"],"quorum":1e400}') == QUORUM


@pytest.mark.parametrize("key", ["user", "dir", "file"])
@pytest.mark.parametrize("value", [None, 1, [], {}, True])
def test_bad_string_options(key, value):
    assert error_of(with_(**{key: value})) == UNKNOWN


@pytest.mark.parametrize("env", [None, [], "x", 1, {"A": 1}, {"A": None}, {"A": ["x"]}])
def test_bad_env(env):
    assert error_of(with_(env=env)) == UNKNOWN


@pytest.mark.parametrize("value", [None, 1, 0, "true", [], {}])
def test_bad_capture(value):
    assert error_of(with_(capture_output=value)) == CAPTURE


def test_unknown_key():
    assert error_of(with_(bogus=1)) == KEY


def test_duplicate_env_key():
    raw = b'{"command":"x","nodes":["a"],"env":{"A":"1","A":"2"}}'
    assert error_of(raw) == DUP


def test_duplicate_top_level_key_last_wins():
    raw = b'{"command":"x","nodes":["a"],"command":"y"}'
    assert ok(raw).command == "y"


def test_nested_duplicates_outside_env_are_fine():
    raw = b'{"command":"x","nodes":["a"],"nodes":["b"],"env":{"A":"1","B":"2"}}'
    spec = ok(raw)
    assert spec.nodes == ["b"] and spec.env == {"A": "1", "B": "2"}


@pytest.mark.parametrize("file", ["", "plain", "RAW:x", "base64", "b64:eA=="])
def test_file_prefix(file):
    assert error_of(with_(file=file)) == PREFIX


@pytest.mark.parametrize("payload", ["!!!", "eA=", "eA", "e A==", "eA==\n", "ü"])
def test_file_base64_strict(payload):
    assert error_of(with_(file="base64:" + payload)) == B64


def test_file_size_limits():
    assert ok(with_(file="raw:" + "x" * 100_000)).file == "raw:" + "x" * 100_000
    assert error_of(with_(file="raw:" + "x" * 100_001)) == SIZE
    # UTF-8 bytes count: 50,001 two-byte characters
    assert error_of(with_(file="raw:" + "é" * 50_001)) == SIZE
    exact = base64.b64encode(b"\0" * 100_000).decode()
    assert ok(with_(file="base64:" + exact)).file == "base64:" + exact
    over = base64.b64encode(b"\0" * 100_001).decode()
    assert error_of(with_(file="base64:" + over)) == SIZE
    assert ok(with_(file="base64:")).file == "base64:"


# ---- order of checks ---------------------------------------------------------------

ORDER_CASES = [
    # earlier failure wins over every later one
    ({"command": 1, "nodes": 1, "quorum": "x"}, CMD),
    ({"command": "x", "nodes": 1, "run_timeout": "x"}, NODES),
    ({"command": "x", "nodes": ["a"], "run_timeout": "x", "quorum": "x"}, RT),
    ({"command": "x", "nodes": ["a"], "quorum": "x", "user": 1}, QUORUM),
    ({"command": "x", "nodes": ["a"], "user": 1, "capture_output": 1}, UNKNOWN),
    ({"command": "x", "nodes": ["a"], "env": 1, "capture_output": 1}, UNKNOWN),
    ({"command": "x", "nodes": ["a"], "file": 1, "capture_output": 1}, UNKNOWN),
    ({"command": "x", "nodes": ["a"], "capture_output": 1, "bogus": 1}, CAPTURE),
    ({"command": "x", "nodes": [], "capture_output": 1}, CAPTURE),
    ({"command": "x", "nodes": [], "file": "nope"}, NODES),
    ({"bogus": 1, "command": 1}, CMD),
    ({"command": "x", "nodes": ["a"], "bogus": 1, "file": "nope"}, KEY),
]


@pytest.mark.parametrize(("body", "message"), ORDER_CASES)
def test_order(body, message):
    assert error_of(body) == message


def test_duplicate_env_before_file():
    raw = b'{"command":"x","nodes":["a"],"env":{"A":"1","A":"2"},"file":"nope"}'
    assert error_of(raw) == DUP


def test_file_prefix_before_size_and_env_type_before_key():
    raw = b'{"command":"x","nodes":["a"],"env":{"A":1},"bogus":1}'
    assert error_of(raw) == UNKNOWN


def test_non_ascii_round_trip():
    spec = ok({"command": "echo ✓", "nodes": ["nœud"], "env": {"K": "välue"}})
    assert spec.command == "echo ✓" and spec.nodes == ["nœud"] and spec.env == {"K": "välue"}


# ---- max_concurrency / max_errors (extension, lifecycle.md §12) -----------------------------

MAXC = "invalid max_concurrency (expected an integer >= 1 or a percentage)"
MAXE = "invalid max_errors (expected an integer >= 0 or a percentage)"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_concurrency", 1),
        ("max_concurrency", 2147483647),
        ("max_concurrency", "1%"),
        ("max_concurrency", "100%"),
        ("max_errors", 0),
        ("max_errors", "0%"),
        ("max_errors", "100%"),
        ("max_errors", 7),
    ],
)
def test_limits_accepted_as_given(key, value):
    spec = ok({**BASE, key: value})
    assert getattr(spec, key) == value


def test_limits_absent_are_none():
    spec = ok(BASE)
    assert spec.max_concurrency is None and spec.max_errors is None


@pytest.mark.parametrize(
    "value", [0, -1, 1.5, "0%", "101%", "10", "10.5%", " 10%", "%", "1000%", None, True, [], {}]
)
def test_bad_max_concurrency(value):
    assert error_of({**BASE, "max_concurrency": value}) == MAXC


@pytest.mark.parametrize("value", [-1, 0.5, "101%", "5", "-1%", "", None, False, 2147483648])
def test_bad_max_errors(value):
    assert error_of({**BASE, "max_errors": value}) == MAXE


def test_integral_float_limit_is_an_integer():
    assert ok({**BASE, "max_concurrency": 2.0}).max_concurrency == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**BASE, "capture_output": 1, "max_concurrency": 0}, CAPTURE),
        ({**BASE, "max_concurrency": 0, "max_errors": -1}, MAXC),
        ({**BASE, "max_errors": -1, "bogus": 1}, MAXE),
        ({"command": "x", "nodes": [], "max_errors": -1}, MAXE),
        ({**BASE, "max_concurrency": 0, "file": "nope"}, MAXC),
    ],
)
def test_limits_are_checked_after_capture_and_before_keys(body, message):
    assert error_of(body) == message


# -- Extension: selector (http-api.md §7.4) ----------------------------------------------------


def test_selector_instead_of_nodes():
    spec = ok({"command": "uptime", "selector": "role=web"})
    assert spec.selector == "role=web" and spec.nodes == [] and not spec.quorum_given


def test_selector_besides_nodes_and_its_resolution():
    spec = ok({"command": "uptime", "nodes": ["b", "a"], "selector": "role=web"})
    resolved = spec.with_matches(["a", "c", "d"])
    assert resolved.nodes == ["b", "a", "c", "d"] and resolved.quorum == 4
    assert resolved.selector is None
    given = ok({"command": "uptime", "selector": "role=web", "quorum": 1})
    assert given.with_matches(["a", "b"]).quorum == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"command": "uptime", "selector": 5}, "invalid selector (expected a string)"),
        ({"command": "uptime", "selector": None}, "invalid selector (expected a string)"),
        ({"command": "uptime", "selector": "Role=web"}, "invalid selector 'Role=web': label key"),
        ({"command": "uptime", "selector": ""}, "invalid selector '': it is empty"),
        # order: the type checks first, unknown keys next, then the selector's syntax
        ({"command": 1, "selector": "role="}, "invalid command supplied"),
        ({"command": "uptime", "selector": "(", "bogus": 1}, "invalid key supplied"),
        ({"command": "uptime", "selector": 5, "bogus": 1}, "invalid selector (expected a string)"),
        ({"command": "uptime"}, "at least one node must be supplied"),
        (
            {"command": "uptime", "nodes": "a", "selector": "r"},
            "at least one node must be supplied",
        ),
    ],
)
def test_selector_errors(body, message):
    assert error_of(body).startswith(message)

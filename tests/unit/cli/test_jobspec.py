"""Job body building for `pushjobs job start` (cli.md §3.1–§3.4): quorum, file, env, nodes."""

import base64
import io
from pathlib import Path

import pytest

from pushjobs.cli.errors import UsageError
from pushjobs.cli.jobspec import (
    ENV_ERROR,
    QUORUM_ERROR,
    build_job_body,
    encode_file_content,
    parse_env,
    parse_limit,
    parse_node_lines,
    parse_quorum,
    read_job_file,
    read_nodes_file,
    resolve_concurrency,
    resolve_errors,
    unique,
)


@pytest.mark.parametrize(
    ("text", "nodes", "expected"),
    [
        ("3", 10, 3),
        ("0", 10, 0),
        ("25", 10, 25),  # not range-checked
        ("100%", 7, 7),
        ("50%", 3, 2),  # ceil(1.5)
        ("95%", 400, 380),  # exact arithmetic: no float rounding up to 381
        ("95%", 401, 381),
        ("33.3%", 3, 1),
        ("0%", 5, 0),
        ("1%", 1, 1),
        (".5%", 1000, 5),
        ("150%", 2, 3),
    ],
)
def test_quorum_rule(text: str, nodes: int, expected: int) -> None:
    assert parse_quorum(text, nodes) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.5", "%", "50 %", "5%%", "1e2%", "x%"])
def test_quorum_invalid(text: str) -> None:
    with pytest.raises(UsageError, match=QUORUM_ERROR):
        parse_quorum(text, 10)


def test_file_utf8_is_raw() -> None:
    assert encode_file_content("héllo\n".encode()) == "raw:héllo\n"
    assert encode_file_content(b"") == "raw:"


def test_file_binary_is_base64() -> None:
    data = b"\x00\xff\xfe binary"
    assert encode_file_content(data) == "base64:" + base64.b64encode(data).decode()


def test_file_size_limit(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    ok.write_bytes(b"a" * 100_000)
    assert read_job_file(str(ok)) == "raw:" + "a" * 100_000
    big = tmp_path / "big"
    big.write_bytes(b"a" * 100_001)
    with pytest.raises(UsageError, match="too large"):
        read_job_file(str(big))


def test_file_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.txt")
    with pytest.raises(UsageError) as e:
        read_job_file(path)
    assert e.value.message == f"{path} not found"


def test_env_valid() -> None:
    assert parse_env('{"FOO": "bar", "X": ""}') == {"FOO": "bar", "X": ""}
    assert parse_env("{}") == {}


@pytest.mark.parametrize(
    "text",
    ["", "nope", "[]", '"s"', "1", '{"A": 1}', '{"A": null}', '{"A": ["x"]}', '{"A":"1","A":"2"}'],
)
def test_env_invalid(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_env(text)
    assert e.value.message == ENV_ERROR


def test_node_lines() -> None:
    text = "web1\n\n# comment\n  web2  \nweb3 # trailing comment\r\n#web4\nweb1\n"
    assert parse_node_lines(text) == ["web1", "web2", "web3", "web1"]


def test_nodes_file_and_stdin(tmp_path: Path) -> None:
    f = tmp_path / "nodes"
    f.write_text("a\nb\n")
    assert read_nodes_file(str(f), io.StringIO("")) == ["a", "b"]
    assert read_nodes_file("-", io.StringIO("c\n# x\nd\n")) == ["c", "d"]
    with pytest.raises(UsageError, match="not found"):
        read_nodes_file(str(tmp_path / "missing"), io.StringIO(""))


def test_unique_keeps_first_occurrence() -> None:
    assert unique(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_body_minimal_keys() -> None:
    body = build_job_body(command="hello", nodes=["n1"], quorum=1, capture=False, env={})
    assert body == {
        "command": "hello",
        "nodes": ["n1"],
        "quorum": 1,
        "capture_output": False,
        "env": {},
    }
    assert list(body) == ["command", "nodes", "quorum", "capture_output", "env"]


def test_body_all_options() -> None:
    body = build_job_body(
        command="c",
        nodes=["a", "b"],
        quorum=2,
        capture=True,
        env={"FOO": "bar"},
        run_timeout=0,
        file="raw:x",
        user="",
        dir="/tmp",
    )
    assert body["run_timeout"] == 0 and body["user"] == "" and body["dir"] == "/tmp"
    assert body["file"] == "raw:x" and body["capture_output"] is True


# ---------------------------------------------------------------- rollout limits (cli.md §3.7)


@pytest.mark.parametrize(
    ("option", "text", "expected"),
    [
        ("--max-concurrency", "1", 1),
        ("--max-concurrency", "10", 10),
        ("--max-concurrency", " 7 ", 7),
        ("--max-concurrency", "2147483647", 2147483647),
        ("--max-concurrency", "1%", "1%"),
        ("--max-concurrency", "100%", "100%"),
        ("--max-concurrency", "010%", "10%"),
        ("--max-errors", "0", 0),
        ("--max-errors", "5", 5),
        ("--max-errors", "0%", "0%"),
        ("--max-errors", "100%", "100%"),
    ],
)
def test_limits_valid(option: str, text: str, expected: object) -> None:
    assert parse_limit(text, option) == expected


@pytest.mark.parametrize(
    ("option", "text"),
    [
        ("--max-concurrency", "0"),
        ("--max-concurrency", "0%"),
        ("--max-concurrency", "101%"),
        ("--max-concurrency", "2147483648"),
        ("--max-errors", "-1"),
        ("--max-errors", "101%"),
        ("--max-errors", "10.5%"),
        ("--max-errors", "1.5"),
        ("--max-errors", "1000%"),
        ("--max-errors", "ten"),
        ("--max-errors", ""),
        ("--max-errors", "%"),
        ("--max-errors", "5 %"),
    ],
)
def test_limits_invalid_name_the_option(option: str, text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_limit(text, option)
    assert e.value.message.startswith(f"{option} must be an integer >= ")
    assert repr(text) in e.value.message


@pytest.mark.parametrize(
    ("value", "nodes", "limit", "budget"),
    [
        (3, 400, 3, 3),
        ("10%", 400, 40, 40),
        ("10%", 15, 2, 1),  # 1.5: concurrency rounds up, errors round down
        ("1%", 10, 1, 0),
        ("100%", 7, 7, 7),
        ("0%", 7, 1, 0),  # a limit is at least 1 (the server refuses 0% for it anyway)
        ("33%", 3, 1, 0),  # 0.99
        (None, 5, None, None),
        (True, 5, None, None),
        ("x%", 5, None, None),
    ],
)
def test_limits_resolved_as_the_server_does(
    value: object, nodes: int, limit: int | None, budget: int | None
) -> None:
    assert resolve_concurrency(value, nodes) == limit
    assert resolve_errors(value, nodes) == budget


def test_body_limits_only_when_given() -> None:
    body = build_job_body(
        command="c", nodes=["a"], quorum=1, capture=False, env={},
        max_concurrency="10%", max_errors=0,
    )  # fmt: skip
    assert body["max_concurrency"] == "10%" and body["max_errors"] == 0
    assert "max_errors" not in build_job_body(
        command="c", nodes=["a"], quorum=1, capture=False, env={}, max_concurrency=2
    )


# -- --where (cli.md §3.2) ----------------------------------------------------------------------


def test_where_options_join_into_one_selector():
    from pushjobs.cli.jobspec import where_selector

    assert where_selector(None) is None and where_selector([]) is None
    assert where_selector(["role=web", "dc in (fra1,fra2)"]) == "role=web,dc in (fra1,fra2)"


def test_a_bad_where_is_a_usage_error():
    from pushjobs.cli.errors import UsageError
    from pushjobs.cli.jobspec import where_selector

    with pytest.raises(UsageError, match="invalid selector 'Role=web': label key 'Role'"):
        where_selector(["Role=web"])


def test_quorum_with_where():
    from pushjobs.cli.errors import UsageError
    from pushjobs.cli.jobspec import WHERE_QUORUM, build_job_body, selector_quorum

    assert selector_quorum("100%") is None and selector_quorum("3") == 3
    with pytest.raises(UsageError, match=WHERE_QUORUM):
        selector_quorum("50%")
    body = build_job_body(
        command="hello", nodes=[], quorum=None, capture=False, env={}, selector="role=web"
    )
    assert body == {
        "command": "hello",
        "nodes": [],
        "capture_output": False,
        "env": {},
        "selector": "role=web",
    }

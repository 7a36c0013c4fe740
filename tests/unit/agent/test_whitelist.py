"""Whitelist resolution (agent.md §15)."""

from __future__ import annotations

import pytest

from pushjobs.agent.whitelist import Refusal, Resolution, Whitelist, WhitelistError

LOCK = "/var/chef/cache/chef-client-running.pid"

TABLE = {
    "chef-client": {"run": "chef-client", "lock": True},
    "uptime": "uptime",
    "restart apache": {"run": "systemctl restart apache2"},
    "deploy": {
        "pattern": r"^deploy (?P<app>[a-z0-9-]+) (\d+)$",
        "run": r"/usr/local/bin/deploy \g<app> \2",
    },
    "tail log": {
        "pattern": r"^tail ([a-z]+)$",
        "run": r"tail -n 200 /var/log/\1.log | grep -v DEBUG",
        "shell": True,
    },
    "greet": {"pattern": r"greet (\w+)", "run": r"echo hello \1"},
    "whole": {"pattern": r"say [a-z]+", "run": r"echo \g<0>"},
    "quoted": {"pattern": r"q (\S+)", "run": r"echo '\1"},
    "empty": {"pattern": r"nothing", "run": "  "},
    "locked-path": {"run": "backup", "lock": "/tmp/backup.lock", "hold_lock": True},
}


@pytest.fixture
def wl() -> Whitelist:
    return Whitelist(TABLE, LOCK)


def resolved(wl: Whitelist, command: str) -> Resolution:
    result = wl.resolve(command)
    assert isinstance(result, Resolution), result
    return result


def refused(wl: Whitelist, command: str) -> str:
    result = wl.resolve(command)
    assert isinstance(result, Refusal), result
    return result.reason


def test_exact_string_entry(wl: Whitelist) -> None:
    r = resolved(wl, "uptime")
    assert r.argv == ["uptime"]
    assert not r.shell
    assert r.lock_path is None


def test_exact_table_entry_with_default_lock(wl: Whitelist) -> None:
    r = resolved(wl, "chef-client")
    assert r.argv == ["chef-client"]
    assert r.lock_path == LOCK
    assert not r.hold_lock


def test_exact_entry_with_lock_path_and_hold(wl: Whitelist) -> None:
    r = resolved(wl, "locked-path")
    assert r.lock_path == "/tmp/backup.lock"
    assert r.hold_lock


def test_exact_is_split_with_shlex(wl: Whitelist) -> None:
    assert resolved(wl, "restart apache").argv == ["systemctl", "restart", "apache2"]


def test_table_without_run_defaults_to_key() -> None:
    wl = Whitelist({"ls -l": {"shell": False}}, LOCK)
    assert resolved(wl, "ls -l").argv == ["ls", "-l"]


def test_pattern_named_and_numbered_groups(wl: Whitelist) -> None:
    r = resolved(wl, "deploy api 42")
    assert r.argv == ["/usr/local/bin/deploy", "api", "42"]
    assert r.entry == "deploy"


def test_pattern_whole_match_group_zero(wl: Whitelist) -> None:
    assert resolved(wl, "say hello").argv == ["echo", "say", "hello"]


def test_pattern_shell_entry(wl: Whitelist) -> None:
    r = resolved(wl, "tail syslog")
    assert r.shell
    assert r.argv == ["/bin/sh", "-c", "tail -n 200 /var/log/syslog.log | grep -v DEBUG"]
    assert r.describe() == "tail -n 200 /var/log/syslog.log | grep -v DEBUG"
    assert resolved(wl, "uptime").describe() == "['uptime']"


def test_pattern_must_match_whole_command(wl: Whitelist) -> None:
    # without anchors in the pattern, fullmatch still requires the whole command
    assert resolved(wl, "greet bob").argv == ["echo", "hello", "bob"]
    assert "not in the whitelist" in refused(wl, "greet bob; rm -rf /")
    assert "not in the whitelist" in refused(wl, "xgreet bob")
    assert "not in the whitelist" in refused(wl, "greet bob extra")


def test_partial_match_never_runs_anything_else(wl: Whitelist) -> None:
    for command in (
        "deploy api 42 && reboot",
        "deploy api 42; reboot",
        "deploy api $(reboot) 1",
        "deploy api `reboot` 1",
        "tail syslog; reboot",
        "tail syslog|sh",
        "uptime; reboot",
        "uptime && reboot",
        " uptime",
    ):
        assert "not in the whitelist" in refused(wl, command), command


def test_control_characters_refused(wl: Whitelist) -> None:
    for command in ("uptime\nreboot", "deploy api 42\nreboot", "tail syslog\treboot", "uptime\x00"):
        assert "control character" in refused(wl, command)


def test_newline_injection_into_anchored_pattern(wl: Whitelist) -> None:
    # `$` would match before a trailing newline with re.search; the control check stops it first
    assert "control character" in refused(wl, "tail syslog\n")


def test_shlex_error_refused(wl: Whitelist) -> None:
    assert "No closing quotation" in refused(wl, "q x")


def test_empty_resolution_refused(wl: Whitelist) -> None:
    assert "empty" in refused(wl, "nothing")


def test_template_capture_with_control_char_is_refused() -> None:
    wl = Whitelist({"p": {"pattern": r"run (.+)", "run": r"echo \1"}}, LOCK)
    # the command itself is checked first; a template that adds one is checked after expansion
    wl2 = Whitelist({"p": {"pattern": r"run (\w+)", "run": "echo \\1\\n"}}, LOCK)
    assert "control character" in refused(wl, "run a\nb")
    assert "control character" in refused(wl2, "run a")


def test_exact_beats_pattern() -> None:
    wl = Whitelist({"any": {"pattern": r".*", "run": "echo pattern"}, "uptime": "echo exact"}, LOCK)
    assert resolved(wl, "uptime").argv == ["echo", "exact"]
    assert resolved(wl, "other").argv == ["echo", "pattern"]


def test_patterns_in_file_order() -> None:
    wl = Whitelist(
        {
            "first": {"pattern": r"x (\d+)", "run": r"first \1"},
            "second": {"pattern": r"x (.+)", "run": r"second \1"},
        },
        LOCK,
    )
    assert resolved(wl, "x 1").argv == ["first", "1"]
    assert resolved(wl, "x a").argv == ["second", "a"]


def test_not_in_whitelist_message(wl: Whitelist) -> None:
    assert refused(wl, "rm -rf /") == "command 'rm -rf /' is not in the whitelist"


def test_empty_table_allows_nothing() -> None:
    assert isinstance(Whitelist({}, LOCK).resolve("chef-client"), Refusal)


def test_capture_with_spaces_becomes_several_arguments() -> None:
    wl = Whitelist({"p": {"pattern": r"run (.+)", "run": r"echo \1"}}, LOCK)
    assert resolved(wl, "run a b").argv == ["echo", "a", "b"]


@pytest.mark.parametrize(
    "value, message",
    [
        (42, "must be a string or a table"),
        ({"run": 1}, "'run' must be a string"),
        ({"run": "x", "shell": "yes"}, "'shell' must be a boolean"),
        ({"run": "x", "lock": 3}, "'lock' must be a boolean or a path"),
        ({"run": "x", "lock": ""}, "'lock' must be a boolean or a path"),
        ({"run": "x", "hold_lock": 1}, "'hold_lock' must be a boolean"),
        ({"run": "x", "colour": "red"}, "unknown field 'colour'"),
        ({"pattern": "(", "run": "x"}, "bad pattern"),
        ({"pattern": "a"}, "needs 'run'"),
        ({"pattern": 5, "run": "x"}, "'pattern' must be a string"),
        ({"pattern": "(a)", "run": r"\2"}, "bad 'run' template"),
        ({"pattern": "(a)", "run": r"\g<nope>"}, "bad 'run' template"),
    ],
)
def test_config_errors(value: object, message: str) -> None:
    with pytest.raises(WhitelistError, match=message.replace("(", r"\(")):
        Whitelist({"entry": value}, LOCK)

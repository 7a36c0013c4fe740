"""Agent config validation, command line checks and environment building (agent.md §1, §2, §11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushjobs.agent.config import ConfigError, build_config, load_config, parse_server_url
from pushjobs.agent.environment import UserInfo, build_environment
from pushjobs.agent.main import main

URL = "https://push.example.com/organizations/acme"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_minimal_config_defaults() -> None:
    cfg = build_config({"server_url": URL, "node_name": "web1"})
    assert cfg.org == "acme"
    assert cfg.client_key == "/etc/pushjobs/client.pem"
    assert cfg.verify_tls is True and cfg.allow_unencrypted is False
    assert cfg.file_dir == "/var/lib/pushjobs-agent/files"
    assert cfg.lock_file == "/var/chef/cache/chef-client-running.pid"
    assert cfg.kill_grace == 5.0 and cfg.max_run_time == 86400
    assert cfg.allowed_overwritable_env_vars is None
    assert cfg.log_level == "info" and cfg.log_file is None
    # no [whitelist] table: chef-client only
    assert [e.key for e in cfg.whitelist.entries()] == ["chef-client"]


def test_default_node_name_is_set() -> None:
    assert build_config({"server_url": URL}).node_name


def test_empty_whitelist_table_allows_nothing() -> None:
    cfg = build_config({"server_url": URL, "whitelist": {}})
    assert cfg.whitelist.entries() == []


@pytest.mark.parametrize(
    "url, org",
    [
        ("http://h/organizations/o", "o"),
        ("https://h:8443/organizations/my-org", "my-org"),
        ("https://h/prefix/organizations/o/", "o"),
    ],
)
def test_server_url_ok(url: str, org: str) -> None:
    assert parse_server_url(url.rstrip("/")) == org


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/organizations/o",
        "https://h/orgs/o",
        "https://h/organizations",
        "https:///organizations/o",
        "h/organizations/o",
        "https://h/organizations/o?x=1",
    ],
)
def test_server_url_bad(url: str) -> None:
    with pytest.raises(ConfigError, match="server_url must end in /organizations/ORG_NAME"):
        build_config({"server_url": url})


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, r"server_url \(or server_urls\) is required"),
        ({"server_url": URL, "colour": 1}, "unknown configuration key 'colour'"),
        ({"server_url": URL, "verify_tls": "yes"}, "verify_tls must be true or false"),
        ({"server_url": URL, "kill_grace": "5"}, "kill_grace must be a number"),
        ({"server_url": URL, "kill_grace": True}, "kill_grace must be a number"),
        ({"server_url": URL, "kill_grace": -1}, "kill_grace must be between"),
        ({"server_url": URL, "max_run_time": 1.5}, "max_run_time must be an integer"),
        ({"server_url": URL, "max_run_time": 0}, "max_run_time must be at least"),
        ({"server_url": URL, "allowed_overwritable_env_vars": "A"}, "must be an array of strings"),
        ({"server_url": URL, "allowed_overwritable_env_vars": [1]}, "must be an array of strings"),
        ({"server_url": URL, "log_level": "loud"}, "log_level must be one of"),
        ({"server_url": URL, "node_name": ""}, "node_name must not be empty"),
        ({"server_url": URL, "node_name": 5}, "node_name must be a string"),
        ({"server_url": URL, "whitelist": {"x": 5}}, "whitelist entry 'x'"),
        ({"server_url": URL, "whitelist": 5}, r"\[whitelist\] must be a table"),
        ({"server_urls": []}, "server_urls must be a non-empty array of URLs"),
        ({"server_urls": [URL, 5]}, "server_urls must be a non-empty array of URLs"),
        ({"server_urls": [URL], "server_url": URL}, "give server_url or server_urls, not both"),
        (
            {"server_urls": [URL, "https://b.example/organizations/other"]},
            "every entry of server_urls must name the same organization",
        ),
        ({"server_urls": ["https://b.example/nope"]}, "server_url must end in"),
    ],
)
def test_config_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(data)


def test_load_file_and_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'server_url = "{URL}"\nnode_name = "web1"\nkill_grace = 2\n'
        '[whitelist]\n"uptime" = "uptime"\n',
    )
    cfg = load_config(path, {"node_name": "web2", "log_level": None})
    assert cfg.node_name == "web2"
    assert cfg.kill_grace == 2.0
    assert cfg.source == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.toml"):
        load_config(write(tmp_path, "server_url = \n"))


# ---- command line ----------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pushjobs-agent ") and out.strip().endswith("(protocol 3.0)")


@pytest.fixture(scope="module")
def client_pem() -> bytes:
    from pushjobs.protocol.keys import generate_rsa_key, private_key_pem

    return private_key_pem(generate_rsa_key(2048))


def test_check_config_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], client_pem: bytes
) -> None:
    (tmp_path / "client.pem").write_bytes(client_pem)
    path = write(
        tmp_path,
        f'server_url = "{URL}"\nclient_key = "{tmp_path}/client.pem"\n[whitelist]\n'
        "\"deploy\" = { pattern = '^deploy (\\w+)$', run = 'd \\1', lock = true }\n",
    )
    assert main(["-c", str(path), "--check-config"]) == 0
    out = capsys.readouterr().out
    assert "server_url = 'https://push.example.com/organizations/acme'" in out
    assert "'deploy': pattern" in out and "lock /var/chef/cache" in out


def test_check_config_checks_the_key_and_lock_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], client_pem: bytes
) -> None:
    lock = tmp_path / "no-such-dir" / "deploy.lock"
    path = write(
        tmp_path,
        f'server_url = "{URL}"\nclient_key = "{tmp_path}/client.pem"\n[whitelist]\n'
        f'"deploy" = {{ run = "d", lock = "{lock}" }}\n"uptime" = "uptime"\n',
    )
    # the agent itself would exit 2 on this key: so does the check
    assert main(["-c", str(path), "--check-config"]) == 2
    captured = capsys.readouterr()
    assert "'uptime': exact -> run 'uptime'" in captured.out  # settings are still shown
    assert f"cannot read client_key {tmp_path}/client.pem: No such file" in captured.err
    assert f"warning: lock directory {lock.parent} does not exist" in captured.err
    assert "'deploy'" in captured.err
    (tmp_path / "client.pem").write_text("not a key")
    assert main(["-c", str(path), "--check-config"]) == 2
    assert "is not an RSA private key" in capsys.readouterr().err
    (tmp_path / "client.pem").write_bytes(client_pem)
    (tmp_path / "client.pem").chmod(0o600)
    lock.parent.mkdir()
    assert main(["-c", str(path), "--check-config"]) == 0
    assert capsys.readouterr().err == ""


def test_check_config_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'server_url = "https://h/x"\n')
    assert main(["-c", str(path), "--check-config"]) == 2
    assert "server_url must end in /organizations/ORG_NAME" in capsys.readouterr().err


def test_missing_config_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(tmp_path / "none.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whitelist = (
        '"chef-client" = { run = "chef-client", lock = true }\n'
        "\"tail\" = { pattern = '^tail ([a-z]+)$', run = 'tail /var/log/\\1 | head', "
        "shell = true }\n"
    )
    path = write(tmp_path, f'server_url = "{URL}"\n[whitelist]\n{whitelist}')
    assert main(["-c", str(path), "--check-command", "chef-client"]) == 0
    out = capsys.readouterr().out
    assert "argv: ['chef-client']" in out and "lock: /var/chef/cache" in out
    assert main(["-c", str(path), "--check-command", "tail syslog"]) == 0
    assert "shell: /bin/sh -c 'tail /var/log/syslog | head'" in capsys.readouterr().out
    assert main(["-c", str(path), "--check-command", "tail syslog; reboot"]) == 1
    assert "not in the whitelist" in capsys.readouterr().out


def test_unreadable_key_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f'server_url = "{URL}"\nclient_key = "{tmp_path}/missing.pem"\n')
    assert main(["-c", str(path)]) == 2
    assert "cannot read client_key" in capsys.readouterr().err
    (tmp_path / "bad.pem").write_text("not a key")
    assert main(["-c", str(path), "-k", str(tmp_path / "bad.pem")]) == 2
    assert "is not an RSA private key" in capsys.readouterr().err


# ---- environment (§11) -------------------------------------------------------------------------

ALICE = UserInfo("alice", 1001, 1001, "/home/alice", (1001,))


def test_env_base_and_job_vars() -> None:
    env = build_environment({"PATH": "/bin", "HOME": "/root"}, node_name="n", job_id="j")
    assert env == {
        "PATH": "/bin",
        "HOME": "/root",
        "CHEF_PUSH_NODE_NAME": "n",
        "PUSHY_NODE_NAME": "n",
        "CHEF_PUSH_JOB_ID": "j",
        "PUSHY_JOB_ID": "j",
    }


def test_env_user_overrides_home_user_logname() -> None:
    env = build_environment(
        {"HOME": "/root", "USER": "root", "LOGNAME": "root"}, node_name="n", job_id="j", user=ALICE
    )
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == ("/home/alice", "alice", "alice")


def test_env_without_list_takes_all_but_the_denied_names_as_is() -> None:
    env = build_environment(
        {"PATH": "/bin"},
        node_name="n",
        job_id="j",
        user=ALICE,
        job_env={"PATH": "/evil", "HOME": "/x", "bar": "1"},
    )
    assert env["PATH"] == "/bin" and env["HOME"] == "/home/alice" and env["bar"] == "1"
    assert env["CHEF_PUSH_ENV_PATH"] == "/evil" and env["CHEF_PUSH_ENV_HOME"] == "/x"


def test_env_with_list_renames_others() -> None:
    env = build_environment(
        {"PATH": "/bin"},
        node_name="n",
        job_id="j",
        job_env={"foo": "1", "bar": "x", "PATH": "/evil"},
        allowed_overwritable=["foo"],
    )
    assert env["foo"] == "1"
    assert env["CHEF_PUSH_ENV_bar"] == "x" and "bar" not in env
    assert env["PATH"] == "/bin" and env["CHEF_PUSH_ENV_PATH"] == "/evil"


def test_env_job_vars_cannot_be_overridden() -> None:
    env = build_environment(
        {},
        node_name="n",
        job_id="j",
        job_env={"CHEF_PUSH_JOB_ID": "fake", "PUSHY_NODE_NAME": "fake"},
        file_path="/f/job-j",
    )
    assert env["CHEF_PUSH_JOB_ID"] == "j" and env["PUSHY_NODE_NAME"] == "n"
    assert env["CHEF_PUSH_JOB_FILE"] == env["PUSHY_JOB_FILE"] == "/f/job-j"


def test_server_urls_list_every_server_of_a_cluster() -> None:
    other = URL.replace("://", "://b.", 1) + "/"
    cfg = build_config({"server_urls": [URL, other]})
    assert cfg.server_url == URL and cfg.server_urls == (URL, other.rstrip("/"))
    assert build_config({"server_url": URL}).server_urls == ()

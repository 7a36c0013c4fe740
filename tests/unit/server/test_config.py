"""Server settings: defaults, file + overrides, unknown keys, types and ranges (cli.md §12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushjobs.server.config import (
    ConfigError,
    Settings,
    default_config_path,
    known_keys,
    load_settings,
    machine_fqdn,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_match_the_spec() -> None:
    s = load_settings(None, {})
    assert s.server_name == machine_fqdn() and s.server_name
    assert s.data_dir == Path("/var/lib/pushjobs")
    assert s.log_level == "info" and s.log_file is None
    assert (s.http.bind, s.http.port, s.http.tls_cert, s.http.tls_key) == (
        "127.0.0.1",
        10003,
        None,
        None,
    )
    z = s.zeromq
    assert (z.listen, z.heartbeat_port, z.command_port, z.disable_curve_encryption) == (
        "tcp://*",
        10000,
        10002,
        False,
    )
    assert z.idle_read_interval == 0.05
    t = s.timing
    assert t.heartbeat_interval == 10.0
    assert t.rehab_interval == 1.0
    assert t.down_threshold == 0.6
    assert t.decay_window == 4
    assert t.detect_offline_nodes_interval == 4
    assert t.voting_timeout == 60
    assert t.default_run_timeout == 3600
    assert t.wait_complete_time == 5
    assert t.keep_alive_time == 15
    assert t.org_feed_expiration == 60
    assert t.output_close_timeout == 60
    assert t.config_lifetime == 3600
    assert t.max_message_skew == 300
    assert (s.limits.max_body_size, s.limits.max_output_bytes) == (65536, 1048576)
    p = s.principals
    assert (p.backend, p.chef_server_url, p.principals_url) == (
        "embedded",
        None,
        "http://127.0.0.1:8000",
    )
    assert (p.superuser_name, p.superuser_key, p.cache_ttl) == ("pivotal", None, 60)
    assert s.database_path == Path("/var/lib/pushjobs/pushjobs.db")
    assert s.server_key_path == Path("/var/lib/pushjobs/server_key.pem")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""), {})
    assert s.http.port == 10003 and s.config_path == tmp_path / "server.toml"


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
server_name = "push.example.com"
data_dir = "data"
log_level = "DEBUG"
log_file = "/var/log/pushjobs.log"
[http]
bind = "0.0.0.0"
port = 0
tls_cert = "cert.pem"
tls_key = "key.pem"
[zeromq]
listen = "tcp://10.0.0.1"
heartbeat_port = 20000
command_port = 20002
disable_curve_encryption = true
idle_read_interval = 0
[timing]
heartbeat_interval = 0.5
default_run_timeout = 60
down_threshold = 0.4
[limits]
max_body_size = 40960
max_output_bytes = 4096
[principals]
backend = "chef-server"
chef_server_url = "https://chef.example.com/"
superuser_key = "pivotal.pem"
cache_ttl = 5
""",
    )
    s = load_settings(path, {})
    assert s.server_name == "push.example.com"
    assert s.data_dir == tmp_path / "data"
    assert s.log_level == "debug"
    assert s.log_file == Path("/var/log/pushjobs.log")
    assert (s.http.bind, s.http.port) == ("0.0.0.0", 0)
    assert s.http.tls_cert == tmp_path / "cert.pem" and s.http.tls_key == tmp_path / "key.pem"
    assert s.zeromq.listen == "tcp://10.0.0.1"
    assert (s.zeromq.heartbeat_port, s.zeromq.command_port) == (20000, 20002)
    assert s.zeromq.disable_curve_encryption is True
    assert s.zeromq.idle_read_interval == 0.0
    assert s.timing.heartbeat_interval == 0.5 and s.timing.default_run_timeout == 60
    assert s.timing.down_threshold == 0.4
    assert (s.limits.max_body_size, s.limits.max_output_bytes) == (40960, 4096)
    assert s.principals.backend == "chef-server"
    assert s.principals.chef_server_url == "https://chef.example.com"
    assert s.principals.superuser_key == tmp_path / "pivotal.pem"
    assert s.principals.cache_ttl == 5.0


def test_overrides_win_over_the_file_and_none_means_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nport = 1234\nbind = "0.0.0.0"\n')
    s = load_settings(
        path,
        {"http.port": 0, "http.bind": None, "data_dir": "rel", "timing": {"voting_timeout": 2}},
    )
    assert s.http.port == 0
    assert s.http.bind == "0.0.0.0"
    assert s.data_dir == Path.cwd() / "rel"
    assert s.timing.voting_timeout == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[timing]\nhearbeat_interval = 1\n", "unknown setting 'timing.hearbeat_interval'"),
        ("colour = 1\n", "unknown setting 'colour'"),
        ("[database]\npath = 'x'\n", "unknown setting 'database'"),
        ("http = 3\n", "setting 'http' must be a table"),
    ],
)
def test_unknown_keys_are_errors_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), {})
    assert message in str(info.value)
    assert str(tmp_path / "server.toml") in str(info.value)


def test_log_file_stderr_means_default(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, 'log_file = "stderr"\n'), {}).log_file is None
    assert load_settings(None, {"log_file": "x.log"}).log_file == Path.cwd() / "x.log"


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'http\.prot'"):
        load_settings(None, {"http.prot": 1})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"limits.max_body_size": 40959}, "'limits.max_body_size' must be >= 40960"),
        ({"limits.max_output_bytes": 4095}, "'limits.max_output_bytes' must be from 4096"),
        ({"limits.max_output_bytes": 67108865}, "to 67108864"),
        ({"http.port": 65536}, "'http.port' must be from 0 to 65535"),
        ({"zeromq.command_port": -1}, "'zeromq.command_port' must be from 0 to 65535"),
        ({"http.port": "80"}, "'http.port' must be an integer, not str"),
        ({"http.port": True}, "'http.port' must be an integer, not bool"),
        ({"http.port": 80.0}, "'http.port' must be an integer, not float"),
        ({"timing.heartbeat_interval": 0}, "'timing.heartbeat_interval' must be a number > 0"),
        ({"timing.voting_timeout": "60"}, "'timing.voting_timeout' must be a number"),
        ({"timing.down_threshold": 1.5}, "'timing.down_threshold' must be a number between"),
        ({"timing.default_run_timeout": 1.5}, "'timing.default_run_timeout' must be an integer"),
        ({"log_level": "loud"}, "'log_level' must be one of debug, info"),
        ({"zeromq.disable_curve_encryption": "yes"}, "must be true or false"),
        ({"zeromq.listen": "udp://*"}, "must look like tcp://ADDRESS"),
        ({"zeromq.idle_read_interval": 2}, "'zeromq.idle_read_interval' must be a number of"),
        ({"zeromq.idle_read_interval": -0.1}, "seconds from 0 to 1 (got -0.1)"),
        ({"zeromq.idle_read_interval": "50ms"}, "must be a number, not str"),
        ({"server_name": ""}, "'server_name' must not be empty"),
        ({"principals.backend": "ldap"}, "'principals.backend' must be one of"),
        ({"principals.principals_url": "ftp://x"}, "must be an http:// or https:// URL"),
        ({"http.tls_cert": "/c.pem"}, "'http.tls_cert' and 'http.tls_key' must be given together"),
        ({"principals.backend": "chef-server"}, "'principals.chef_server_url' is required"),
        (
            {"zeromq.heartbeat_port": 5000, "zeromq.command_port": 5000},
            "must differ (both 5000)",
        ),
    ],
)
def test_type_and_range_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, overrides)
    assert message in str(info.value)


def test_range_edges_are_accepted() -> None:
    s = load_settings(
        None,
        {
            "limits.max_body_size": 40960,
            "limits.max_output_bytes": 67108864,
            "http.port": 65535,
            "zeromq.heartbeat_port": 0,
            "zeromq.command_port": 0,
        },
    )
    assert s.limits.max_output_bytes == 67108864 and s.zeromq.command_port == 0


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.toml"):
        load_settings(write(tmp_path, "[http\n"), {})
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml not found"):
        load_settings(tmp_path / "nope.toml", {})


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUSHJOBS_SERVER_CONFIG", raising=False)
    assert default_config_path(None) == (Path("/etc/pushjobs/server.toml"), False)
    monkeypatch.setenv("PUSHJOBS_SERVER_CONFIG", "/srv/p.toml")
    assert default_config_path(None) == (Path("/srv/p.toml"), True)
    assert default_config_path("x.toml") == (Path("x.toml"), True)


def test_every_known_key_is_a_settings_field() -> None:
    s = Settings()
    for dotted in known_keys():
        section, _, name = dotted.rpartition(".")
        target = getattr(s, section) if section else s
        assert hasattr(target, name), dotted
    assert len(known_keys()) == 4 + 4 + 5 + 13 + 2 + 6 + 2 + 2 + 2 + 3


def test_store_defaults_to_sqlite_in_the_data_dir() -> None:
    settings = load_settings(None, {"data_dir": "/srv/pj"})
    assert (settings.store.backend, settings.store.url) == ("sqlite", None)


def test_postgresql_store_needs_a_postgresql_url(tmp_path: Path) -> None:
    url = "postgresql://pushjobs@db.example:5432/pushjobs"
    text = f'[store]\nbackend = "postgresql"\nurl = "{url}"\n'
    assert load_settings(write(tmp_path, text), {}).store.url == url
    with pytest.raises(ConfigError, match=r"'store\.url' is required with backend 'postgresql'"):
        load_settings(None, {"store.backend": "postgresql"})
    with pytest.raises(ConfigError, match=r"must be a postgresql://USER@HOST:PORT/DATABASE URI"):
        load_settings(None, {"store.backend": "postgresql", "store.url": "mysql://x/y"})
    with pytest.raises(ConfigError, match=r"'store\.url' applies only to backend 'postgresql'"):
        load_settings(None, {"store.url": url})
    with pytest.raises(ConfigError, match=r"store\.backend"):
        load_settings(None, {"store.backend": "oracle"})


def test_metrics_are_off_and_retention_keeps_everything_by_default() -> None:
    s = load_settings(None, {})
    assert (s.metrics.bind, s.metrics.port) == ("127.0.0.1", 0)
    assert (s.retention.jobs, s.retention.output, s.retention.interval) == (0, 0, 3600)


def test_metrics_and_retention_from_a_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[metrics]\nbind = "0.0.0.0"\nport = 9464\n'
        '[retention]\njobs = "90d"\noutput = "30d"\ninterval = "15m"\n',
    )
    s = load_settings(path)
    assert (s.metrics.bind, s.metrics.port) == ("0.0.0.0", 9464)
    assert (s.retention.jobs, s.retention.output, s.retention.interval) == (
        90 * 86400,
        30 * 86400,
        900,
    )
    assert load_settings(None, {"retention": {"jobs": 0, "output": "0"}}).retention.jobs == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"retention.jobs": "90 days"}, r"setting 'retention\.jobs': expected a duration like 30d"),
        ({"retention.output": 30}, r"setting 'retention\.output': expected a duration"),
        ({"retention.interval": "0"}, r"'retention\.interval' must be a duration > 0"),
        ({"metrics.port": 70000}, r"'metrics\.port' must be from 0 to 65535"),
        ({"metrics.port": 10003}, r"'metrics\.port' and 'http\.port' must differ"),
        ({"metrics.port": 10000}, r"'metrics\.port' and 'zeromq\.heartbeat_port' must differ"),
        ({"metrics.bind": " "}, r"'metrics\.bind' must not be empty"),
    ],
)
def test_metrics_and_retention_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, overrides)

"""Settings precedence, profiles and errors of the `pushjobs` CLI (cli.md §1)."""

from pathlib import Path

import pytest

from pushjobs.cli.errors import UsageError
from pushjobs.cli.settings import choose_profile, key_file_warning, load_settings


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def config(home: Path, text: str) -> Path:
    return write(home / ".config" / "pushjobs" / "config.toml", text)


def credentials(home: Path, text: str) -> Path:
    return write(home / ".chef" / "credentials", text)


def test_config_profile_default(home: Path) -> None:
    config(
        home,
        '[default]\nserver_url = "https://push/organizations/acme/"\nuser = "alice"\n'
        'key = "/keys/alice.pem"\n',
    )
    s = load_settings({}, {}, home)
    assert s.server_url == "https://push/organizations/acme"  # trailing slash dropped
    assert (s.user, s.key, s.sign_version, s.verify_tls) == (
        "alice",
        "/keys/alice.pem",
        "1.3",
        True,
    )
    assert s.chef_server_url is None
    assert s.profile == "default"


def test_knife_credentials_map_to_settings(home: Path) -> None:
    credentials(
        home,
        "[default]\n"
        'client_name = "bob"\nclient_key = "bob.pem"\n'
        'chef_server_url = "https://chef/organizations/acme"\n',
    )
    s = load_settings({}, {}, home)
    assert s.user == "bob"
    assert s.key == str(home / ".chef" / "bob.pem")  # relative to the credentials file
    assert s.server_url == "https://chef/organizations/acme"
    assert s.chef_server_url == "https://chef/organizations/acme"


def test_node_name_used_when_no_client_name(home: Path) -> None:
    credentials(
        home,
        '[default]\nnode_name = "n1"\nclient_key = "/k.pem"\n'
        'chef_server_url = "https://chef/organizations/o"\n',
    )
    assert load_settings({}, {}, home).user == "n1"


def test_inline_pem_key_in_credentials(home: Path) -> None:
    credentials(
        home,
        '[default]\nclient_name = "bob"\nchef_server_url = "https://c/organizations/o"\n'
        'client_key = """-----BEGIN RSA PRIVATE KEY-----\nabc\n'
        '-----END RSA PRIVATE KEY-----\n"""\n',
    )
    assert load_settings({}, {}, home).key.startswith("-----BEGIN RSA PRIVATE KEY-----")


def test_precedence_credentials_config_env_flags(home: Path) -> None:
    credentials(
        home,
        '[default]\nclient_name = "cred"\nclient_key = "/cred.pem"\n'
        'chef_server_url = "https://chef/organizations/acme"\n',
    )
    config(home, '[default]\nserver_url = "https://push/organizations/acme"\nuser = "cfg"\n')
    s = load_settings({}, {}, home)
    # config overrides credentials, credentials fill the rest; chef_server_url stays the Chef one
    assert (s.server_url, s.user, s.key) == ("https://push/organizations/acme", "cfg", "/cred.pem")
    assert s.chef_server_url == "https://chef/organizations/acme"
    env = {"PUSHJOBS_USER": "envuser", "PUSHJOBS_KEY": "/env.pem"}
    s = load_settings({}, env, home)
    assert (s.user, s.key) == ("envuser", "/env.pem")
    s = load_settings({"user": "flaguser", "server_url": "https://flag/organizations/x"}, env, home)
    assert (s.user, s.key, s.server_url) == ("flaguser", "/env.pem", "https://flag/organizations/x")


def test_profile_choice_order() -> None:
    assert choose_profile("p1", {"PUSHJOBS_PROFILE": "p2", "CHEF_PROFILE": "p3"}) == ("p1", True)
    assert choose_profile(None, {"PUSHJOBS_PROFILE": "p2", "CHEF_PROFILE": "p3"}) == ("p2", True)
    assert choose_profile(None, {"CHEF_PROFILE": "p3"}) == ("p3", True)
    assert choose_profile(None, {}) == ("default", False)


def test_profiles_select_sections(home: Path) -> None:
    config(
        home,
        '[default]\nserver_url = "https://a/organizations/a"\nuser = "a"\nkey = "/a"\n'
        '[prod]\nserver_url = "https://p/organizations/p"\nuser = "p"\nkey = "/p"\n'
        'sign_version = "1.1"\nverify_tls = false\nca_file = "ca.pem"\n',
    )
    s = load_settings({}, {"CHEF_PROFILE": "prod"}, home)
    assert (s.user, s.sign_version, s.verify_tls, s.profile) == ("p", "1.1", False, "prod")
    assert s.ca_file == str(home / ".config" / "pushjobs" / "ca.pem")
    assert load_settings({"profile": "default"}, {"CHEF_PROFILE": "prod"}, home).user == "a"


def test_explicit_profile_missing_is_an_error(home: Path) -> None:
    config(home, '[default]\nserver_url = "https://a/organizations/a"\nuser = "a"\nkey = "/a"\n')
    with pytest.raises(UsageError, match="profile 'nope' not found"):
        load_settings({"profile": "nope"}, {}, home)


def test_pushjobs_config_env_and_flag(home: Path, tmp_path: Path) -> None:
    other = write(
        tmp_path / "other.toml",
        '[default]\nserver_url = "https://o/organizations/o"\nuser = "o"\nkey = "/o"\n',
    )
    assert load_settings({}, {"PUSHJOBS_CONFIG": str(other)}, home).user == "o"
    assert load_settings({"config": str(other)}, {}, home).user == "o"
    with pytest.raises(UsageError, match="not found"):
        load_settings({"config": str(tmp_path / "missing.toml")}, {}, home)


@pytest.mark.parametrize("missing", ["server_url", "user", "key"])
def test_missing_setting_names_it_and_explains(home: Path, missing: str) -> None:
    values = {"server_url": "https://p/organizations/o", "user": "u", "key": "/k"}
    del values[missing]
    with pytest.raises(UsageError) as e:
        load_settings(values, {}, home)
    assert f"missing setting '{missing}'" in e.value.message
    assert "config.toml" in e.value.message and "[default]" in e.value.message


def test_insecure_and_ca_flags(home: Path) -> None:
    s = load_settings(
        {"server_url": "https://p/o", "user": "u", "key": "/k", "insecure": True, "ca_file": "/ca"},
        {},
        home,
    )
    assert (s.verify_tls, s.ca_file) == (False, "/ca")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[default\n", "invalid TOML"),
        ('server_url = "x"\n', "inside a profile table"),
        ('[default]\nserverurl = "x"\n', "unknown setting"),
        ('[default]\nverify_tls = "no"\n', "true or false"),
        ('[default]\nsign_version = "1.0"\n', '"1.3" or "1.1"'),
        ("[default]\nuser = 3\n", "must be a string"),
    ],
)
def test_bad_config_files(home: Path, text: str, message: str) -> None:
    config(home, text)
    with pytest.raises(UsageError, match=message):
        load_settings({"server_url": "https://p/o", "user": "u", "key": "/k"}, {}, home)


def test_urls_must_be_http(home: Path) -> None:
    with pytest.raises(UsageError, match="server_url must be an http:// or https:// URL"):
        load_settings(
            {"server_url": "push.example.com/organizations/o", "user": "u", "key": "/k"}, {}, home
        )


def test_key_file_warning(tmp_path: Path) -> None:
    key = write(tmp_path / "k.pem", "x")
    for bits, warned in ((0o600, False), (0o400, False), (0o640, True), (0o604, True)):
        key.chmod(bits)
        warning = key_file_warning(str(key))
        assert (warning is not None) == warned, oct(bits)
        if warning:
            assert f"(mode {bits:04o})" in warning and "\n" not in warning
    assert key_file_warning("-----BEGIN RSA PRIVATE KEY-----\n...") is None
    assert key_file_warning(str(tmp_path / "missing.pem")) is None


def test_xdg_config_home_moves_the_config_file(home: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    write(
        xdg / "pushjobs" / "config.toml",
        '[default]\nserver_url = "https://x/organizations/o"\nuser = "u"\nkey = "/k.pem"\n',
    )
    config(home, '[default]\nuser = "from-home"\n')  # no longer read
    s = load_settings({}, {"XDG_CONFIG_HOME": str(xdg)}, home)
    assert s.user == "u"
    with pytest.raises(UsageError, match=r"\.config/pushjobs/config\.toml"):
        load_settings({}, {"XDG_CONFIG_HOME": ""}, home)  # unset/empty: ~/.config again

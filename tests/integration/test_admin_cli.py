"""`pushjobs-server` end to end: the real command as a subprocess in temp dirs (cli.md §11–§14)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pushjobs.protocol.keys import key_fingerprint, load_private_key
from pushjobs.server.admin.main import main
from pushjobs.server.store.records import Job
from pushjobs.server.store.sqlite import SqliteStore
from tests.support.toml import toml_document


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Env:
    root: Path
    config: Path
    data: Path
    monkeypatch: pytest.MonkeyPatch

    def run(self, *args: str, stdin: str | None = None, config: bool = True) -> Result:
        env = dict(os.environ)
        env.pop("PUSHJOBS_SERVER_CONFIG", None)
        if config:
            env["PUSHJOBS_SERVER_CONFIG"] = str(self.config)
        proc = subprocess.run(
            [sys.executable, "-m", "pushjobs.server.admin.main", *args],
            cwd=self.root,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.code == 0, (args, result)
        return result.out

    def query(self, *args: str) -> str:
        """A read-only command (list/show) run in-process; must succeed."""
        result = self.call(*args)
        assert result.code == 0, (args, result)
        return result.out

    def call(self, *args: str) -> Result:
        """Run the command in this process (same code as the subprocess, no start-up cost)."""
        self.monkeypatch.setenv("PUSHJOBS_SERVER_CONFIG", str(self.config))
        self.monkeypatch.chdir(self.root)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse usage errors and --help
                code = int(exc.code or 0)
        return Result(code, out.getvalue(), err.getvalue())

    def fails(self, code: int, message: str, *args: str, stdin: str | None = None) -> Result:
        """Expect exit `code` and `message` on stderr; in-process unless stdin is needed."""
        result = self.run(*args, stdin=stdin) if stdin is not None else self.call(*args)
        assert result.code == code, (args, result)
        assert message in result.err, (args, result)
        return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A temp dir with a config path (not yet created) whose data dir is `data`."""
    return Env(tmp_path, tmp_path / "etc" / "server.toml", tmp_path / "data", monkeypatch)


@pytest.fixture
def env(fresh: Env) -> Env:
    fresh.ok("--data-dir", str(fresh.data), "init", "--server-name", "push.test")
    return fresh


# ---------------------------------------------------------------------------
# init


def test_init_creates_everything_and_is_idempotent(fresh: Env) -> None:
    out = fresh.ok("--data-dir", "data", "init", "--server-name", "push.test")
    for item in ("config file", "data directory", "database", "server key"):
        assert f"created {item}" in out
    assert "pushjobs-server" in out and " run" in out and "client create" in out
    assert mode(fresh.data) == 0o700
    key_path = fresh.data / "server_key.pem"
    assert mode(key_path) == 0o600
    key = load_private_key(key_path.read_bytes())
    assert key.key_size == 2048
    assert (fresh.data / "pushjobs.db").exists()
    config = fresh.config.read_text()
    assert 'server_name = "push.test"' in config
    assert f'data_dir = "{fresh.data}"' in config

    key_bytes = key_path.read_bytes()
    again = fresh.ok("init")  # data_dir now comes from the config file
    assert "created" not in again
    assert "nothing to create" in again
    assert key_path.read_bytes() == key_bytes
    assert fresh.config.read_text() == config
    assert fresh.ok("org", "list") == ""


def test_init_with_org_and_admin(fresh: Env) -> None:
    fresh.fails(2, "must be given together", "--data-dir", "data", "init", "--org", "acme")
    fresh.fails(
        2,
        "invalid organization name 'Acme'",
        *("--data-dir", "data", "init", "--org", "Acme", "--admin", "alice"),
        *("--admin-key-out", "a.pem"),
    )
    out = fresh.ok(
        *("--data-dir", "data", "init", "--org", "acme", "--admin", "alice"),
        *("--admin-key-out", "alice.pem"),
    )
    assert "created organization 'acme'" in out and "created user 'alice'" in out
    key_file = fresh.root / "alice.pem"
    assert mode(key_file) == 0o600
    private = load_private_key(key_file.read_bytes())
    shown = json.loads(fresh.ok("--json", "user", "show", "alice"))
    assert shown["organizations"] == ["acme"]
    assert shown["key_fingerprint"] == key_fingerprint(private.public_key())
    org = json.loads(fresh.ok("org", "show", "acme", "--json"))
    assert org["users"] == [{"name": "alice", "admin": True}]
    # idempotent: nothing recreated, the key file is left alone
    before = key_file.read_bytes()
    again = fresh.run(
        *("init", "--org", "acme", "--admin", "alice", "--admin-key-out", "alice.pem")
    )
    assert again.code == 0 and "already exists" in again.err
    assert key_file.read_bytes() == before


def test_init_next_steps_name_the_agent_url(fresh: Env) -> None:
    """The printed server_url is one an agent can use: never port 0, IPv6 in brackets."""
    fresh.config.parent.mkdir(parents=True)
    fresh.config.write_text('server_name = "127.0.0.1"\n[http]\nport = 0\n')
    out = fresh.call(
        *("--data-dir", "data", "init", "--org", "acme", "--admin", "alice"),
        *("--admin-key-out", "alice.pem"),
    ).out
    assert "server_url = http://127.0.0.1:PORT/organizations/acme" in out
    assert ":0/" not in out
    assert "the server picks a free port" in out
    fresh.config.write_text('server_name = "fd00::1"\n[http]\nport = 10003\n')
    out = fresh.call("--data-dir", "data", "init").out
    assert "server_url = http://[fd00::1]:10003/organizations/ORG" in out
    assert "free port" not in out


def test_key_files_are_named_in_messages(env: Env) -> None:
    env.ok("org", "create", "acme")
    out = env.ok("client", "create", "acme", "web1", "--key-out", "web1.pem")
    assert out == "created client 'web1' in organization 'acme' (private key written to web1.pem)\n"
    piped = env.run("client", "create", "acme", "web2", "--key-out", "-")
    assert piped.err == "created client 'web2' in organization 'acme'\n"
    out = env.ok("client", "set-key", "acme", "web1", "--key-out", "web1-new.pem")
    assert out == "replaced the key of client 'web1' (private key written to web1-new.pem)\n"
    out = env.ok("user", "create", "bob", "--key-out", "bob.pem", "--org", "acme")
    assert out == "created user 'bob', member of 'acme' (private key written to bob.pem)\n"
    (env.root / "fleet.txt").write_text("web3\nweb1\n")
    env.fails(
        1,
        "client 'web1' already exists in organization 'acme' "
        "(--skip-existing registers the others)",
        *("client", "import", "acme", "fleet.txt", "--key-dir", "keys"),
    )


# ---------------------------------------------------------------------------
# configuration and start-up errors


def test_config_file_rules(fresh: Env, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    r = fresh.run("-c", str(missing), "org", "list")
    assert r.code == 2 and r.err.strip() == f"error: config file {missing} not found"
    # the environment variable names the file explicitly too
    r = fresh.run("org", "list")
    assert r.code == 2 and f"error: config file {fresh.config} not found" in r.err
    # a bad key is a configuration error naming it
    bad = tmp_path / "bad.toml"
    bad.write_text("[timing]\nhearbeat_interval = 1\n")
    r = fresh.run("-c", str(bad), "org", "list")
    assert r.code == 2 and "unknown setting 'timing.hearbeat_interval'" in r.err
    bad.write_text("[limits]\nmax_body_size = 100\n")
    r = fresh.run("-c", str(bad), "org", "list")
    assert r.code == 2 and "'limits.max_body_size' must be >= 40960" in r.err
    # an existing config but no database yet
    good = tmp_path / "good.toml"
    good.write_text(toml_document({"data_dir": tmp_path / "nodata"}, {}))
    db = tmp_path / "nodata" / "pushjobs.db"
    r = fresh.run("-c", str(good), "org", "list")
    assert r.code == 1
    assert r.err.strip() == f"error: {db} not found; run pushjobs-server init first"


def test_default_config_path_missing_means_defaults(fresh: Env, tmp_path: Path) -> None:
    if Path("/etc/pushjobs/server.toml").exists():
        pytest.skip("this machine has a real /etc/pushjobs/server.toml")
    r = fresh.run("--data-dir", str(tmp_path / "d"), "org", "list", config=False)
    assert r.code == 1
    assert f"{tmp_path / 'd' / 'pushjobs.db'} not found; run pushjobs-server init first" in r.err
    # the operator who ran `init -c FILE` and then forgot -c learns why the defaults applied
    note = "(no /etc/pushjobs/server.toml, so the built-in defaults apply; give -c FILE"
    assert note in r.err
    r = fresh.run("--data-dir", str(tmp_path / "d"), "run", config=False)
    assert r.code == 1 and note in r.err


def test_run_refuses_without_init(fresh: Env, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml_document({"data_dir": fresh.data}, {}))
    r = fresh.run("-c", str(config), "run")
    assert r.code == 1
    assert r.err.strip() == (
        f"error: {fresh.data / 'pushjobs.db'} not found; run pushjobs-server init first"
    )
    fresh.ok("-c", str(config), "init")
    (fresh.data / "server_key.pem").unlink()
    r = fresh.run("-c", str(config), "run")
    assert r.code == 1
    assert f"error: {fresh.data / 'server_key.pem'} not found; run pushjobs-server init" in r.err
    fresh.fails(
        2, "'http.port' must be from 0 to 65535", "-c", str(config), "run", "--http-port", "70000"
    )
    fresh.fails(2, "invalid choice", "-c", str(config), "run", "--log-level", "loud")


def test_run_serves_until_sigterm(env: Env) -> None:
    with env.config.open("a") as fh:
        fh.write("[zeromq]\nheartbeat_port = 0\ncommand_port = 0\n")
    info_file = env.data / "server.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushjobs.server", "run", "--http-port", "0"],
        cwd=env.root,
        env={**os.environ, "PUSHJOBS_SERVER_CONFIG": str(env.config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        info = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                info = json.loads(info_file.read_text())
                break
            except (OSError, ValueError):
                time.sleep(0.05)
        assert info is not None, proc.communicate(timeout=10)
        assert info["pid"] == proc.pid
        status = httpx.get(info["http_url"] + "/pushy/_status", timeout=10)
        assert status.status_code == 200
        assert status.json()["incarnation_id"] == info["incarnation_id"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert info["incarnation_id"] in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ---------------------------------------------------------------------------
# management flows


def test_org_user_client_group_flow(env: Env) -> None:
    assert env.ok("org", "create", "acme", "--full-name", "Acme Inc") == (
        "created organization 'acme'\n"
    )
    env.fails(1, "error: organization 'acme' already exists", "org", "create", "acme")
    env.fails(2, "invalid organization name 'ACME'", "org", "create", "ACME")
    env.fails(2, "invalid organization name '-x'", "org", "create", "--", "-x")
    env.ok("org", "create", "beta")
    assert env.query("org", "list") == "acme\nbeta\n"
    assert json.loads(env.query("org", "list", "--json")) == ["acme", "beta"]

    # users
    env.ok("user", "create", "alice", "--key-out", "alice.pem", "--org", "acme", "--admin")
    assert mode(env.root / "alice.pem") == 0o600
    pem = env.run("user", "create", "bob", "--key-out", "-", "--display-name", "Bob B")
    assert pem.code == 0 and pem.out.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert pem.out.rstrip().endswith("-----END RSA PRIVATE KEY-----")
    assert "created user 'bob'" in pem.err
    bob_key = load_private_key(pem.out.encode())
    env.fails(2, "one of the arguments --public-key --key-out is required", "user", "create", "x")
    env.fails(
        2, "not allowed with argument", "user", "create", "x", "--public-key", "a", "--key-out", "b"
    )
    env.fails(1, "error: user 'bob' already exists", "user", "create", "bob", "--key-out", "b2.pem")
    assert not (env.root / "b2.pem").exists()
    env.fails(2, "invalid user name 'Bob'", "user", "create", "Bob", "--key-out", "b.pem")
    env.fails(2, "--admin needs --org", "user", "create", "carl", "--key-out", "c.pem", "--admin")
    env.fails(
        1,
        "organization 'nope' not found",
        "user",
        "create",
        "carl",
        "--key-out",
        "c.pem",
        "--org",
        "nope",
    )
    env.fails(
        2, "already exists; not overwriting", "user", "create", "carl", "--key-out", "alice.pem"
    )
    env.fails(
        1, "is not a usable RSA public key", "user", "create", "carl", "--public-key", "alice.pem"
    )
    pub = env.root / "bob.pub"
    from pushjobs.protocol.keys import public_key_pem

    pub.write_text(public_key_pem(bob_key.public_key()))
    env.ok("user", "create", "carl", "--public-key", str(pub))
    assert env.query("user", "list") == "alice\nbob\ncarl\n"
    assert env.query("user", "list", "--org", "acme") == "alice\n"
    shown = json.loads(env.query("user", "show", "bob", "--json"))
    assert shown["display_name"] == "Bob B" and shown["organizations"] == []
    assert shown["key_fingerprint"] == key_fingerprint(bob_key.public_key())
    text = env.query("user", "show", "bob")
    assert "Bob B" in text and key_fingerprint(bob_key.public_key()) in text
    env.fails(1, "error: user 'zed' not found", "user", "show", "zed")

    env.ok("user", "set-key", "carl", "--key-out", "carl.pem")
    carl_key = load_private_key((env.root / "carl.pem").read_bytes())
    assert json.loads(env.query("user", "show", "carl", "--json"))["key_fingerprint"] == (
        key_fingerprint(carl_key.public_key())
    )

    # associations
    env.ok("org", "add-user", "acme", "bob")
    env.fails(
        1,
        "error: user 'bob' is already associated with organization 'acme'",
        *("org", "add-user", "acme", "bob"),
    )
    env.ok("org", "add-user", "acme", "bob", "--admin")
    env.ok("org", "add-user", "beta", "carl")
    org = json.loads(env.query("org", "show", "acme", "--json"))
    assert org["full_name"] == "Acme Inc"
    assert org["users"] == [{"name": "alice", "admin": True}, {"name": "bob", "admin": True}]
    assert org["client_count"] == 0 and org["groups"] == ["admins"]
    assert "alice (admin), bob (admin)" in env.query("org", "show", "acme")
    env.ok("org", "remove-user", "acme", "bob")
    env.fails(
        1,
        "error: user 'bob' is not associated with organization 'acme'",
        *("org", "remove-user", "acme", "bob"),
    )
    env.fails(1, "error: organization 'zz' not found", "org", "show", "zz")

    # clients
    env.ok("client", "create", "acme", "web1.example.com", "--key-out", "web1.pem")
    env.ok("client", "create", "acme", "Web-2:x_y", "--public-key", str(pub), "--admin")
    env.fails(
        1,
        "error: client 'web1.example.com' already exists in organization 'acme'",
        *("client", "create", "acme", "web1.example.com", "--key-out", "w.pem"),
    )
    env.fails(
        2, "invalid client name 'a b'", "client", "create", "acme", "a b", "--key-out", "w.pem"
    )
    env.fails(
        1, "organization 'nope' not found", "client", "create", "nope", "n1", "--key-out", "w.pem"
    )
    assert env.query("client", "list", "acme") == "Web-2:x_y\nweb1.example.com\n"
    web1 = load_private_key((env.root / "web1.pem").read_bytes())
    shown = json.loads(env.query("--json", "client", "show", "acme", "web1.example.com"))
    assert shown["key_fingerprint"] == key_fingerprint(web1.public_key())
    assert shown["organization"] == "acme"
    env.fails(
        1,
        "error: client 'web9' not found in organization 'acme'",
        *("client", "show", "acme", "web9"),
    )
    env.ok("client", "set-key", "acme", "web1.example.com", "--public-key", str(pub))
    shown = json.loads(env.query("--json", "client", "show", "acme", "web1.example.com"))
    assert shown["key_fingerprint"] == key_fingerprint(bob_key.public_key())

    # groups
    env.ok("group", "create", "acme", "pushy_job_writers")
    env.ok("group", "create", "acme", "ops")
    env.fails(
        1,
        "error: group 'ops' already exists in organization 'acme'",
        "group",
        "create",
        "acme",
        "ops",
    )
    env.fails(2, "invalid group name 'Ops'", "group", "create", "acme", "Ops")
    env.ok("group", "add", "acme", "ops", "--user", "alice", "--client", "web1.example.com")
    env.ok(
        *("group", "add", "acme", "pushy_job_writers", "--group", "ops", "--group", "admins"),
        *("--client", "Web-2:x_y"),
    )
    env.fails(
        1,
        "error: user 'carl' is not associated with organization 'acme'",
        *("group", "add", "acme", "ops", "--user", "carl"),
    )
    env.fails(
        1,
        "error: group 'nope' not found in organization 'acme'",
        "group",
        "add",
        "acme",
        "ops",
        "--group",
        "nope",
    )
    env.fails(2, "name at least one member", "group", "add", "acme", "ops")
    assert json.loads(env.query("group", "show", "acme", "pushy_job_writers", "--json")) == {
        "name": "pushy_job_writers",
        "users": [],
        "clients": ["Web-2:x_y"],
        "groups": ["admins", "ops"],
    }
    assert json.loads(env.query("group", "show", "acme", "admins", "--json")) == {
        "name": "admins",
        "users": ["alice"],
        "clients": ["Web-2:x_y"],
        "groups": [],
    }
    text = env.query("group", "show", "acme", "ops")
    assert "alice" in text and "web1.example.com" in text
    assert env.query("group", "list", "acme") == "admins\nops\npushy_job_writers\n"
    env.ok("group", "remove", "acme", "pushy_job_writers", "--group", "ops")
    env.fails(
        1,
        "error: group 'ops' is not a member of group 'pushy_job_writers'",
        *("group", "remove", "acme", "pushy_job_writers", "--group", "ops"),
    )
    env.fails(1, "error: group 'admins' cannot be deleted", "group", "delete", "acme", "admins")
    env.ok("group", "delete", "acme", "ops")
    env.fails(
        1, "error: group 'ops' not found in organization 'acme'", "group", "show", "acme", "ops"
    )

    # deleting a client and a user removes their memberships
    env.ok("client", "delete", "acme", "Web-2:x_y")
    env.ok("user", "delete", "alice")
    assert json.loads(env.query("group", "show", "acme", "admins", "--json")) == {
        "name": "admins",
        "users": [],
        "clients": [],
        "groups": [],
    }
    env.fails(1, "error: user 'alice' not found", "user", "delete", "alice")

    # deleting an organization needs --yes
    env.fails(2, "add --yes to confirm", "org", "delete", "acme")
    assert env.ok("org", "delete", "acme", "--yes") == "deleted organization 'acme'\n"
    assert env.query("org", "list") == "beta\n"
    assert env.query("user", "list") == "bob\ncarl\n"
    env.fails(1, "error: organization 'acme' not found", "client", "list", "acme")


def test_client_import_thousands_in_one_transaction(env: Env) -> None:
    env.ok("org", "create", "acme")
    env.ok("user", "create", "op", "--key-out", "op.pem")
    pub = env.root / "op.pub"
    from pushjobs.protocol.keys import public_key_pem

    pub.write_text(
        public_key_pem(load_private_key((env.root / "op.pem").read_bytes()).public_key())
    )
    names = [f"node-{i:05d}.example.com" for i in range(3000)]
    listing = ["# the fleet", ""] + [f"  {n}  " for n in names[:1500]] + ["", "# more"]
    listing += [f"{n}  # rack 2" for n in names[1500:]]
    fleet = env.root / "fleet.txt"
    fleet.write_text("\n".join(listing) + "\n")

    out = env.ok("client", "import", "acme", str(fleet), "--public-key", str(pub))
    assert "created 3000 clients" in out
    assert env.ok("client", "list", "acme").split() == names
    assert json.loads(env.ok("org", "show", "acme", "--json"))["client_count"] == 3000

    # an existing name: nothing created, the error names it
    more = env.root / "more.txt"
    more.write_text("new-1\nnode-00007.example.com\nnew-2\n")
    env.fails(
        1,
        "error: client 'node-00007.example.com' already exists in organization 'acme'",
        *("client", "import", "acme", str(more), "--public-key", str(pub)),
    )
    assert "new-1" not in env.ok("client", "list", "acme").split()
    out = env.ok(
        *("--json", "client", "import", "acme", str(more), "--public-key", str(pub)),
        "--skip-existing",
    )
    assert json.loads(out) == {"created": 2}

    # an invalid name: usage error naming it and its line, nothing created
    bad = env.root / "bad.txt"
    bad.write_text("ok-1\nbad name\n")
    env.fails(
        2,
        "invalid client name 'bad name' (line 2 of",
        *("client", "import", "acme", str(bad), "--public-key", str(pub)),
    )
    env.fails(
        1,
        "error: client 'dup' is listed twice",
        *("client", "import", "acme", "-", "--public-key", str(pub)),
        stdin="dup\ndup\n",
    )
    out = env.ok("client", "import", "acme", "-", "--public-key", str(pub), stdin="s1\ns2\n")
    assert "created 2 clients" in out
    assert env.ok("client", "list", "acme").split()[-2:] == ["s1", "s2"]
    assert "ok-1" not in env.ok("client", "list", "acme").split()
    assert "dup" not in env.ok("client", "list", "acme").split()


def test_client_import_with_key_dir(env: Env) -> None:
    env.ok("org", "create", "acme")
    fleet = env.root / "fleet.txt"
    fleet.write_text("n1\nn2\nn3\n")
    keys = env.root / "keys"
    r = env.run("client", "import", "acme", str(fleet), "--key-dir", str(keys))
    assert r.code == 0, r
    assert "created 3 clients" in r.out
    assert "3/3" in r.err  # progress on stderr
    for name in ("n1", "n2", "n3"):
        key_file = keys / f"{name}.pem"
        assert mode(key_file) == 0o600
        private = load_private_key(key_file.read_bytes())
        shown = json.loads(env.ok("--json", "client", "show", "acme", name))
        assert shown["key_fingerprint"] == key_fingerprint(private.public_key())
    # a key file that exists is never overwritten; nothing is created
    (env.root / "more.txt").write_text("n4\nn1\n")
    (keys / "n4.pem").write_text("keep me")
    env.fails(
        2,
        "already exists; not overwriting",
        *("client", "import", "acme", "more.txt", "--key-dir", str(keys), "--skip-existing"),
    )
    assert (keys / "n4.pem").read_text() == "keep me"
    assert "n4" not in env.ok("client", "list", "acme").split()


def test_job_prune(env: Env) -> None:
    env.ok("org", "create", "acme")
    env.ok("org", "create", "beta")
    store = SqliteStore(env.data / "pushjobs.db")
    now = time.time()
    try:
        for i, (org, status, age_days) in enumerate(
            [
                ("acme", "complete", 40),
                ("acme", "crashed", 31),
                ("acme", "running", 40),
                ("acme", "complete", 1),
                ("beta", "aborted", 40),
            ]
        ):
            o = store.get_org(org)
            assert o is not None
            created = now - age_days * 86400
            job = Job(f"{i:032x}", o.id, org, "true", status, 1, 60, "op", "user", created, created)
            store.create_job(job, ["n1", "n2"])
    finally:
        store.close()
    env.fails(2, "add --yes to confirm", "job", "prune", "--older-than", "30")
    env.fails(2, "--older-than", "job", "prune", "--yes")
    env.fails(
        1,
        "organization 'nope' not found",
        "job",
        "prune",
        "--older-than",
        "30",
        "--org",
        "nope",
        "--yes",
    )
    assert env.ok("job", "prune", "--older-than", "30", "--org", "acme", "--yes") == (
        "deleted 2 jobs\n"
    )
    assert json.loads(env.ok("--json", "job", "prune", "--older-than", "30", "--yes")) == {
        "deleted": 1
    }
    store = SqliteStore(env.data / "pushjobs.db")
    try:
        assert [j.status for j in store.list_jobs("acme")] == ["complete", "running"]
        assert store.list_jobs("beta") == []
        assert store.get_job_nodes(f"{0:032x}") == []
    finally:
        store.close()


def test_help_and_usage_errors(env: Env) -> None:
    out = env.ok("--help")
    for command in ("init", "run", "org", "user", "client", "group", "job"):
        assert command in out
    assert "--public-key" in env.ok("client", "import", "--help")
    r = env.run()
    assert r.code == 2 and "error:" in r.err
    r = env.run("org", "frobnicate")
    assert r.code == 2 and "invalid choice" in r.err
    proc = subprocess.run(
        [sys.executable, "-m", "pushjobs.server", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "pushjobs-server" in proc.stdout


# ---------------------------------------------------------------------------
# private key files are always new files (security issue 15, F9)


def test_key_out_never_follows_a_symlink_or_reuses_a_file(env: Env) -> None:
    env.ok("org", "create", "acme")
    env.ok("client", "create", "acme", "keep", "--key-out", "keep.pem")
    env.ok("user", "create", "ann", "--key-out", "ann.pem")
    before = json.loads(env.ok("--json", "client", "show", "acme", "keep"))["key_fingerprint"]
    victim = env.root / "victim"  # an empty file someone else cares about
    victim.write_text("")
    (env.root / "link.pem").symlink_to(victim)
    (env.root / "dangling.pem").symlink_to(env.root / "elsewhere.pem")
    (env.root / "empty.pem").write_text("")
    for target, message in (
        ("link.pem", "link.pem is a symbolic link; not writing a key file through it"),
        ("dangling.pem", "dangling.pem is a symbolic link"),
        ("empty.pem", "empty.pem already exists; not overwriting a key file"),
    ):
        for args in (
            ("client", "create", "acme", "web1", "--key-out", target),
            ("client", "set-key", "acme", "keep", "--key-out", target),
            ("user", "create", "bob", "--key-out", target),
            ("user", "set-key", "ann", "--key-out", target),
        ):
            r = env.run(*args)
            assert r.code == 2, (args, r)
            assert r.err.startswith(f"error: {message}"), r
            assert r.err.count("\n") == 1, r
    r = env.run(
        *("init", "--org", "beta", "--admin", "carl", "--admin-key-out", "link.pem"),
    )
    assert r.code == 2 and "link.pem is a symbolic link" in r.err, r
    assert victim.read_text() == ""
    assert not (env.root / "elsewhere.pem").exists()
    assert (env.root / "empty.pem").read_text() == ""
    assert "web1" not in env.ok("client", "list", "acme").split()
    assert "bob" not in env.ok("user", "list").split()
    after = json.loads(env.ok("--json", "client", "show", "acme", "keep"))["key_fingerprint"]
    assert after == before  # set-key refused before the key was replaced


def test_key_dir_must_be_private(env: Env) -> None:
    env.ok("org", "create", "acme")
    fleet = env.root / "fleet.txt"
    fleet.write_text("n1\nn2\n")

    def refused(key_dir: Path, message: str) -> None:
        r = env.run("client", "import", "acme", str(fleet), "--key-dir", str(key_dir))
        assert r.code == 2 and message in r.err, r
        assert r.err.count("\n") == 1, r
        assert not list(key_dir.glob("*.pem"))
        assert "n1" not in env.ok("client", "list", "acme").split()

    shared = env.root / "shared"
    shared.mkdir()
    for bits in (0o770, 0o702, 0o1777):
        shared.chmod(bits)
        refused(shared, f"{shared} is writable by group or others (mode {bits:04o})")
    if os.geteuid() == 0:
        foreign = env.root / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        refused(foreign, f"{foreign} is owned by another user (uid 65534)")

    # a symlink planted at one of the key files is refused, its target untouched
    mine = env.root / "mine"
    mine.mkdir(mode=0o700)
    victim = env.root / "victim"
    victim.write_text("")
    (mine / "n2.pem").symlink_to(victim)
    r = env.run("client", "import", "acme", str(fleet), "--key-dir", str(mine))
    assert r.code == 2 and f"{mine / 'n2.pem'} is a symbolic link" in r.err, r
    assert victim.read_text() == "" and not (mine / "n1.pem").exists()

    # a missing directory is created with mode 0700, whatever the umask
    new = env.root / "new" / "keys"
    old_umask = os.umask(0)
    try:
        r = env.run("client", "import", "acme", str(fleet), "--key-dir", str(new))
    finally:
        os.umask(old_umask)
    assert r.code == 0, r
    assert mode(new) == 0o700
    assert [mode(new / f"{n}.pem") for n in ("n1", "n2")] == [0o600, 0o600]


def test_names_with_a_trailing_newline_are_refused(fresh: Env) -> None:
    r = fresh.run(
        *("--data-dir", "data", "init", "--org", "acme\n", "--admin", "alice"),
        *("--admin-key-out", "a.pem"),
    )
    assert r.code == 2 and "invalid organization name 'acme\\n'" in r.err, r
    env = fresh
    env.ok("--data-dir", "data", "init")
    env.ok("org", "create", "acme")
    for args, kind in (
        (("org", "create", "beta\n"), "organization"),
        (("user", "create", "bob\n", "--key-out", "b.pem"), "user"),
        (("client", "create", "acme", "web1\n", "--key-out", "w.pem"), "client"),
        (("group", "create", "acme", "ops\n"), "group"),
    ):
        r = env.run(*args)
        assert r.code == 2, (args, r)
        assert r.err.startswith(f"error: invalid {kind} name '"), r
        assert r.err.count("\n") == 1, r  # the name is shown escaped, on one line
    assert env.ok("org", "list") == "acme\n"
    assert env.ok("user", "list") == ""
    assert env.ok("client", "list", "acme") == ""
    assert not (env.root / "b.pem").exists() and not (env.root / "w.pem").exists()

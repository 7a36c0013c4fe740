"""`pushjobs-server`: the operator commands (cli.md §11–§14).

`init` and `run`, and management of organizations, users, clients, groups and old jobs
directly in the server database (safe while the server runs: SQLite WAL).

Exit status: 0 success; 1 the operation failed (`error: <message>`); 2 usage or configuration
error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

from .config import (
    LOG_LEVELS,
    ConfigError,
    Settings,
    default_config_path,
    load_settings,
    machine_fqdn,
)
from .records import ADMINS_GROUP
from .store import StoreError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_ORG_OR_GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,254}$")
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,254}$")
_CLIENT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")

_NAME_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "organization": (
        _ORG_OR_GROUP_RE,
        "1-255 characters a-z 0-9 _ -, starting with a letter or digit",
    ),
    "group": (_ORG_OR_GROUP_RE, "1-255 characters a-z 0-9 _ -, starting with a letter or digit"),
    "user": (_USER_RE, "1-255 characters a-z 0-9 _ . -, starting with a letter or digit"),
    "client": (_CLIENT_RE, "1-255 characters A-Z a-z 0-9 _ . : -"),
}

RSA_BITS = 2048


class UsageError(Exception):
    """Bad command-line input: exit 2."""


class OperationFailed(Exception):
    """The operation failed: exit 1."""


# ---------------------------------------------------------------------------
# small helpers


def check_name(kind: str, name: str) -> str:
    """Return `name` if valid for `kind` (cli.md §14), else raise `UsageError`."""
    pattern, rule = _NAME_RULES[kind]
    if not pattern.match(name):
        raise UsageError(f"invalid {kind} name '{name}' ({rule})")
    return name


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 (also when the file existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def _check_key_out(path_text: str) -> Path | None:
    """Validate a `--key-out` target before anything is changed; None means stdout."""
    if path_text == "-":
        return None
    path = Path(path_text)
    if path.is_dir():
        raise OperationFailed(f"{path} is a directory")
    if path.exists() and path.stat().st_size > 0:
        raise OperationFailed(f"{path} already exists; not overwriting a key file")
    if not path.absolute().parent.is_dir():
        raise OperationFailed(f"directory {path.absolute().parent} not found")
    return path


def _generate_key_pem() -> tuple[str, bytes]:
    """A new RSA key pair as (public PEM, private PKCS#1 PEM)."""
    from pushjobs.protocol.keys import generate_rsa_key, private_key_pem, public_key_pem

    key = generate_rsa_key(RSA_BITS)
    return public_key_pem(key.public_key()), private_key_pem(key)


def _generate_key_pem_indexed(_: int) -> tuple[str, bytes]:
    return _generate_key_pem()


def _read_public_key(path_text: str) -> str:
    """Read and validate a public key file (`-` = stdin); return it as SubjectPublicKeyInfo PEM."""
    from pushjobs.protocol.errors import KeyFormatError
    from pushjobs.protocol.keys import load_public_key, public_key_pem

    try:
        data = sys.stdin.buffer.read() if path_text == "-" else Path(path_text).read_bytes()
    except OSError as exc:
        raise OperationFailed(
            f"cannot read public key file {path_text}: {exc.strerror or exc}"
        ) from None
    try:
        key = load_public_key(data)
    except KeyFormatError as exc:
        raise OperationFailed(f"{path_text} is not a usable RSA public key: {exc}") from None
    return public_key_pem(key)


def _fingerprint(public_pem: str) -> str:
    from pushjobs.protocol.keys import key_fingerprint, load_public_key

    try:
        return key_fingerprint(load_public_key(public_pem))
    except Exception:  # a damaged stored key must not break `show`
        return "(unreadable key)"


@dataclass
class KeyMaterial:
    """The public key to store, and the private key to write afterwards (when generated)."""

    public_pem: str
    private_pem: bytes | None = None
    out: Path | None = None  # None with private_pem set = stdout

    def deliver(self) -> None:
        """Write the generated private key (mode 0600, or to stdout)."""
        if self.private_pem is None:
            return
        if self.out is None:
            sys.stdout.write(self.private_pem.decode("ascii"))
            sys.stdout.flush()
        else:
            _write_private_file(self.out, self.private_pem)

    @property
    def to_stdout(self) -> bool:
        return self.private_pem is not None and self.out is None

    @property
    def written_note(self) -> str:
        """` (private key written to FILE)` when a key file was written, else empty."""
        if self.private_pem is None or self.out is None:
            return ""
        return f" (private key written to {self.out})"


def _key_material(args: argparse.Namespace) -> KeyMaterial:
    if args.public_key is not None:
        return KeyMaterial(_read_public_key(args.public_key))
    out = _check_key_out(args.key_out)
    public_pem, private_pem = _generate_key_pem()
    return KeyMaterial(public_pem, private_pem, out)


# ---------------------------------------------------------------------------
# command context


class Context:
    """Parsed arguments plus lazily loaded settings and store, and output helpers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self._store: Any = None
        self.config_path, self.config_explicit = default_config_path(getattr(args, "config", None))

    # -- settings and store -------------------------------------------------
    def overrides(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        data_dir = getattr(self.args, "data_dir", None)
        overrides: dict[str, Any] = {"data_dir": data_dir}
        overrides.update(extra or {})
        return overrides

    def settings(self, extra: dict[str, Any] | None = None) -> Settings:
        """Settings from the config file; a missing default file means all defaults."""
        path: Path | None = self.config_path
        if not self.config_path.exists():
            if self.config_explicit:
                raise ConfigError(f"config file {self.config_path} not found")
            path = None
        return load_settings(path, self.overrides(extra))

    def store(self) -> Any:
        """The opened store; the database must exist (created by `init`)."""
        if self._store is None:
            from .sqlite_store import SqliteStore

            settings = self.settings()
            db = settings.database_path
            if not db.exists():
                raise OperationFailed(
                    f"{db} not found; run pushjobs-server init first{self.no_config_note()}"
                )
            try:
                self._store = SqliteStore(db)
            except StoreError:
                raise
            except Exception as exc:
                raise OperationFailed(f"cannot open database {db}: {exc}") from None
        return self._store

    def no_config_note(self) -> str:
        """Why the defaults were used, when the default config file is missing (else empty)."""
        if self.config_explicit or self.config_path.exists():
            return ""
        return (
            f" (no {self.config_path}, so the built-in defaults apply; "
            "give -c FILE or set PUSHJOBS_SERVER_CONFIG)"
        )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- output ---------------------------------------------------------------
    def say(self, text: str, *, stderr: bool = False) -> None:
        print(text, file=sys.stderr if stderr else sys.stdout)

    def emit(self, data: Any, text: str | Iterable[str]) -> None:
        """Print `data` as JSON with --json, else the text lines."""
        if self.json:
            print(json.dumps(data, ensure_ascii=False, indent=2))
        elif isinstance(text, str):
            print(text)
        else:
            for line in text:
                print(line)


def _require(found: Any, message: str) -> Any:
    if found is None:
        raise OperationFailed(message)
    return found


def _org_or_fail(ctx: Context, org: str) -> Any:
    return _require(ctx.store().get_org(org), f"organization '{org}' not found")


# ---------------------------------------------------------------------------
# init and run


def _toml_string(text: str) -> str:
    # A JSON string is a valid TOML basic string for everything json.dumps emits.
    return json.dumps(text, ensure_ascii=False)


def _config_text(server_name: str, data_dir: Path | None) -> str:
    lines = [
        "# pushjobs server configuration (TOML). Every setting has a default;",
        "# unknown keys are an error. See `pushjobs-server --help` and docs/.",
        f"server_name = {_toml_string(server_name)}",
    ]
    if data_dir is not None:
        lines.append(f"data_dir = {_toml_string(str(data_dir))}")
    lines += [
        "",
        "# [http]",
        '# bind = "127.0.0.1"',
        "# port = 10003",
        "",
        "# [zeromq]",
        "# heartbeat_port = 10000",
        "# command_port = 10002",
        "",
    ]
    return "\n".join(lines)


def cmd_init(ctx: Context) -> int:
    args = ctx.args
    admin_opts = (args.org, args.admin, args.admin_key_out)
    if any(v is not None for v in admin_opts) and not all(v is not None for v in admin_opts):
        raise UsageError("--org, --admin and --admin-key-out must be given together")
    if args.org is not None:
        check_name("organization", args.org)
        check_name("user", args.admin)
    if args.server_name is not None and not args.server_name.strip():
        raise UsageError("--server-name must not be empty")

    path = ctx.config_path
    changed = False
    if not path.exists():
        changed = True
        server_name = args.server_name or machine_fqdn()
        data_dir = Path(args.data_dir).absolute() if args.data_dir else None
        try:
            path.absolute().parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(_config_text(server_name, data_dir))
        except OSError as exc:
            raise OperationFailed(
                f"cannot create config file {path}: {exc.strerror or exc}"
            ) from None
        ctx.say(f"created config file {path}")
    settings = load_settings(path, ctx.overrides())
    if args.server_name is not None and settings.server_name != args.server_name:
        ctx.say(
            f"note: {path} exists; server_name stays '{settings.server_name}' "
            "(edit the file to change it)",
            stderr=True,
        )

    data_dir = settings.data_dir
    if not data_dir.exists():
        try:
            changed = True
            data_dir.mkdir(parents=True, mode=0o700)
            os.chmod(data_dir, 0o700)
        except OSError as exc:
            raise OperationFailed(
                f"cannot create data directory {data_dir}: {exc.strerror or exc}"
            ) from None
        ctx.say(f"created data directory {data_dir}")
    elif not data_dir.is_dir():
        raise OperationFailed(f"data directory {data_dir} is not a directory")

    from .sqlite_store import SqliteStore

    db = settings.database_path
    db_existed = db.exists()
    try:
        store = SqliteStore(db)
    except StoreError:
        raise
    except Exception as exc:
        raise OperationFailed(f"cannot open database {db}: {exc}") from None
    ctx._store = store
    changed = changed or not db_existed or bool(store.applied_migrations)
    if not db_existed:
        os.chmod(db, 0o600)
        ctx.say(f"created database {db} (schema version {store.schema_version()})")
    elif store.applied_migrations:
        versions = ", ".join(str(v) for v in store.applied_migrations)
        ctx.say(f"updated database {db} (applied migrations {versions})")

    key_path = settings.server_key_path
    if not key_path.exists():
        changed = True
        _, private_pem = _generate_key_pem()
        try:
            _write_private_file(key_path, private_pem)
        except OSError as exc:
            raise OperationFailed(f"cannot write {key_path}: {exc.strerror or exc}") from None
        ctx.say(f"created server key {key_path} ({RSA_BITS} bits)")

    if not changed:
        ctx.say(f"{path}, {db} and {key_path} exist already; nothing to create")
    if args.org is not None:
        _init_admin(ctx, store, args.org, args.admin, args.admin_key_out)

    _print_next_steps(ctx, settings, args.org)
    return EXIT_OK


def _init_admin(ctx: Context, store: Any, org: str, user: str, key_out: str) -> None:
    if store.get_org(org) is None:
        store.create_org(org, org)
        ctx.say(f"created organization '{org}'")
    if store.get_user(user) is None:
        out = _check_key_out(key_out)
        public_pem, private_pem = _generate_key_pem()
        store.create_user(user, public_pem, user)
        material = KeyMaterial(public_pem, private_pem, out)
        material.deliver()
        where = "stdout" if out is None else str(out)
        ctx.say(f"created user '{user}' (private key written to {where})", stderr=out is None)
    else:
        ctx.say(
            f"user '{user}' already exists; its key is unchanged and {key_out} was not written",
            stderr=True,
        )
    if store.add_org_user(org, user, admin=True):
        ctx.say(f"user '{user}' is an administrator of organization '{org}'")


def _agent_server_url(settings: Settings, org: str | None) -> str:
    """The organization URL an agent on this machine would use (PORT when it is 0)."""
    scheme = "https" if settings.http.tls_cert else "http"
    host = settings.server_name
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    port = str(settings.http.port) if settings.http.port else "PORT"
    return f"{scheme}://{host}:{port}/organizations/{org or 'ORG'}"


def _print_next_steps(ctx: Context, settings: Settings, org: str | None) -> None:
    config = f" -c {ctx.config_path}" if ctx.config_explicit else ""
    url = _agent_server_url(settings, org)
    out = sys.stderr if (org and ctx.args.admin_key_out == "-") else sys.stdout
    lines = [
        "",
        "next steps:",
        f"  start the server:   pushjobs-server{config} run",
    ]
    if org is None:
        lines.append(
            f"  create an org:      pushjobs-server{config} org create ORG\n"
            f"  and its admin:      pushjobs-server{config} user create USER "
            "--key-out USER.pem --org ORG --admin"
        )
    lines += [
        f"  register a node:    pushjobs-server{config} client create {org or 'ORG'} NODE "
        "--key-out NODE.pem",
        "                      copy NODE.pem to the node as its client_key and set the agent's",
        f"                      server_url = {url}",
    ]
    if settings.http.port == 0:
        lines.append(
            "  note: [http] port is 0, so the server picks a free port when it starts; "
            "its log names it (http: listening on ...)"
        )
    if settings.http.bind in ("127.0.0.1", "localhost", "::1"):
        lines.append(
            "  note: HTTP listens on loopback only; set [http] bind (and TLS) or put a "
            "TLS reverse proxy in front so that nodes can reach it"
        )
    print("\n".join(lines), file=out)


def cmd_run(ctx: Context) -> int:
    args = ctx.args
    settings = ctx.settings(
        {"http.bind": args.http_bind, "http.port": args.http_port, "log_level": args.log_level}
    )
    for path in (settings.database_path, settings.server_key_path):
        if not path.exists():
            raise OperationFailed(
                f"{path} not found; run pushjobs-server init first{ctx.no_config_note()}"
            )
    from .runtime import run_server

    return int(run_server(settings))


# ---------------------------------------------------------------------------
# organizations


def cmd_org_create(ctx: Context) -> int:
    org = check_name("organization", ctx.args.org)
    full_name = ctx.args.full_name if ctx.args.full_name is not None else org
    ctx.store().create_org(org, full_name)
    ctx.say(f"created organization '{org}'")
    return EXIT_OK


def cmd_org_list(ctx: Context) -> int:
    orgs = ctx.store().list_orgs()
    ctx.emit([o.name for o in orgs], [o.name for o in orgs])
    return EXIT_OK


def cmd_org_show(ctx: Context) -> int:
    store = ctx.store()
    org = _org_or_fail(ctx, ctx.args.org)
    admins_group = store.get_group(org.name, ADMINS_GROUP)
    admins = set(admins_group.users) if admins_group else set()
    users = [u.name for u in store.list_users(org.name)]
    clients = store.count_clients(org.name)
    groups = store.list_groups(org.name)
    data = {
        "name": org.name,
        "full_name": org.full_name,
        "created_at": _utc(org.created_at),
        "users": [{"name": u, "admin": u in admins} for u in users],
        "client_count": clients,
        "groups": groups,
    }
    user_text = ", ".join(f"{u} (admin)" if u in admins else u for u in users) or "(none)"
    ctx.emit(
        data,
        [
            f"name:       {org.name}",
            f"full name:  {org.full_name}",
            f"created:    {_utc(org.created_at)}",
            f"users:      {user_text}",
            f"clients:    {clients}",
            f"groups:     {', '.join(groups) or '(none)'}",
        ],
    )
    return EXIT_OK


def _need_yes(ctx: Context, what: str) -> None:
    if not ctx.args.yes:
        raise UsageError(f"{what}; add --yes to confirm")


def cmd_org_delete(ctx: Context) -> int:
    org = check_name("organization", ctx.args.org)
    _need_yes(ctx, f"this deletes organization '{org}' with its clients, groups and jobs")
    ctx.store().delete_org(org)
    ctx.say(f"deleted organization '{org}'")
    return EXIT_OK


def cmd_org_add_user(ctx: Context) -> int:
    org, user = ctx.args.org, ctx.args.user
    if not ctx.store().add_org_user(org, user, admin=ctx.args.admin):
        if ctx.args.admin:
            raise OperationFailed(
                f"user '{user}' is already an administrator of organization '{org}'"
            )
        raise OperationFailed(f"user '{user}' is already associated with organization '{org}'")
    suffix = " as administrator" if ctx.args.admin else ""
    ctx.say(f"added user '{user}' to organization '{org}'{suffix}")
    return EXIT_OK


def cmd_org_remove_user(ctx: Context) -> int:
    org, user = ctx.args.org, ctx.args.user
    ctx.store().remove_org_user(org, user)
    ctx.say(f"removed user '{user}' from organization '{org}'")
    return EXIT_OK


# ---------------------------------------------------------------------------
# users


def cmd_user_create(ctx: Context) -> int:
    args = ctx.args
    user = check_name("user", args.user)
    if args.admin and args.org is None:
        raise UsageError("--admin needs --org")
    if args.org is not None:
        check_name("organization", args.org)
    store = ctx.store()
    if store.get_user(user) is not None:
        raise OperationFailed(f"user '{user}' already exists")
    if args.org is not None:
        _org_or_fail(ctx, args.org)
    material = _key_material(args)
    display_name = args.display_name if args.display_name is not None else user
    store.create_user(user, material.public_pem, display_name)
    if args.org is not None:
        store.add_org_user(args.org, user, admin=args.admin)
    material.deliver()
    extra = ""
    if args.org is not None:
        extra = f", {'administrator of' if args.admin else 'member of'} '{args.org}'"
    ctx.say(f"created user '{user}'{extra}{material.written_note}", stderr=material.to_stdout)
    return EXIT_OK


def cmd_user_list(ctx: Context) -> int:
    if ctx.args.org is not None:
        _org_or_fail(ctx, ctx.args.org)
    names = [u.name for u in ctx.store().list_users(ctx.args.org)]
    ctx.emit(names, names)
    return EXIT_OK


def cmd_user_show(ctx: Context) -> int:
    store = ctx.store()
    user = _require(store.get_user(ctx.args.user), f"user '{ctx.args.user}' not found")
    orgs = store.user_orgs(user.name)
    fingerprint = _fingerprint(user.public_key)
    data = {
        "name": user.name,
        "display_name": user.display_name,
        "organizations": orgs,
        "key_fingerprint": fingerprint,
        "created_at": _utc(user.created_at),
    }
    ctx.emit(
        data,
        [
            f"name:             {user.name}",
            f"display name:     {user.display_name}",
            f"organizations:    {', '.join(orgs) or '(none)'}",
            f"key fingerprint:  {fingerprint}",
            f"created:          {_utc(user.created_at)}",
        ],
    )
    return EXIT_OK


def cmd_user_set_key(ctx: Context) -> int:
    store = ctx.store()
    user = ctx.args.user
    _require(store.get_user(user), f"user '{user}' not found")
    material = _key_material(ctx.args)
    store.set_user_key(user, material.public_pem)
    material.deliver()
    ctx.say(f"replaced the key of user '{user}'{material.written_note}", stderr=material.to_stdout)
    return EXIT_OK


def cmd_user_delete(ctx: Context) -> int:
    ctx.store().delete_user(ctx.args.user)
    ctx.say(f"deleted user '{ctx.args.user}'")
    return EXIT_OK


# ---------------------------------------------------------------------------
# clients


def cmd_client_create(ctx: Context) -> int:
    args = ctx.args
    client = check_name("client", args.client)
    store = ctx.store()
    _org_or_fail(ctx, args.org)
    if store.get_client(args.org, client) is not None:
        raise OperationFailed(f"client '{client}' already exists in organization '{args.org}'")
    material = _key_material(args)
    store.create_client(args.org, client, material.public_pem, admin=args.admin)
    material.deliver()
    suffix = " as administrator" if args.admin else ""
    ctx.say(
        f"created client '{client}' in organization '{args.org}'{suffix}{material.written_note}",
        stderr=material.to_stdout,
    )
    return EXIT_OK


def _read_node_names(path_text: str) -> list[tuple[int, str]]:
    """(line number, name) for every non-blank, non-comment line of the file (`-` = stdin)."""
    try:
        text = sys.stdin.read() if path_text == "-" else Path(path_text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OperationFailed(f"cannot read {path_text}: {reason}") from None
    names: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if name:
            names.append((number, name))
    return names


class _Progress:
    """Progress of key generation on stderr: a rewritten line on a terminal, else every 10%."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.step = max(1, total // 10)
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        if self.tty:
            self.stream.write(f"\rgenerating keys: {done}/{self.total}")
            if done == self.total:
                self.stream.write("\n")
        elif done % self.step == 0 or done == self.total:
            elapsed = time.monotonic() - self.started
            self.stream.write(f"generated {done}/{self.total} keys ({elapsed:.1f} s)\n")
        self.stream.flush()


def _generate_keys(count: int) -> Iterable[tuple[str, bytes]]:
    """Yield `count` key pairs, in parallel worker processes when there are many."""
    workers = os.cpu_count() or 1
    if count < 8 or workers < 2:
        for _ in range(count):
            yield _generate_key_pem()
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_generate_key_pem_indexed, range(count), chunksize=4)


def cmd_client_import(ctx: Context) -> int:
    args = ctx.args
    org = check_name("organization", args.org)
    entries = _read_node_names(args.file)
    for number, name in entries:
        if not _CLIENT_RE.match(name):
            where = "stdin" if args.file == "-" else args.file
            raise UsageError(
                f"invalid client name '{name}' (line {number} of {where}); "
                f"{_NAME_RULES['client'][1]}"
            )
    store = ctx.store()
    _org_or_fail(ctx, org)
    existing = set(store.list_clients(org))
    names: list[str] = []
    seen: set[str] = set()
    for _, name in entries:
        if name in existing or name in seen:
            if args.skip_existing:
                continue
            if name in seen:
                raise OperationFailed(f"client '{name}' is listed twice in {args.file}")
            raise OperationFailed(
                f"client '{name}' already exists in organization '{org}' "
                "(--skip-existing registers the others)"
            )
        seen.add(name)
        names.append(name)

    written: list[Path] = []
    if args.public_key is not None:
        public_pem = _read_public_key(args.public_key)
        pairs = [(name, public_pem) for name in names]
    else:
        key_dir = Path(args.key_dir)
        if key_dir.exists() and not key_dir.is_dir():
            raise OperationFailed(f"{key_dir} is not a directory")
        for name in names:
            target = key_dir / f"{name}.pem"
            if target.exists() and target.stat().st_size > 0:
                raise OperationFailed(f"{target} already exists; not overwriting a key file")
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pairs = []
        progress = _Progress(len(names), sys.stderr)
        try:
            for done, (name, (public_pem, private_pem)) in enumerate(
                zip(names, _generate_keys(len(names)), strict=True), start=1
            ):
                target = key_dir / f"{name}.pem"
                _write_private_file(target, private_pem)
                written.append(target)
                pairs.append((name, public_pem))
                progress.update(done)
        except BaseException:
            _remove_files(written)
            raise
    try:
        created = store.create_clients(org, pairs, skip_existing=args.skip_existing)
    except BaseException:
        _remove_files(written)
        raise
    if ctx.json:
        print(json.dumps({"created": created}))
    else:
        ctx.say(f"created {created} client{'s' if created != 1 else ''} in organization '{org}'")
    return EXIT_OK


def _remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def cmd_client_list(ctx: Context) -> int:
    names = ctx.store().list_clients(ctx.args.org)
    ctx.emit(names, names)
    return EXIT_OK


def cmd_client_show(ctx: Context) -> int:
    store = ctx.store()
    org, name = ctx.args.org, ctx.args.client
    _org_or_fail(ctx, org)
    client = _require(
        store.get_client(org, name), f"client '{name}' not found in organization '{org}'"
    )
    fingerprint = _fingerprint(client.public_key)
    data = {
        "name": client.name,
        "organization": org,
        "key_fingerprint": fingerprint,
        "created_at": _utc(client.created_at),
    }
    ctx.emit(
        data,
        [
            f"name:             {client.name}",
            f"organization:     {org}",
            f"key fingerprint:  {fingerprint}",
            f"created:          {_utc(client.created_at)}",
        ],
    )
    return EXIT_OK


def cmd_client_set_key(ctx: Context) -> int:
    store = ctx.store()
    org, name = ctx.args.org, ctx.args.client
    _org_or_fail(ctx, org)
    _require(store.get_client(org, name), f"client '{name}' not found in organization '{org}'")
    material = _key_material(ctx.args)
    store.set_client_key(org, name, material.public_pem)
    material.deliver()
    ctx.say(
        f"replaced the key of client '{name}'{material.written_note}", stderr=material.to_stdout
    )
    return EXIT_OK


def cmd_client_delete(ctx: Context) -> int:
    org, name = ctx.args.org, ctx.args.client
    ctx.store().delete_client(org, name)
    ctx.say(f"deleted client '{name}' from organization '{org}'")
    return EXIT_OK


# ---------------------------------------------------------------------------
# groups


def cmd_group_create(ctx: Context) -> int:
    org, group = ctx.args.org, check_name("group", ctx.args.group)
    ctx.store().create_group(org, group)
    ctx.say(f"created group '{group}' in organization '{org}'")
    return EXIT_OK


def cmd_group_list(ctx: Context) -> int:
    names = ctx.store().list_groups(ctx.args.org)
    ctx.emit(names, names)
    return EXIT_OK


def cmd_group_show(ctx: Context) -> int:
    org, name = ctx.args.org, ctx.args.group
    _org_or_fail(ctx, org)
    group = _require(
        ctx.store().get_group(org, name), f"group '{name}' not found in organization '{org}'"
    )
    data = {"name": group.name, "users": group.users, "clients": group.clients}
    data["groups"] = group.groups
    lines = [f"group {group.name} (organization {org})"]
    for title, members in (("users", group.users), ("clients", group.clients)):
        lines.append(f"{title}:" + ("" if members else " (none)"))
        lines.extend(f"  {m}" for m in members)
    lines.append("groups:" + ("" if group.groups else " (none)"))
    lines.extend(f"  {m}" for m in group.groups)
    ctx.emit(data, lines)
    return EXIT_OK


def _members(ctx: Context) -> tuple[list[str], list[str], list[str]]:
    args = ctx.args
    users, clients, groups = args.user or [], args.client or [], args.group_member or []
    if not (users or clients or groups):
        raise UsageError("name at least one member with --user, --client or --group")
    return users, clients, groups


def _count(users: Sequence[str], clients: Sequence[str], groups: Sequence[str]) -> str:
    total = len(users) + len(clients) + len(groups)
    return f"{total} member{'s' if total != 1 else ''}"


def cmd_group_add(ctx: Context) -> int:
    org, group = ctx.args.org, ctx.args.group
    users, clients, groups = _members(ctx)
    ctx.store().add_group_members(org, group, users, clients, groups)
    ctx.say(f"added {_count(users, clients, groups)} to group '{group}'")
    return EXIT_OK


def cmd_group_remove(ctx: Context) -> int:
    org, group = ctx.args.org, ctx.args.group
    users, clients, groups = _members(ctx)
    ctx.store().remove_group_members(org, group, users, clients, groups)
    ctx.say(f"removed {_count(users, clients, groups)} from group '{group}'")
    return EXIT_OK


def cmd_group_delete(ctx: Context) -> int:
    org, group = ctx.args.org, ctx.args.group
    ctx.store().delete_group(org, group)
    ctx.say(f"deleted group '{group}' from organization '{org}'")
    return EXIT_OK


# ---------------------------------------------------------------------------
# jobs


def cmd_job_prune(ctx: Context) -> int:
    args = ctx.args
    days = args.older_than
    if days < 0 or days != days or days == float("inf"):
        raise UsageError(f"--older-than must be a number of days >= 0 (got {days})")
    _need_yes(ctx, "job prune deletes finished jobs with their output")
    cutoff = time.time() - days * 86400
    deleted = ctx.store().prune_jobs(cutoff, args.org)
    if ctx.json:
        print(json.dumps({"deleted": deleted}))
    else:
        ctx.say(f"deleted {deleted} job{'s' if deleted != 1 else ''}")
    return EXIT_OK


# ---------------------------------------------------------------------------
# argument parsing


class _Parser(argparse.ArgumentParser):
    """argparse with `error: <message>` on stderr and exit 2 (plus the usage line)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default,
        help="server configuration file (default: $PUSHJOBS_SERVER_CONFIG, "
        "else /etc/pushjobs/server.toml)",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", default=default, help="overrides data_dir of the config file"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="list/show commands print JSON",
    )


def _key_options(parser: argparse.ArgumentParser) -> None:
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument(
        "--public-key",
        metavar="FILE",
        help="store this public key (PEM: PUBLIC KEY, RSA PUBLIC KEY or a certificate)",
    )
    keys.add_argument(
        "--key-out",
        metavar="FILE",
        help="generate a 2048-bit key pair and write the private key here (mode 0600; - = stdout)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `pushjobs-server` argument parser."""
    common = _Parser(add_help=False)
    _global_options(common, suppress=True)

    parser = _Parser(
        prog="pushjobs-server",
        description="Run the pushjobs server and manage its organizations, users, clients, "
        "groups and jobs.",
        epilog="Management commands work on the database directly and may run while the "
        "server runs. Exit status: 0 success, 1 operation failed, 2 usage or configuration error.",
    )
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(
        sub: Any, name: str, handler: Callable[[Context], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def group(name: str, help_text: str) -> Any:
        p = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
        sub.required = True
        return sub

    # init / run
    p = command(commands, "init", cmd_init, "create the data directory, config, database and key")
    p.add_argument("--server-name", metavar="NAME", help="server_name for a new config file")
    p.add_argument("--org", metavar="ORG", help="also create this organization")
    p.add_argument("--admin", metavar="USER", help="also create this admin user of --org")
    p.add_argument("--admin-key-out", metavar="FILE", help="write the admin's new private key here")

    p = command(commands, "run", cmd_run, "run the server in the foreground")
    p.add_argument("--http-bind", metavar="ADDR", help="HTTP listen address")
    p.add_argument("--http-port", metavar="N", type=int, help="HTTP port (0 = any free port)")
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, type=str.lower, help="log level (default: info)"
    )

    # org
    org = group("org", "manage organizations")
    p = command(org, "create", cmd_org_create, "create an organization and its admins group")
    p.add_argument("org", metavar="ORG")
    p.add_argument("--full-name", metavar="TEXT", help="descriptive name (default: ORG)")
    command(org, "list", cmd_org_list, "list organization names")
    p = command(org, "show", cmd_org_show, "show an organization")
    p.add_argument("org", metavar="ORG")
    p = command(org, "delete", cmd_org_delete, "delete an organization and everything in it")
    p.add_argument("org", metavar="ORG")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p = command(org, "add-user", cmd_org_add_user, "associate a user with an organization")
    p.add_argument("org", metavar="ORG")
    p.add_argument("user", metavar="USER")
    p.add_argument("--admin", action="store_true", help="also add the user to admins")
    p = command(org, "remove-user", cmd_org_remove_user, "dissociate a user from an organization")
    p.add_argument("org", metavar="ORG")
    p.add_argument("user", metavar="USER")

    # user
    user = group("user", "manage users (global)")
    p = command(user, "create", cmd_user_create, "create a user")
    p.add_argument("user", metavar="USER")
    _key_options(p)
    p.add_argument("--display-name", metavar="TEXT", help="display name (default: USER)")
    p.add_argument("--org", metavar="ORG", help="associate the user with this organization")
    p.add_argument("--admin", action="store_true", help="make the user an admin of --org")
    p = command(user, "list", cmd_user_list, "list user names")
    p.add_argument("--org", metavar="ORG", help="only users associated with this organization")
    p = command(user, "show", cmd_user_show, "show a user")
    p.add_argument("user", metavar="USER")
    p = command(user, "set-key", cmd_user_set_key, "replace a user's key")
    p.add_argument("user", metavar="USER")
    _key_options(p)
    p = command(user, "delete", cmd_user_delete, "delete a user and its associations")
    p.add_argument("user", metavar="USER")

    # client
    client = group("client", "manage clients (nodes) of an organization")
    p = command(client, "create", cmd_client_create, "create a client")
    p.add_argument("org", metavar="ORG")
    p.add_argument("client", metavar="CLIENT")
    _key_options(p)
    p.add_argument("--admin", action="store_true", help="add the client to admins")
    p = command(client, "import", cmd_client_import, "create many clients in one transaction")
    p.add_argument("org", metavar="ORG")
    p.add_argument("file", metavar="FILE", help="one node name per line (- = stdin)")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument(
        "--key-dir", metavar="DIR", help="generate a key pair per node into DIR/<node>.pem"
    )
    keys.add_argument(
        "--public-key",
        metavar="FILE",
        help="give every node this public key (tests and benchmarks only)",
    )
    p.add_argument("--skip-existing", action="store_true", help="skip names that exist")
    p = command(client, "list", cmd_client_list, "list client names")
    p.add_argument("org", metavar="ORG")
    p = command(client, "show", cmd_client_show, "show a client")
    p.add_argument("org", metavar="ORG")
    p.add_argument("client", metavar="CLIENT")
    p = command(client, "set-key", cmd_client_set_key, "replace a client's key")
    p.add_argument("org", metavar="ORG")
    p.add_argument("client", metavar="CLIENT")
    _key_options(p)
    p = command(client, "delete", cmd_client_delete, "delete a client")
    p.add_argument("org", metavar="ORG")
    p.add_argument("client", metavar="CLIENT")

    # group
    grp = group("group", "manage groups of an organization")
    p = command(grp, "create", cmd_group_create, "create an empty group")
    p.add_argument("org", metavar="ORG")
    p.add_argument("group", metavar="GROUP")
    p = command(grp, "list", cmd_group_list, "list group names")
    p.add_argument("org", metavar="ORG")
    p = command(grp, "show", cmd_group_show, "show a group's members by kind")
    p.add_argument("org", metavar="ORG")
    p.add_argument("group", metavar="GROUP")
    for action, handler, verb in (
        ("add", cmd_group_add, "add members to a group"),
        ("remove", cmd_group_remove, "remove members from a group"),
    ):
        p = command(grp, action, handler, verb)
        p.add_argument("org", metavar="ORG")
        p.add_argument("group", metavar="GROUP")
        p.add_argument("--user", metavar="U", action="append", help="a user (repeatable)")
        p.add_argument("--client", metavar="C", action="append", help="a client (repeatable)")
        p.add_argument(
            "--group",
            dest="group_member",
            metavar="G",
            action="append",
            help="a group (repeatable)",
        )
    p = command(grp, "delete", cmd_group_delete, "delete a group (not admins)")
    p.add_argument("org", metavar="ORG")
    p.add_argument("group", metavar="GROUP")

    # job
    job = group("job", "manage stored jobs")
    p = command(job, "prune", cmd_job_prune, "delete finished jobs older than some days")
    p.add_argument("--older-than", metavar="DAYS", type=float, required=True, help="age in days")
    p.add_argument("--org", metavar="ORG", help="only jobs of this organization")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pushjobs-server`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(args)
    try:
        return args.handler(ctx)
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OperationFailed, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except sqlite3.Error as exc:
        print(f"error: database error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())

"""`pushjobs-server init` and `run` (cli.md §11–§12)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import tomli_w

from pushjobs.server.admin.context import (
    EXIT_OK,
    Context,
    OperationFailed,
    UsageError,
    check_name,
    os_failure,
)
from pushjobs.server.admin.keys import (
    RSA_BITS,
    generate_key_pem,
    new_key_material,
    write_private_file,
)
from pushjobs.server.config import Settings, load_settings, machine_fqdn
from pushjobs.server.store.opening import store_name

if TYPE_CHECKING:
    from pushjobs.server.store.interfaces import AccountStore


def _config_text(server_name: str, data_dir: Path | None) -> str:
    values: dict[str, str] = {"server_name": server_name}
    if data_dir is not None:
        values["data_dir"] = str(data_dir)
    lines = [
        "# pushjobs server configuration (TOML). Every setting has a default;",
        "# unknown keys are an error. See `pushjobs-server --help` and docs/.",
        tomli_w.dumps(values).rstrip("\n"),
    ]
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
            raise os_failure(f"cannot create config file {path}", exc) from None
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
            raise os_failure(f"cannot create data directory {data_dir}", exc) from None
        ctx.say(f"created data directory {data_dir}")
    elif not data_dir.is_dir():
        raise OperationFailed(f"data directory {data_dir} is not a directory")

    db = settings.database_path
    sqlite = settings.store.backend == "sqlite"
    db_existed = db.exists() if sqlite else True
    store = ctx.create_store(settings)
    name = store_name(settings)
    fresh = not db_existed or store.applied_migrations[:1] == [1]
    changed = changed or fresh or bool(store.applied_migrations)
    if fresh:
        if sqlite:
            os.chmod(db, 0o600)
        ctx.say(f"created {name} (schema version {store.schema_version()})")
    elif store.applied_migrations:
        versions = ", ".join(str(v) for v in store.applied_migrations)
        ctx.say(f"updated {name} (applied migrations {versions})")

    key_path = settings.server_key_path
    if not key_path.exists():
        changed = True
        _, private_pem = generate_key_pem()
        try:
            write_private_file(key_path, private_pem)
        except OSError as exc:
            raise os_failure(f"cannot write {key_path}", exc) from None
        ctx.say(f"created server key {key_path} ({RSA_BITS} bits)")

    if not changed:
        where = db if sqlite else f"the {name}"
        ctx.say(f"{path}, {where} and {key_path} exist already; nothing to create")
    if args.org is not None:
        _init_admin(ctx, store, args.org, args.admin, args.admin_key_out)

    _print_next_steps(ctx, settings, args.org)
    return EXIT_OK


def _init_admin(ctx: Context, store: AccountStore, org: str, user: str, key_out: str) -> None:
    if store.get_org(org) is None:
        store.create_org(org, org)
        ctx.say(f"created organization '{org}'")
    if store.get_user(user) is None:
        with new_key_material(key_out) as material:
            store.create_user(user, material.public_pem, user)
        where = "stdout" if material.out is None else str(material.out)
        ctx.say(
            f"created user '{user}' (private key written to {where})", stderr=material.to_stdout
        )
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
    required = [settings.server_key_path]
    if settings.store.backend == "sqlite":
        required.insert(0, settings.database_path)
    for path in required:
        if not path.exists():
            raise OperationFailed(
                f"{path} not found; run pushjobs-server init first{ctx.no_config_note()}"
            )
    from pushjobs.server.runtime import run_server

    return int(run_server(settings))

"""`pushjobs-server client`: the clients (nodes) of an organization, one or many (cli.md §13)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pushjobs.server.admin.context import (
    CLIENT_RE,
    EXIT_OK,
    NAME_RULES,
    Context,
    OperationFailed,
    UsageError,
    check_name,
    org_or_fail,
    plural,
    require,
    utc,
)
from pushjobs.server.admin.keys import (
    fingerprint_of,
    generate_key_files,
    key_material,
    read_public_key,
    remove_files,
)

if TYPE_CHECKING:
    from pushjobs.server.store.records import Client


def cmd_client_create(ctx: Context) -> int:
    args = ctx.args
    client = check_name("client", args.client)
    store = ctx.accounts()
    org_or_fail(ctx, args.org)
    if store.get_client(args.org, client) is not None:
        raise OperationFailed(f"client '{client}' already exists in organization '{args.org}'")
    with key_material(args) as material:
        store.create_client(args.org, client, material.public_pem, admin=args.admin)
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


def cmd_client_import(ctx: Context) -> int:
    args = ctx.args
    org = check_name("organization", args.org)
    entries = _read_node_names(args.file)
    for number, name in entries:
        if not CLIENT_RE.fullmatch(name):
            where = "stdin" if args.file == "-" else args.file
            raise UsageError(
                f"invalid client name {name!r} (line {number} of {where}); "
                f"{NAME_RULES['client'][1]}"
            )
    store = ctx.accounts()
    org_or_fail(ctx, org)
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
        public_pem = read_public_key(args.public_key)
        pairs = [(name, public_pem) for name in names]
    else:
        pairs, written = generate_key_files(Path(args.key_dir), names)
    try:
        created = store.create_clients(org, pairs, skip_existing=args.skip_existing)
    except BaseException:
        remove_files(written)
        raise
    ctx.result({"created": created}, f"created {plural(created, 'client')} in organization '{org}'")
    return EXIT_OK


def cmd_client_list(ctx: Context) -> int:
    names = ctx.accounts().list_clients(ctx.args.org)
    ctx.emit(names, names)
    return EXIT_OK


def _client_or_fail(ctx: Context, org: str, name: str) -> Client:
    org_or_fail(ctx, org)
    return require(
        ctx.accounts().get_client(org, name), f"client '{name}' not found in organization '{org}'"
    )


def cmd_client_show(ctx: Context) -> int:
    org, name = ctx.args.org, ctx.args.client
    client = _client_or_fail(ctx, org, name)
    fingerprint = fingerprint_of(client.public_key)
    data = {
        "name": client.name,
        "organization": org,
        "key_fingerprint": fingerprint,
        "created_at": utc(client.created_at),
    }
    ctx.show(
        data,
        [
            ("name", client.name),
            ("organization", org),
            ("key fingerprint", fingerprint),
            ("created", utc(client.created_at)),
        ],
    )
    return EXIT_OK


def cmd_client_set_key(ctx: Context) -> int:
    store = ctx.accounts()
    org, name = ctx.args.org, ctx.args.client
    _client_or_fail(ctx, org, name)
    with key_material(ctx.args) as material:
        store.set_client_key(org, name, material.public_pem)
    ctx.say(
        f"replaced the key of client '{name}'{material.written_note}", stderr=material.to_stdout
    )
    return EXIT_OK


def cmd_client_delete(ctx: Context) -> int:
    org, name = ctx.args.org, ctx.args.client
    ctx.accounts().delete_client(org, name)
    ctx.say(f"deleted client '{name}' from organization '{org}'")
    return EXIT_OK

"""`pushjobs-server`: the operator commands (cli.md §11–§14).

`init` and `run`, and management of organizations, users, clients, groups and old jobs
directly in the server database (safe while the server runs: SQLite WAL).

This module parses the arguments and dispatches to the commands: `setup` (init, run),
`accounts` (org, user, group), `clients` (client), `jobs` (job prune); their shared parts are
in `context` and `keys`.

Exit status: 0 success; 1 the operation failed (`error: <message>`); 2 usage or configuration
error.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeAlias

from pushjobs.protocol.version import installed_version
from pushjobs.server.admin.accounts import (
    cmd_group_add,
    cmd_group_create,
    cmd_group_delete,
    cmd_group_list,
    cmd_group_remove,
    cmd_group_show,
    cmd_org_add_user,
    cmd_org_create,
    cmd_org_delete,
    cmd_org_list,
    cmd_org_remove_user,
    cmd_org_show,
    cmd_user_create,
    cmd_user_delete,
    cmd_user_list,
    cmd_user_set_key,
    cmd_user_show,
)
from pushjobs.server.admin.clients import (
    cmd_client_create,
    cmd_client_delete,
    cmd_client_import,
    cmd_client_list,
    cmd_client_set_key,
    cmd_client_show,
)
from pushjobs.server.admin.context import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    OperationFailed,
    UsageError,
)
from pushjobs.server.admin.jobs import cmd_job_prune
from pushjobs.server.admin.setup import cmd_init, cmd_run
from pushjobs.server.admin.store_copy import cmd_store_copy
from pushjobs.server.config import LOG_LEVELS, ConfigError
from pushjobs.server.store.interfaces import StoreError


class _Parser(argparse.ArgumentParser):
    """argparse with `error: <message>` on stderr and exit 2 (plus the usage line)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


# What `add_subparsers` returns (argparse names it privately).
_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


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
        help="generate a 2048-bit key pair and write the private key to this new file "
        "(mode 0600; an existing file or symlink is refused; - = stdout)",
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
    parser.add_argument(
        "--version", action="version", version=f"pushjobs-server {installed_version()}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(
        sub: _Commands,
        name: str,
        handler: Callable[[Context], int],
        help_text: str,
        *positional: str,
    ) -> argparse.ArgumentParser:
        """Add a command; `positional` names its leading arguments (`org` → ORG)."""
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        for arg in positional:
            p.add_argument(arg, metavar=arg.upper())
        return p

    def group(name: str, help_text: str) -> _Commands:
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
    p = command(org, "create", cmd_org_create, "create an organization and its admins group", "org")
    p.add_argument("--full-name", metavar="TEXT", help="descriptive name (default: ORG)")
    command(org, "list", cmd_org_list, "list organization names")
    command(org, "show", cmd_org_show, "show an organization", "org")
    p = command(org, "delete", cmd_org_delete, "delete an organization and everything in it", "org")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p = command(
        org, "add-user", cmd_org_add_user, "associate a user with an organization", "org", "user"
    )
    p.add_argument("--admin", action="store_true", help="also add the user to admins")
    command(
        org,
        "remove-user",
        cmd_org_remove_user,
        "dissociate a user from an organization",
        "org",
        "user",
    )

    # user
    user = group("user", "manage users (global)")
    p = command(user, "create", cmd_user_create, "create a user", "user")
    _key_options(p)
    p.add_argument("--display-name", metavar="TEXT", help="display name (default: USER)")
    p.add_argument("--org", metavar="ORG", help="associate the user with this organization")
    p.add_argument("--admin", action="store_true", help="make the user an admin of --org")
    p = command(user, "list", cmd_user_list, "list user names")
    p.add_argument("--org", metavar="ORG", help="only users associated with this organization")
    command(user, "show", cmd_user_show, "show a user", "user")
    p = command(user, "set-key", cmd_user_set_key, "replace a user's key", "user")
    _key_options(p)
    command(user, "delete", cmd_user_delete, "delete a user and its associations", "user")

    # client
    client = group("client", "manage clients (nodes) of an organization")
    p = command(client, "create", cmd_client_create, "create a client", "org", "client")
    _key_options(p)
    p.add_argument("--admin", action="store_true", help="add the client to admins")
    p = command(
        client, "import", cmd_client_import, "create many clients in one transaction", "org"
    )
    p.add_argument("file", metavar="FILE", help="one node name per line (- = stdin)")
    keys = p.add_mutually_exclusive_group(required=True)
    keys.add_argument(
        "--key-dir",
        metavar="DIR",
        help="generate a key pair per node into DIR/<node>.pem (DIR is created with mode 0700; "
        "an existing DIR must be yours and not writable by group or others)",
    )
    keys.add_argument(
        "--public-key",
        metavar="FILE",
        help="give every node this public key (tests and benchmarks only)",
    )
    p.add_argument("--skip-existing", action="store_true", help="skip names that exist")
    command(client, "list", cmd_client_list, "list client names", "org")
    command(client, "show", cmd_client_show, "show a client", "org", "client")
    p = command(client, "set-key", cmd_client_set_key, "replace a client's key", "org", "client")
    _key_options(p)
    command(client, "delete", cmd_client_delete, "delete a client", "org", "client")

    # group
    grp = group("group", "manage groups of an organization")
    command(grp, "create", cmd_group_create, "create an empty group", "org", "group")
    command(grp, "list", cmd_group_list, "list group names", "org")
    command(grp, "show", cmd_group_show, "show a group's members by kind", "org", "group")
    for action, handler, verb in (
        ("add", cmd_group_add, "add members to a group"),
        ("remove", cmd_group_remove, "remove members from a group"),
    ):
        p = command(grp, action, handler, verb, "org", "group")
        p.add_argument("--user", metavar="U", action="append", help="a user (repeatable)")
        p.add_argument("--client", metavar="C", action="append", help="a client (repeatable)")
        p.add_argument(
            "--group",
            dest="group_member",
            metavar="G",
            action="append",
            help="a group (repeatable)",
        )
    command(grp, "delete", cmd_group_delete, "delete a group (not admins)", "org", "group")

    # store
    store = group("store", "manage the store itself")
    p = command(
        store, "copy", cmd_store_copy, "copy the SQLite store into an empty PostgreSQL database"
    )
    p.add_argument(
        "--to", metavar="URL", required=True, help="postgresql://USER@HOST:PORT/DATABASE"
    )

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

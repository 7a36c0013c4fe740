"""`pushjobs-server org`, `user` and `group`: organizations, users and groups (cli.md §13)."""

from __future__ import annotations

from pushjobs.server.admin.context import (
    EXIT_OK,
    Context,
    OperationFailed,
    UsageError,
    check_name,
    need_yes,
    org_or_fail,
    plural,
    require,
    utc,
)
from pushjobs.server.admin.keys import fingerprint_of, key_material
from pushjobs.server.store.records import ADMINS_GROUP

# ---------------------------------------------------------------------------
# organizations


def cmd_org_create(ctx: Context) -> int:
    org = check_name("organization", ctx.args.org)
    full_name = ctx.args.full_name if ctx.args.full_name is not None else org
    ctx.accounts().create_org(org, full_name)
    ctx.say(f"created organization '{org}'")
    return EXIT_OK


def cmd_org_list(ctx: Context) -> int:
    orgs = ctx.accounts().list_orgs()
    ctx.emit([o.name for o in orgs], [o.name for o in orgs])
    return EXIT_OK


def cmd_org_show(ctx: Context) -> int:
    store = ctx.accounts()
    org = org_or_fail(ctx, ctx.args.org)
    admins_group = store.get_group(org.name, ADMINS_GROUP)
    admins = set(admins_group.users) if admins_group else set()
    users = [u.name for u in store.list_users(org.name)]
    clients = store.count_clients(org.name)
    groups = store.list_groups(org.name)
    data = {
        "name": org.name,
        "full_name": org.full_name,
        "created_at": utc(org.created_at),
        "users": [{"name": u, "admin": u in admins} for u in users],
        "client_count": clients,
        "groups": groups,
    }
    user_text = ", ".join(f"{u} (admin)" if u in admins else u for u in users) or "(none)"
    ctx.show(
        data,
        [
            ("name", org.name),
            ("full name", org.full_name),
            ("created", utc(org.created_at)),
            ("users", user_text),
            ("clients", clients),
            ("groups", ", ".join(groups) or "(none)"),
        ],
    )
    return EXIT_OK


def cmd_org_delete(ctx: Context) -> int:
    org = check_name("organization", ctx.args.org)
    need_yes(ctx, f"this deletes organization '{org}' with its clients, groups and jobs")
    ctx.accounts().delete_org(org)
    ctx.say(f"deleted organization '{org}'")
    return EXIT_OK


def cmd_org_add_user(ctx: Context) -> int:
    org, user = ctx.args.org, ctx.args.user
    if not ctx.accounts().add_org_user(org, user, admin=ctx.args.admin):
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
    ctx.accounts().remove_org_user(org, user)
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
    store = ctx.accounts()
    if store.get_user(user) is not None:
        raise OperationFailed(f"user '{user}' already exists")
    if args.org is not None:
        org_or_fail(ctx, args.org)
    display_name = args.display_name if args.display_name is not None else user
    with key_material(args) as material:
        store.create_user(user, material.public_pem, display_name)
        if args.org is not None:
            store.add_org_user(args.org, user, admin=args.admin)
    extra = ""
    if args.org is not None:
        extra = f", {'administrator of' if args.admin else 'member of'} '{args.org}'"
    ctx.say(f"created user '{user}'{extra}{material.written_note}", stderr=material.to_stdout)
    return EXIT_OK


def cmd_user_list(ctx: Context) -> int:
    if ctx.args.org is not None:
        org_or_fail(ctx, ctx.args.org)
    names = [u.name for u in ctx.accounts().list_users(ctx.args.org)]
    ctx.emit(names, names)
    return EXIT_OK


def cmd_user_show(ctx: Context) -> int:
    store = ctx.accounts()
    user = require(store.get_user(ctx.args.user), f"user '{ctx.args.user}' not found")
    orgs = store.user_orgs(user.name)
    fingerprint = fingerprint_of(user.public_key)
    data = {
        "name": user.name,
        "display_name": user.display_name,
        "organizations": orgs,
        "key_fingerprint": fingerprint,
        "created_at": utc(user.created_at),
    }
    ctx.show(
        data,
        [
            ("name", user.name),
            ("display name", user.display_name),
            ("organizations", ", ".join(orgs) or "(none)"),
            ("key fingerprint", fingerprint),
            ("created", utc(user.created_at)),
        ],
    )
    return EXIT_OK


def cmd_user_set_key(ctx: Context) -> int:
    store = ctx.accounts()
    user = ctx.args.user
    require(store.get_user(user), f"user '{user}' not found")
    with key_material(ctx.args) as material:
        store.set_user_key(user, material.public_pem)
    ctx.say(f"replaced the key of user '{user}'{material.written_note}", stderr=material.to_stdout)
    return EXIT_OK


def cmd_user_delete(ctx: Context) -> int:
    ctx.accounts().delete_user(ctx.args.user)
    ctx.say(f"deleted user '{ctx.args.user}'")
    return EXIT_OK


# ---------------------------------------------------------------------------
# groups


def cmd_group_create(ctx: Context) -> int:
    org, group = ctx.args.org, check_name("group", ctx.args.group)
    ctx.accounts().create_group(org, group)
    ctx.say(f"created group '{group}' in organization '{org}'")
    return EXIT_OK


def cmd_group_list(ctx: Context) -> int:
    names = ctx.accounts().list_groups(ctx.args.org)
    ctx.emit(names, names)
    return EXIT_OK


def cmd_group_show(ctx: Context) -> int:
    org, name = ctx.args.org, ctx.args.group
    org_or_fail(ctx, org)
    group = require(
        ctx.accounts().get_group(org, name), f"group '{name}' not found in organization '{org}'"
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


def _change_members(ctx: Context, *, add: bool) -> int:
    """`group add` and `group remove`: the members named by --user, --client and --group."""
    args = ctx.args
    org, group = args.org, args.group
    users, clients, groups = args.user or [], args.client or [], args.group_member or []
    if not (users or clients or groups):
        raise UsageError("name at least one member with --user, --client or --group")
    store = ctx.accounts()
    change = store.add_group_members if add else store.remove_group_members
    change(org, group, users, clients, groups)
    count = plural(len(users) + len(clients) + len(groups), "member")
    ctx.say(f"added {count} to group '{group}'" if add else f"removed {count} from group '{group}'")
    return EXIT_OK


def cmd_group_add(ctx: Context) -> int:
    return _change_members(ctx, add=True)


def cmd_group_remove(ctx: Context) -> int:
    return _change_members(ctx, add=False)


def cmd_group_delete(ctx: Context) -> int:
    org, group = ctx.args.org, ctx.args.group
    ctx.accounts().delete_group(org, group)
    ctx.say(f"deleted group '{group}' from organization '{org}'")
    return EXIT_OK

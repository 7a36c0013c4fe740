"""`pushjobs-server job prune`: delete old finished jobs (cli.md §13)."""

from __future__ import annotations

import time

from pushjobs.server.admin.context import EXIT_OK, Context, UsageError, need_yes, plural


def cmd_job_prune(ctx: Context) -> int:
    args = ctx.args
    days = args.older_than
    if days < 0 or days != days or days == float("inf"):
        raise UsageError(f"--older-than must be a number of days >= 0 (got {days})")
    need_yes(ctx, "job prune deletes finished jobs with their output")
    cutoff = time.time() - days * 86400
    deleted = ctx.job_store().prune_jobs(cutoff, args.org)
    ctx.result({"deleted": deleted}, f"deleted {plural(deleted, 'job')}")
    return EXIT_OK

"""Operator commands of `pushjobs-server` (init, run, org, user, client, group, job)."""

"""Retention: pruning old finished jobs in the background (docs/operations.md §2)."""

"""Nodes: per-node state, the registry, liveness, session keys and key revocation."""

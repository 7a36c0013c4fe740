"""Several servers on one PostgreSQL database (docs/cluster.md)."""

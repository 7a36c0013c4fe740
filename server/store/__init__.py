"""Persistence: store interfaces, records, the SQLite store and its migrations."""

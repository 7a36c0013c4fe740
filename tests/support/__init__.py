"""Test support: `server` (a real server process and its fixtures) and `peer` (a scripted
protocol peer speaking the real ZeroMQ wire protocol)."""

"""Prometheus metrics of the server: its instruments, scrape-time collectors and `GET /metrics`."""

"""Test support: each helper that more than one test module needs lives here once.

- `server`: a real server process (`ServerProcess`) and its fixtures; `agents`: real agent
  processes and the `agent_factory` fixture; `cli`: running the `pushjobs` CLI.
- `peer`: a scripted protocol peer speaking the real ZeroMQ wire protocol; `peers`: peers
  brought to idle; `zmtp_raw`: a hand-written ZMTP client for attacks libzmq cannot send.
- `api`: Chef-signed HTTP (blocking and trio); `jobs`: jobs over it; `sse`: event streams.
- `waits`: polling until something is true; `procs`: OS processes by pid; `ports`: free ports.
- `toml`: TOML quoting for config files; `clients`: node names and pooled clients; `chef`: a
  fake Chef Server.
"""

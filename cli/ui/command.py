"""`pushjobs ui [--port N] [--no-browser]`: serve the dashboard on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import webbrowser
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

from pushjobs.cli.errors import CliError, UsageError

if TYPE_CHECKING:
    from pushjobs.cli.app import App

HOST = "127.0.0.1"  # never another address: the dashboard signs with the operator's key
NEEDS_EXTRA = "pushjobs ui needs the ui extra: pip install 'pushjobs[ui]'"


def org_of(server_url: str) -> str:
    """The organization name at the end of an org URL (`.../organizations/<org>`)."""
    segments = [s for s in urlsplit(server_url).path.split("/") if s]
    if len(segments) < 2 or segments[-2] != "organizations":
        raise UsageError(
            f"server_url must be the organization URL, like "
            f"https://push.example.com/organizations/ORG, not '{server_url}'"
        )
    return unquote(segments[-1])


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` (0 = a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {HOST}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def cmd_ui(app: App) -> int:
    try:
        import hypercorn  # noqa: F401
        import starlette  # noqa: F401
    except ImportError:
        raise CliError(NEEDS_EXTRA) from None
    from pushjobs.cli.client import load_signing_key
    from pushjobs.cli.settings import key_file_warning
    from pushjobs.cli.ui import guard

    settings = app.settings()
    org = org_of(settings.server_url)
    key = load_signing_key(settings)
    warning = key_file_warning(settings.key)
    if warning:
        app.warn(warning)
    port_wanted = int(getattr(app.args, "port", 0) or 0)
    if not 0 <= port_wanted <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, not {port_wanted}")
    sock = bind(port_wanted)
    port = sock.getsockname()[1]
    token = guard.new_token()
    url = f"http://{HOST}:{port}/?token={token}"
    app.print(f"pushjobs ui: {url}")
    app.note(
        f"serving organization '{org}' of {settings.server_url} as {settings.user}; "
        "press Ctrl-C to stop"
    )
    if not getattr(app.args, "no_browser", False) and has_desktop(app.environ, sys.platform):
        threading.Thread(target=_open_browser, args=(url,), daemon=True).start()
    _serve(sock, token, port, org, settings, key)
    return 0


def has_desktop(environ: Mapping[str, str], platform: str) -> bool:
    """Whether a graphical browser can open: always on macOS and Windows, with a display on
    other systems (without one, `webbrowser` would start a text browser on this terminal)."""
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def _open_browser(url: str) -> None:
    try:
        webbrowser.open(url)
    except Exception:  # no browser is fine: the URL is printed
        pass


def hypercorn_config(sock: socket.socket) -> Any:
    """hypercorn's settings serving on `sock`, which hypercorn then owns (and closes)."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    quiet = logging.getLogger("pushjobs.ui.http")  # not hypercorn's "Running on …" line
    quiet.setLevel(logging.WARNING)
    config.errorlog = quiet
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 75.0
    return config


def _serve(sock: socket.socket, token: str, port: int, org: str, settings: Any, key: Any) -> None:
    import trio
    from hypercorn.trio import serve

    from pushjobs.cli.ui.app import Session, create_app
    from pushjobs.cli.ui.proxy import Upstream

    config = hypercorn_config(sock)

    async def main() -> None:
        upstream = Upstream(settings, key)
        stop = trio.Event()
        try:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:

                    async def watch() -> None:
                        async for _ in signals:
                            stop.set()
                            return

                    nursery.start_soon(watch)
                    app = create_app(Session(token, port, org, upstream))
                    await serve(cast(Any, app), config, shutdown_trigger=stop.wait)
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await upstream.aclose()

    trio.run(main)

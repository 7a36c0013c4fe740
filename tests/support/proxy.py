"""A small real forwarding HTTP proxy on 127.0.0.1 that records what it was asked for:
absolute-URI requests (`GET http://host:port/path`) are forwarded, `CONNECT host:port` opens a
tunnel. Runs in threads of the test process."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import select
import socket
import threading
import urllib.parse
from collections.abc import Iterator


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RecordingProxy

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.record(f"GET {self.path}", self.headers.get("Proxy-Authorization"))
        parts = urllib.parse.urlsplit(self.path)
        if parts.scheme != "http" or not parts.hostname:
            self.send_error(400, "absolute URI expected")
            return
        upstream = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-authorization"}
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            upstream.request("GET", target, headers=headers)
            response = upstream.getresponse()
            body = response.read()
        except OSError as exc:
            self.send_error(502, str(exc))
            return
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        self.server.record(f"CONNECT {self.path}", self.headers.get("Proxy-Authorization"))
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=30)
        except (OSError, ValueError) as exc:
            self.send_error(502, str(exc))
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        with upstream:
            sockets = [self.connection, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    break
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)
        self.close_connection = True


class RecordingProxy(http.server.ThreadingHTTPServer):
    """`requests`: `"GET <absolute URI>"` / `"CONNECT host:port"`, in arrival order."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()

    def record(self, line: str, authorization: str | None) -> None:
        with self._lock:
            self.requests.append(line)
            self.authorizations.append(authorization)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def recording_proxy() -> Iterator[RecordingProxy]:
    proxy = RecordingProxy()
    thread = threading.Thread(target=proxy.serve_forever, name="test-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)

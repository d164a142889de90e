"""A stdlib HTTP proxy on 127.0.0.1 in front of an OpenAI-compatible server: the part that the counting proxy
(bench/_counting_proxy.py) and the tests' fault-injecting proxy (tests/fault_proxy.py) share.

A subclass implements `handle(handler, method)`: read the request with `read_body`, pass it on with `forward`,
answer with `send`. `up()` listens (on the same port again after `down()`); the object is a context manager.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_DROPPED_HEADERS = ("host", "connection", "content-length", "accept-encoding")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: ForwardingProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.proxy.handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.proxy.handle(self, "POST")


class ForwardingProxy:
    """`with SubclassProxy("http://127.0.0.1:PORT/v1", ...) as proxy: proxy.url` -> the proxy's base URL (the upstream's
    path)."""

    def __init__(self, upstream: str, upstream_timeout: float) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.upstream_timeout = upstream_timeout
        self.port = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def up(self) -> ForwardingProxy:
        """Listen: on a free port the first time, on the same port again after `down()`."""
        if self._server is not None:
            return self
        deadline = time.monotonic() + 10
        while True:
            try:
                server = _Server(("127.0.0.1", self.port), _Handler)
                break
            except OSError:  # the port of a closed listener may take a moment to be free again
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        server.proxy = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def down(self) -> None:
        """Stop listening: new connections are refused, like a killed server. Requests in progress finish."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> ForwardingProxy:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Answer one request."""
        raise NotImplementedError

    @staticmethod
    def read_body(handler: BaseHTTPRequestHandler) -> bytes:
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def forward(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) of the upstream's answer to this request; OSError if it gives none."""
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.upstream_timeout)
        try:
            headers = {key: value for key, value in handler.headers.items() if key.lower() not in _DROPPED_HEADERS}
            connection.request(method, handler.path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", "application/json"), response.read()
        finally:
            connection.close()

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, content_type: str = "application/json",
             extra: Mapping[str, str] | None = None) -> None:
        """Answer in full and close the connection."""
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("Connection", "close")
        for key, value in (extra or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()
        handler.close_connection = True

"""Helpers shared by the UI tests: a model-run counting embedder and a local HTTP file server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path


class SpyEmbedder:
    """Wraps a real embedder and counts model runs (``embed_arrays`` calls)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()

    def embed_arrays(self, batch):
        with self._lock:
            self.calls += 1
        return self.inner.embed_arrays(batch)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # No reverse lookup of the address (HTTPServer.server_bind calls getfqdn).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (random port) in a daemon thread; yields the base URL."""
    server = _QuietServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""The fakes and local servers the tests share: a model-free embedder, a model-run counting spy,
quiet HTTP servers on 127.0.0.1 and the web app served from a thread. Every wait is bounded."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

WAIT_S = 30  # the longest a server may take to start


class FakeEmbedder:
    """A model-free stand-in for ``app.core.embed.Embedder``: deterministic, content-dependent vectors.

    Each vector is the image's 8x8-pooled preprocessed pixels (first ``dim`` values) plus ``salt``,
    L2-normalised, so identical images give identical vectors and different "weights" (salt)
    give different ones. ``dim`` 2048 stands in for ResNet-50, 1280 for EfficientNet-Lite0.
    ``calls``/``rows`` count what went through the "model".
    """

    def __init__(self, weights_id: str = "fake/v1", salt: float = 0.0, dim: int = 2048) -> None:
        from types import SimpleNamespace

        from app.core.models import MODELS

        self.model = next(m for m in MODELS.values() if m.dim == dim and m.input_size == 224)
        self.dim = dim
        self.weights_id = weights_id
        self.salt = salt
        self.spec = SimpleNamespace(kind="fake", path=None, untrained=True, arg=lambda: "fake")
        self.engine = "fake"
        self.notices: list[str] = []
        self.calls = 0
        self.rows = 0

    @property
    def preprocessing(self):
        return self.model.preprocessing

    def preprocess(self, img):
        from app.core.preprocess import preprocess

        return preprocess(img, self.model.preprocessing)

    def load(self) -> "FakeEmbedder":
        return self

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        assert batch.ndim == 4 and batch.shape[1:] == (3, 224, 224), batch.shape
        self.calls += 1
        self.rows += len(batch)
        pooled = batch.reshape(len(batch), 3, 28, 8, 28, 8).mean(axis=(3, 5)).reshape(len(batch), -1)[:, : self.dim]
        v = pooled.astype(np.float64) + self.salt
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class SpyEmbedder:
    """Wraps an embedder and counts what reaches the model: ``calls`` (``embed_arrays``) and ``loads``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self.loads = 0
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            self.loads += 1
        self.inner.load()
        return self

    def embed_arrays(self, batch):
        with self._lock:
            self.calls += 1
        return self.inner.embed_arrays(batch)

    def __getattr__(self, name):  # model, preprocessing, weights_id... from the wrapped embedder
        return getattr(self.inner, name)


class QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that logs nothing and skips the reverse lookup of its address."""

    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn: no name resolution in tests.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


@contextlib.contextmanager
def serving(httpd: socketserver.BaseServer) -> Iterator[socketserver.BaseServer]:
    """Run ``httpd.serve_forever`` in a daemon thread for the ``with`` block, then shut it down."""
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (random port); yields the base URL."""
    httpd = QuietHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFileHandler, directory=str(root)))
    with serving(httpd):
        yield f"http://127.0.0.1:{httpd.server_address[1]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(config, service) -> Iterator[str]:
    """The real web app (``app.web.server``) for ``service``, served from a thread on
    ``config.port``; yields its URL once it answers."""
    from app.web import create_app, make_server

    app, _ = create_app(config, service)
    server = make_server(app, config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the app did not start"
    try:
        yield f"http://127.0.0.1:{config.port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

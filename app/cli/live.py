"""Live servers for the measuring commands (``bench-ui``, ``load``): the app and a file server as
subprocesses on 127.0.0.1, each killed on the way out of its ``with`` block; every wait is bounded."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from app.config import PROJECT_ROOT
from app.errors import AppError


class AppProcess:
    """``python -m app`` on a free 127.0.0.1 port, for the ``with`` block; killed on the way out."""

    def __init__(self, config, floor_images: Path | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "app", "--port", str(self.port), "--indexes", str(config.indexes_dir),
                    "--features", str(config.features_dir), "--model", config.model, "--weights", str(config.weights),
                    "--allow-loopback-urls", *extra]
        if floor_images is not None:  # Gradio's floor instead (app.metrics.gradio_floor)
            self.cmd = [sys.executable, "-m", "app.metrics.gradio_floor", "--port", str(self.port),
                        "--images", str(floor_images)]

    def __enter__(self) -> str:
        # The app's log goes to a file: a pipe nobody reads would stall a long run once it filled up.
        self.log = tempfile.TemporaryFile(mode="w+", prefix="ris-app-log-")
        self.proc = subprocess.Popen(self.cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        url = f"http://127.0.0.1:{self.port}/"
        wait_http(url, self.proc, log=self.log)
        return url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


class FileServer:
    """``python -m http.server`` for the URL path, on 127.0.0.1 only."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()

    def __enter__(self) -> str:
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                      "--directory", str(self.root)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{self.port}"
        wait_http(url + "/", self.proc)
        return url

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0, log=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = ""
            if log is not None:
                log.seek(0)
                err = log.read()
            raise AppError(f"{url} did not start (exit {proc.returncode}): {err.strip()[-300:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AppError(f"{url} did not answer within {timeout:.0f} s.")

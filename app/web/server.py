"""Serving the web app: a FastAPI app with the Gradio UI mounted at ``/``, run by uvicorn.

Security decisions (see the README's "Using the app"):

* Binds 127.0.0.1 by default. Any other address requires ``--auth`` (start-up is refused
  otherwise); there is never a public share link (``share=True`` is not used).
* Every request passes :class:`app.web.guard.RequestGuard` first: the Host header (DNS rebinding),
  the Origin of state-changing requests (cross-site uploads and queue joins), the body size
  (413 before the body is read) and Gradio's URL-proxy routes.
* Files: Gradio's file route serves its own private temp folder (uploads) and, as static paths,
  the thumbnail cache and the app's query copies (folders that hold nothing else). A collection's
  image folder is never served: results, examples and history are thumbnails, and the query image
  and the compare view show previews, all re-encoded by the app (:mod:`app.core.thumbnails`).
  Gradio's file route resolves symbolic links before it checks a path against those folders.
* Errors: ``show_error=False`` and every handler catches its errors (:func:`app.web.guarded.guarded`), so no
  traceback reaches the browser; unexpected ones are logged here.
* Limits: uploads up to ``max_upload_mb`` (``max_file_size``), a bounded queue (``queue_size``), and
  the sessions whose state is kept in memory (``state_sessions``).

Imports: ``app/__main__.py`` imports this module to parse its flags, so the page and the service are
imported when the app is made, not here: ``import app.web.server`` takes about 0.1 s, ``import
app.web.layout`` (Gradio) about 6 s and ``import app.service.search`` about 0.5 s more (``/usr/bin/time
python -c "import MODULE"``, this machine); uvicorn and FastAPI (0.15 s, 0.6 s) likewise.
"""

from __future__ import annotations

import atexit
import html
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable

from PIL import Image

from app.config import Config
from app.web.guard import RequestGuard, allowed_hosts, is_loopback

log = logging.getLogger(__name__)

AUTH_ENV = "RIS_AUTH"
__all__ = ["AUTH_ENV", "StartupError", "allowed_hosts", "check_bind", "create_app", "is_loopback", "make_server",
           "parse_auth", "serve", "warm_up"]


class StartupError(Exception):
    """The server cannot start with these settings (message for the command line)."""


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` -> (user, password); None or empty -> None."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise StartupError("--auth must look like USER:PASSWORD (both non-empty).")
    return user, password


def _private_gradio_temp_dir() -> str:
    """Gradio keeps uploads and rendered files in GRADIO_TEMP_DIR; use a private one per process."""
    current = os.environ.get("GRADIO_TEMP_DIR")
    if current:
        return current
    path = tempfile.mkdtemp(prefix="ris-gradio-")
    atexit.register(shutil.rmtree, path, True)
    os.environ["GRADIO_TEMP_DIR"] = path
    return path


def create_app(config: Config, service=None, *, allowed_extra: Iterable[str] = ()):
    """The ASGI app: FastAPI + host check + the Gradio UI. Returns (app, handlers)."""
    temp_dir = _private_gradio_temp_dir()  # before any Gradio component exists

    import gradio as gr  # here, not at the top: see the module docstring (import costs)
    from fastapi import FastAPI

    from app.service.search import SearchService
    from app.web.assets import CSS, JS, theme
    from app.web.handlers import Handlers
    from app.web.layout import build_ui

    service = service or SearchService(config)
    handlers = Handlers(service, config, work_dir=Path(temp_dir) / "queries",
                        toast=lambda text: gr.Warning(html.escape(text), duration=8))
    gr.set_static_paths(handlers.collections.served_folders())
    demo = build_ui(handlers)
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    # Gradio keeps a session's state (about 130 KB of per-session config, plus ours) for every session it
    # has seen, 10,000 by default; each API call through the REST route is a session of its own, so memory
    # grew with every call. The oldest sessions beyond this many are let go.
    demo.state_session_capacity = config.state_sessions
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestGuard, allowed=allowed_hosts(config.host, config.port, allowed_extra),
                       max_body=config.max_upload_bytes)
    gr.mount_gradio_app(
        app, demo, path="/", server_name=config.host, server_port=config.port,
        auth=config.auth, allowed_paths=[], max_file_size=config.max_upload_bytes,
        show_error=False, footer_links=["gradio", "settings"], run_history=False, ssr_mode=False,
        mcp_server=False, pwa=False, theme=theme(), css=CSS, js=JS,
    )
    return app, handlers


def check_bind(config: Config) -> None:
    if not is_loopback(config.host) and config.auth is None:
        raise StartupError(
            f"Refusing to listen on {config.host} without a password: anyone on the network could use the app. "
            f"Add --auth USER:PASSWORD (or set {AUTH_ENV}), or bind 127.0.0.1."
        )


def warm_up(service) -> None:
    """Load the collections and the model, and run the model once, so the first query is fast."""
    service.collections()
    service.embedder.load()
    service.embed_image(Image.new("RGB", (256, 256), (127, 127, 127)))


def make_server(app, config: Config):
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                host = f"[{config.host}]" if ":" in config.host else config.host
                print(f"Reverse image search is ready: http://{host}:{config.port}/", flush=True)

    return Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                                 server_header=False, proxy_headers=False, timeout_graceful_shutdown=3))


def serve(config: Config, *, allowed_extra: Iterable[str] = ()) -> int:
    """Check the settings, load everything once, then serve until interrupted."""
    from app.service.search import SearchService  # here, not at the top: see the module docstring

    check_bind(config)
    t0 = time.perf_counter()
    service = SearchService(config)
    warm_up(service)
    app, handlers = create_app(config, service, allowed_extra=allowed_extra)
    ready = handlers.ctx.ready()
    print(f"Collections ready: {', '.join(ready) if ready else 'none (the page shows how to build one)'}; "
          f"engine {service.embedder.engine}; loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    for notice in service.notices():
        print(f"note: {notice}", flush=True)
    server = make_server(app, config)
    try:
        server.run()
    finally:
        handlers.library.watchers.stop_all()  # folders watched from the Collections tab
    return 0 if server.started else 1

"""The programmatic API: the app's named Gradio endpoints, for ``gradio_client`` and plain HTTP.

Every endpoint answers JSON-able values. A search answers::

    {"collection": "caltech101", "model": "efficientnet-lite0", "weights_id": "...", "engine": "...",
     "k": 5, "query": "...", "timings_ms": {"decode": ..., "embed": ..., "search": ..., "total": ...},
     "hits": [{"rank": 1, "id": 42, "label": "cup", "score": 0.91, "path": "cup/image_0001.jpg",
               "thumbnail_url": "/gradio_api/file=..."}, ...]}

``path`` is relative to the collection's folder; ``thumbnail_url`` is relative to the app's address
(a 256 px JPEG the app renders: the collection's own files are never served). Errors (not an image,
no such collection or id, a refused URL) reach the client as a Gradio error carrying the app's
one-line message (``gradio_client`` raises ``AppError`` with it). The endpoints and their names are
wired in :func:`app.web.layout.build_api`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from app.errors import AppError
from app.net.fetch import fetch_url
from app.service.search import SearchResult
from app.web.common import Context

log = logging.getLogger(__name__)

API_ENDPOINTS = ("search_file", "search_url", "search_item", "collections")


def api_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Typed errors become a Gradio error with the app's message; anything else a generic one (logged)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import gradio as gr

        try:
            return fn(*args, **kwargs)
        except AppError as exc:
            raise gr.Error(exc.user_message(), print_exception=False) from None
        except Exception:  # noqa: BLE001 - the client gets a message, the log gets the traceback
            log.exception("unexpected error in the API (%s)", fn.__name__)
            raise gr.Error("Something went wrong. The details are in the server log.", print_exception=False) from None

    return wrapper


class ApiHandlers:
    """What the API endpoints do; the same service and rules as the UI."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def search_file(self, image: str | bytes | None, collection: str, k: int) -> dict[str, Any]:
        """Search ``collection`` for the ``k`` images most similar to an uploaded image file."""
        if image is None:
            raise _missing("an image file")
        name = self.ctx.require(collection)
        q = self.ctx.prepare(image)
        result = self.ctx.service.search_image(q.image, name, k, key=q.key)
        return self.answer(result, "uploaded image")

    def search_url(self, url: str, collection: str, k: int) -> dict[str, Any]:
        """Fetch an image URL (http/https; private and local addresses are refused) and search with it."""
        url = (url or "").strip()
        if not url:
            raise _missing("an image URL")
        name = self.ctx.require(collection)
        config = self.ctx.config
        data = fetch_url(url, allow_loopback=config.allow_loopback_urls, max_bytes=config.max_upload_bytes)
        q = self.ctx.prepare(data)
        return self.answer(self.ctx.service.search_image(q.image, name, k, key=q.key), url)

    def search_item(self, collection: str, item_id: int, k: int) -> dict[str, Any]:
        """Search with an item of ``collection`` (its stored vector: no model run)."""
        name = self.ctx.require(collection)
        result = self.ctx.service.search_item(name, int(item_id), k)
        return self.answer(result, f"item {int(item_id)} of {name}")

    def collections(self) -> list[dict[str, Any]]:
        """Every collection: name, count, model, and status ("ready", "not built", "built with another model")."""
        running = self.ctx.running_model
        out = []
        for info in self.ctx.service.collections():
            if info.ready:
                status = "ready"
            elif info.model and info.model != running:
                status = "built with another model"
            else:
                status = "not built"
            out.append({"name": info.name, "count": info.size, "model": info.model or None, "kind": info.kind,
                        "status": status, "build_command": None if info.ready else info.build_command})
        return out

    def answer(self, result: SearchResult, query: str) -> dict[str, Any]:
        embedder = self.ctx.service.embedder
        hits = [{"rank": h.rank, "id": h.id, "label": h.label, "score": round(h.score, 6), "path": h.path,
                 "thumbnail_url": f"/gradio_api/file={self.ctx.thumbs.thumb(h.abs_path).path}"}
                for h in result.hits]
        return {"collection": result.collection, "model": embedder.model.name, "weights_id": embedder.weights_id,
                "engine": embedder.engine, "k": len(hits), "query": query,
                "timings_ms": {"decode": round(result.decode_ms, 3), "embed": round(result.embed_ms, 3),
                               "search": round(result.search_ms, 3), "total": round(result.total_ms, 3)},
                "hits": hits}


def _missing(what: str) -> AppError:
    return AppError(f"Give {what}.")

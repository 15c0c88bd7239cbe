"""The programmatic API: the app's named Gradio endpoints, for ``gradio_client`` and plain HTTP.

Every endpoint answers JSON-able values. A search answers::

    {"collection": "caltech101", "model": "efficientnet-lite0", "weights_id": "...", "engine": "...",
     "k": 5, "query": "...", "timings_ms": {"hash": ..., "decode": ..., "copy": ..., "preprocess": ...,
                                          "embed": ..., "search": ..., "total": ...},
     "hits": [{"rank": 1, "id": 42, "label": "cup", "score": 0.91, "band": "very similar",
               "file": "cup/image_0001.jpg", "meta": {"taken": "2021-06-01T12:00:00", "camera": "..."},
               "thumbnail_url": "/gradio_api/file=..."}, ...]}

The search endpoints take optional limits after their old arguments (``folder``, ``since``, ``until``:
YYYY-MM-DD, ``camera``, ``min_band``: "same photo", "very similar" or "similar"; empty: no limit); a
limited search's answer adds ``filter`` (the limits) and ``matching`` (how many items passed them).

``file`` is the image's path relative to the collection's folder; ``thumbnail_url`` is relative to
the app's address (a 256 px JPEG the app renders: the collection's own files are never served). No
answer holds a ``path`` key: ``gradio_client`` takes any ``{"path": str}`` for a file of the server's to
download, which a default ``Client(url)`` (``download_files`` on) would then fail to fetch. Errors (not an image,
no such collection or id, a refused URL) reach the client as a Gradio error carrying the app's
one-line message (``gradio_client`` raises ``AppError`` with it). The endpoints and their names are
registered by :func:`wire_api`, which :func:`app.web.layout.build_ui` calls; every other event of the
page is private. ``/duplicates`` (collection, tier, strictness) answers a collection's duplicate groups
(:meth:`app.web.duplicates.DuplicateHandlers.groups_json`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import gradio as gr

from app.errors import AppError
from app.net.fetch import fetch_url
from app.service.filters import SearchFilter, parse_filter
from app.service.search import QueryResult
from app.web.components import QueryImageInput
from app.web.context import Context
from app.web.duplicates import DuplicateHandlers
from app.web.library import LibraryHandlers

log = logging.getLogger(__name__)


def client_safe(value: Any) -> Any:
    """``value`` with every ``path`` key of its dicts renamed ``file``, at any depth: ``gradio_client``
    (``download_files`` on, its default) takes a dict with a ``path`` string for a server file and tries
    to download it, which the server rightly refuses for a collection's image."""
    if isinstance(value, dict):
        return {("file" if key == "path" else key): client_safe(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [client_safe(v) for v in value]
    return value


def api_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An endpoint's answer made :func:`client_safe`; typed errors become a Gradio error with the app's
    message, anything else a generic one (logged)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return client_safe(fn(*args, **kwargs))
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

    def search_file(self, image: str | bytes | None, collection: str, k: int, *limits: str | None) -> dict[str, Any]:
        """Search ``collection`` for the ``k`` images most similar to an uploaded image file; optionally
        limited to a sub-folder, capture dates (since, until: YYYY-MM-DD), a camera, and hits at or above
        a band (min_band: "same photo", "very similar", "similar")."""
        if image is None:
            raise _missing("an image file")
        name, where = self.ctx.searchable(collection), api_filter(*limits)
        return self.answer(self.ctx.service.search_new_image(image, name, k, where=where), "uploaded image")

    def search_url(self, url: str, collection: str, k: int, *limits: str | None, rerank: bool = True) -> dict[str, Any]:
        """Fetch an image URL (http/https; private and local addresses are refused) and search with it;
        the same optional limits as ``/search_file``."""
        url = (url or "").strip()
        if not url:
            raise _missing("an image URL")
        name, where = self.ctx.searchable(collection), api_filter(*limits)
        config = self.ctx.config
        data = fetch_url(url, allow_loopback=config.allow_loopback_urls, max_bytes=config.max_upload_bytes)
        return self.answer(self.ctx.service.search_new_image(data, name, k, where=where, rerank=_rerank(rerank)), url)

    def search_item(self, collection: str, item_id: int, k: int, *limits: str | None, rerank: bool = True
                    ) -> dict[str, Any]:
        """Search with an item of ``collection`` (its stored vector: no model run); the same optional limits
        as ``/search_file``."""
        name, where = self.ctx.searchable(collection), api_filter(*limits)
        result = self.ctx.service.search_item(name, int(item_id), k, where=where, rerank=_rerank(rerank))
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

    def answer(self, result: QueryResult, query: str) -> dict[str, Any]:
        embedder = self.ctx.service.embedder
        hits = [{"rank": h.rank, "id": h.id, "label": h.label, "score": round(h.score, 6), "band": h.band,
                 "path": h.path, "meta": h.meta,
                 "thumbnail_url": f"/gradio_api/file={self.ctx.thumbs.thumb(h.abs_path).path}"}
                for h in result.hits]
        limited = {"filter": result.where.to_json(), "matching": result.matching} if result.where is not None else {}
        return {"collection": result.collection, "model": embedder.model.name, "weights_id": embedder.weights_id,
                "engine": embedder.engine, "k": len(hits), "query": query,
                "timings_ms": {stage: round(ms, 3) for stage, ms in result.timings_ms.items()},
                "hits": hits, **limited}


def api_filter(folder: str | None = None, since: str | None = None, until: str | None = None,
               camera: str | None = None, min_band: str | None = None) -> SearchFilter | None:
    """The search endpoints' optional limits as a filter (None when none is given); empty means none."""
    where = parse_filter(folder=folder or None, since=since or None, until=until or None, camera=camera or None,
                         min_band=min_band or None)
    return where if where.selects or where.min_band else None


def _rerank(rerank: bool) -> bool | None:
    """An API call's ``rerank``: True (the default) keeps the server's setting, False turns re-ranking off."""
    return None if rerank else False


def _missing(what: str) -> AppError:
    return AppError(f"Give {what}.")


# The search endpoints' optional limits, after their old arguments (app.service.filters).
LIMITS = ("folder", "since", "until", "camera", "min_band")


# -- the endpoints: names, arguments, and the Gradio wiring (called inside the page's Blocks) ---------
# API calls run two at a time (the model itself runs one image at a time, under the searcher's lock): one
# call's Gradio work (upload, pre- and postprocessing) overlaps another's search. UI events keep their own
# group of one, so a session's events stay in order.
API_CONCURRENCY = 2


def wire_api(api: ApiHandlers, lib: LibraryHandlers | None = None, dups: DuplicateHandlers | None = None) -> None:
    """Register the endpoints. ``/search_file`` takes a file, so it is an event of hidden components (Gradio
    checks that the file was uploaded, and :class:`~app.web.components.QueryImageInput` hands it over
    undecoded); the others are typed functions (``gr.api``)."""
    with gr.Group(visible=False):
        image = QueryImageInput(type="filepath", image_mode=None, label="image", sources=["upload"])
        collection = gr.Textbox(label="collection")
        k = gr.Number(value=5, precision=0, label="k", minimum=1)
        limits = [gr.Textbox(value="", label=name) for name in LIMITS]  # optional, last: old calls still work
        out = gr.JSON(label="result")
        trigger = gr.Button("search_file", elem_id="api-search-file")
    endpoint = dict(concurrency_id="api", concurrency_limit=API_CONCURRENCY, api_visibility="public")
    trigger.click(api_errors(api.search_file), [image, collection, k, *limits], out, api_name="search_file",
                  api_description=api.search_file.__doc__, show_progress="hidden", **endpoint)

    @api_errors
    def search_url(url: str, collection: str, k: int = 5, folder: str = "", since: str = "", until: str = "",
                   camera: str = "", min_band: str = "", rerank: bool = True) -> dict:
        return api.search_url(url, collection, k, folder, since, until, camera, min_band, rerank=rerank)

    @api_errors
    def search_item(collection: str, item_id: int, k: int = 5, folder: str = "", since: str = "", until: str = "",
                    camera: str = "", min_band: str = "", rerank: bool = True) -> dict:
        return api.search_item(collection, item_id, k, folder, since, until, camera, min_band, rerank=rerank)

    @api_errors
    def collections() -> list:
        return api.collections()

    for fn, method in ((search_url, api.search_url), (search_item, api.search_item), (collections, api.collections)):
        gr.api(fn, api_name=fn.__name__, api_description=method.__doc__, **endpoint)
    if dups is not None:
        _wire_duplicates(dups)
    if lib is not None and lib.enabled:
        _wire_manage(lib)


def _wire_duplicates(dups: DuplicateHandlers) -> None:
    """``/duplicates``: the groups of a collection as JSON (it reads only; a first run may take minutes)."""

    @api_errors
    def duplicates(collection: str, tier: str = "all", strictness: str = "default") -> dict:
        """The duplicate groups of a collection, largest first: tier ("all", "exact", "edited" or "shots") and
        strictness ("loose", "default", "strict"); each group's tier, members (id, file, width, height, bytes,
        mtime_ns), keeper and score."""
        return dups.groups_json(collection, tier, strictness)

    gr.api(duplicates, api_name="duplicates", concurrency_id="duplicates", concurrency_limit=1,
           api_visibility="public")


def _wire_manage(lib: LibraryHandlers) -> None:
    """The management endpoints: one change at a time, each answering what it did (JSON)."""

    @api_errors
    def index_folder(folder: str, name: str = "", model: str = "") -> dict:
        """Index a folder under a library root as a collection (new, or updated incrementally); waits for it."""
        return lib.index_now(folder, name, model or None).to_json()

    @api_errors
    def count(collection: str) -> int:
        """The number of valid images in a collection."""
        return lib.count(collection)

    @api_errors
    def add(collection: str, path: str) -> dict:
        """Index a file or folder (under a library root) into a collection."""
        return lib.add(collection, path).to_json()

    @api_errors
    def delete(collection: str, ids: list[int], paths: list[str]) -> dict:
        """Remove items from a collection by id or by path (the files stay on disk)."""
        return lib.delete(collection, ids, paths).to_json()

    @api_errors
    def rename(collection: str, new_name: str) -> dict:
        """Rename a collection."""
        return lib.rename(collection, new_name).to_json()

    @api_errors
    def drop(collection: str, confirm: str) -> dict:
        """Remove a collection's index and features (never its images); ``confirm`` repeats its name."""
        return lib.drop(collection, confirm).to_json()

    for fn in (index_folder, count, add, delete, rename, drop):
        gr.api(fn, api_name=fn.__name__, concurrency_id="manage", concurrency_limit=1, api_visibility="public")

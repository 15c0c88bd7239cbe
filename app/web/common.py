"""What the handler groups share: the app context, the error guard, and running a search into a View.

* :class:`Context`: the search service, the settings, the work folder for query images, the
  thumbnail cache, the toast callback, and the collections found at start-up (which are ready,
  which model is running).
* :func:`guarded`: every event handler is wrapped so that an :class:`~app.errors.AppError` becomes a
  readable message and anything else is logged server-side and shown as a generic one. With
  ``app.cli``, this is the only place that turns the core's typed errors into messages for people;
  no traceback ever reaches the browser.
* :class:`QueryRunner`: runs a query with one service call and renders everything that depends on
  the results (gallery, status line, history, compare picker), recording it in the session.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PIL import Image

from app.config import Config
from app.core.thumbnails import Thumbnails
from app.errors import AppError, IndexMissingError
from app.service.search import CollectionInfo, Hit, QueryResult, SearchService
from app.web.view_model import (
    SKIP,
    Query,
    View,
    caption,
    error_md,
    example_caption,
    md_escape,
    signature,
    status_html,
)

if TYPE_CHECKING:
    from app.web.session import Session

log = logging.getLogger(__name__)


class Context:
    """The service, the settings and the collections found at start-up, shared by every handler group."""

    def __init__(self, service: SearchService, config: Config, *, work_dir: str | Path | None = None,
                 toast: Callable[[str], None] | None = None) -> None:
        self.service = service
        self.config = config
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ris-queries-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.thumbs = Thumbnails(Path(config.cache_dir) / "thumbnails")
        self.toast: Callable[[str], None] = toast or (lambda text: None)
        self.infos: list[CollectionInfo] = service.collections()

    def refresh(self) -> None:
        """Read the collections again (one was built, changed, renamed or dropped since)."""
        self.infos = self.service.collections()

    def known(self, collection: str | None) -> str:
        """The name of an existing collection (built or not); a typed error otherwise."""
        info = self.info(collection)
        if info is None:  # made since the list was read?
            self.refresh()
            info = self.info(collection)
        if info is None:
            raise IndexMissingError(f"There is no collection named {collection}." if collection
                                    else "Choose a collection first.")
        return info.name

    def info(self, name: str | None) -> CollectionInfo | None:
        return next((i for i in self.infos if i.name == name), None)

    def ready(self) -> list[str]:
        return [i.name for i in self.infos if i.ready]

    @property
    def running_model(self) -> str:
        return self.service.embedder.model.name

    def engine(self) -> str:
        weights = self.config.weights
        if weights not in ("imagenet", "untrained"):
            weights = Path(weights).name
        return f"{self.running_model} · {self.service.embedder.engine or 'model not loaded'} · {weights} weights"

    def require(self, collection: str | None) -> str:
        """The name of ``collection`` if it can be searched; otherwise an error saying how to build it."""
        info = self.info(collection)
        if (info is None or not info.ready) and collection:  # built (or renamed) since the list was read?
            self.refresh()
            info = self.info(collection)
        if info is None or not info.ready:
            if info is None and not collection:
                raise IndexMissingError("No collection is built yet.", hint="Build one; the page shows how.")
            if info is None:
                raise IndexMissingError(f"There is no collection named {collection}.")
            raise IndexMissingError(f"{info.name} is not built yet.", hint=f"Build it with: {info.build_command}")
        return info.name


def guarded(action: str) -> Callable:
    """Turn errors into a readable message (typed) or a generic one (unexpected, logged).

    For methods of a handler group, which has the shared :class:`Context` as ``self.ctx``.
    """

    def deco(fn: Callable[..., View]) -> Callable[..., View]:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> View:
            try:
                return fn(self, *args, **kwargs)
            except AppError as exc:
                text = exc.user_message()
                log.info("%s: %s", action, text)
            except Exception:  # noqa: BLE001 - the browser gets a message, the log gets the traceback
                log.exception("unexpected error while %s", action)
                text = f"Something went wrong while {action}. The details are in the server log."
            self.ctx.toast(text)
            return View(message=error_md(text))

        return wrapper

    return deco


# -- gallery values: thumbnails (a placeholder for a file missing on disk) -------------------------
def result_items(thumbs: Thumbnails, hits: list[Hit]) -> tuple[list[tuple[str, str]], list[Hit]]:
    """The gallery items for ``hits``, and the hits whose image file is missing or unreadable."""
    items, missing = [], []
    for h in hits:
        r = thumbs.thumb(h.abs_path)
        items.append((str(r.path), caption(h)))
        if not r.ok:
            missing.append(h)
    return items, missing


def example_items(thumbs: Thumbnails, hits: list[Hit]) -> list[tuple[str, str]]:
    return [(str(thumbs.thumb(h.abs_path).path), example_caption(h)) for h in hits]


def history_items(thumbs: Thumbnails, history: list[Query]) -> list[tuple[str, str]]:
    return [(str(thumbs.thumb(q.path).path), q.label) for q in history]


def missing_md(missing: list[Hit], collection: str) -> str:
    """The warning shown when result files are gone from disk since the collection was indexed."""
    if not missing:
        return ""
    names = ", ".join(md_escape(h.path) for h in missing[:3]) + (" …" if len(missing) > 3 else "")
    n = len(missing)
    return (f"⚠️ {n} result image{'s are' if n > 1 else ' is'} missing on disk or unreadable ({names}); "
            f"{'they show' if n > 1 else 'it shows'} as a placeholder. Rebuild {md_escape(collection)} "
            "to bring the collection up to date.")


class QueryRunner:
    """Runs a query with one service call and renders what depends on its results; every handler
    group's searches go through it. Nothing here calls back into the service once the result is in."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def new_image(self, source: str | bytes | Image.Image, label: str, collection: str | None, k: Any,
                  session: Session, *, origin: str, key: str | None = None, set_editor: bool = False,
                  skip_if_shown: bool = False) -> View:
        """Search a new image (a file, bytes, or a crop's pixels): one call to
        :meth:`~app.service.search.SearchService.search_new_image`, which decodes it once and copies it
        for the page. ``skip_if_shown``: nothing to do when the page shows this image's results already."""
        name = self.ctx.require(collection)
        result = self.ctx.service.search_new_image(source, name, k, key=key, copy_dir=self.ctx.work_dir)
        prepared = result.image
        assert prepared is not None and prepared.copy is not None
        query = Query("image", str(prepared.copy), prepared.key, label, size=prepared.shown.size, origin=origin,
                      sig=signature(prepared.shown))
        self.ctx.thumbs.thumb(prepared.copy, prepared.shown)  # the history's thumbnail, from the pixels at hand
        if skip_if_shown and session.query is not None and session.query.key == query.key and session.shows(
                query.key, name, result.k):
            return View()
        return self.render(query, result, session, set_editor=set_editor)

    def again(self, query: Query, collection: str | None, k: Any, session: Session, *,
              set_editor: bool = False) -> View:
        """Search a query the session knows (an item, or an image searched before) with one service call."""
        name = self.ctx.require(collection)
        service = self.ctx.service
        if query.kind == "item":
            result = service.search_item(name, query.item_id, k, source=query.collection)
        else:  # its remembered vector (or, once forgotten, the page's copy of it) under the same key
            result = service.search_new_image(query.path, name, k, key=query.key)
        return self.render(query, result, session, set_editor=set_editor)

    def render(self, query: Query, result: QueryResult, session: Session, *, set_editor: bool = False) -> View:
        """Everything that depends on ``result``, recorded in ``session``. ``set_editor``: also show the
        query in the query image (and expect the crop editor's echo of it)."""
        name = result.collection
        new_query = session.query is None or session.query.key != query.key
        session.record(query, name, result.k, result.hits, in_editor=set_editor)
        thumbs = self.ctx.thumbs
        items, missing = result_items(thumbs, result.hits)
        first = thumbs.preview(result.hits[0].abs_path).path if result.hits else None
        return View(
            editor=query.path if set_editor else SKIP,
            results=items,
            status=status_html(result, self.ctx.engine(), session.seq),
            message=missing_md(missing, name),
            last=query.path,
            last_caption=f"**Last searched:** {md_escape(query.label)}",
            history=history_items(thumbs, session.history),
            compare=(query.path, str(first)) if first else None,
            compare_choices=[(f"#{h.rank} · {caption(h)}", i) for i, h in enumerate(result.hits)],
            session=session,
            crop=None if new_query else SKIP,  # another query closes the crop editor (it showed the old one)
        )

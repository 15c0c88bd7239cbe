"""What the web UI does when something happens: (inputs, session) -> :class:`View`.

``app.ui`` lays out the Gradio components and wires their events to :class:`Handlers`; this
module decides what to search and what to show. It calls the search core, and (with ``app.cli``)
is the only place that turns the core's typed errors into messages for people: every handler is
wrapped so that an :class:`~app.errors.AppError` becomes a readable message and anything else is
logged server-side and shown as a generic one. No traceback ever reaches the browser.

Speed rules: a collection image (example, result, history item) is searched with its stored
vector, never through the model; a new image runs the model once, however many events the image
editor fires for it (duplicates are recognised by a hash of the pixels, and the service remembers
query vectors by that hash).
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from app.config import Config
from app.errors import AppError, IndexMissingError
from app.net.fetch import fetch_url
from app.core.images import load_image
from app.service.search import CollectionInfo, Hit, SearchResult, SearchService
from app.web.view_model import (ECHO_WINDOW_S, EXAMPLES_PER_PAGE, HISTORY_SIZE, SKIP, Query, Session, View, caption,
                       composite_image, error_md, example_caption, file_size_and_signature, idle_status, image_key,
                       md_escape, same_picture, signature, status_html)

__all__ = ["SKIP", "Handlers", "Query", "Session", "View", "guarded", "idle_status"]

log = logging.getLogger(__name__)


def guarded(action: str) -> Callable:
    """Turn errors into a readable message (typed) or a generic one (unexpected, logged)."""

    def deco(fn: Callable[..., View]) -> Callable[..., View]:
        @functools.wraps(fn)
        def wrapper(self: "Handlers", *args: Any, **kwargs: Any) -> View:
            try:
                return fn(self, *args, **kwargs)
            except AppError as exc:
                text = exc.user_message()
                log.info("%s: %s", action, text)
            except Exception:  # noqa: BLE001 - the browser gets a message, the log gets the traceback
                log.exception("unexpected error while %s", action)
                text = f"Something went wrong while {action}. The details are in the server log."
            self.toast(text)
            return View(message=error_md(text))

        return wrapper

    return deco


class Handlers:
    """The UI's behaviour, independent of the Gradio layout (tested directly)."""

    def __init__(self, service: SearchService, config: Config, *, work_dir: str | Path | None = None,
                 toast: Callable[[str], None] | None = None) -> None:
        self.service = service
        self.config = config
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ris-queries-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.toast = toast or (lambda text: None)
        self.infos: list[CollectionInfo] = service.collections()

    # -- start-up ----------------------------------------------------------------------------
    def info(self, name: str | None) -> CollectionInfo | None:
        return next((i for i in self.infos if i.name == name), None)

    def ready(self) -> list[str]:
        return [i.name for i in self.infos if i.ready]

    def default_collection(self) -> str | None:
        ready = self.ready()
        return ready[0] if ready else None

    def collection_choices(self) -> list[tuple[str, str]]:
        return [(self._choice_label(i), i.name) for i in self.infos]

    def _choice_label(self, info: CollectionInfo) -> str:
        if info.ready:
            return f"{info.name} · {info.size:,} images · {info.model}"
        if info.model and info.model != self.running_model:
            return f"{info.name} · built with {info.model}"
        return f"{info.name} · not built"

    @property
    def running_model(self) -> str:
        return self.service.embedder.model.name

    def image_roots(self) -> list[str]:
        """The folders result images are served from (``allowed_paths``): the ready collections' roots."""
        roots: set[str] = set()
        for name in self.ready():
            root = Path(self.service.collection(name).image_root)
            roots |= {str(root.absolute()), str(root.resolve())}  # as the paths are written, and real
        return sorted(roots)

    def notices_md(self) -> str:
        return "\n\n".join(f"⚠️ {md_escape(n)}" for n in self.service.notices())

    def engine(self) -> str:
        weights = self.config.weights
        if weights not in ("imagenet", "untrained"):
            weights = Path(weights).name
        return f"{self.running_model} · {self.service.embedder.engine or 'model not loaded'} · {weights} weights"

    def not_built_md(self, info: CollectionInfo | None, name: str | None = None) -> str:
        if info is None:
            return error_md(f"There is no collection named {name}.")
        if info.model and info.model != self.running_model:
            lines = [f"**{md_escape(info.name)} was built with the model {md_escape(info.model)}**, and this app "
                     f"is running {md_escape(self.running_model)}.",
                     f"Restart the app with `--model {info.model}`, or rebuild it for {md_escape(self.running_model)}:"]
        else:
            lines = [f"**{md_escape(info.name)} is not built yet.**"]
            if info.reason:
                lines.append(md_escape(info.reason))
            lines.append("Build it with:")
        lines.append(f"```\n{info.build_command}\n```\n\nthen restart the app.")
        return "\n\n".join(lines)

    def setup_md(self) -> str:
        """Shown when no collection is ready: how to build one."""
        if self.ready():
            return ""
        cmds = "\n".join(i.build_command for i in self.infos)
        return ("### No collection is built yet\n\nBuild one (see the README for downloading the datasets), "
                f"then restart the app:\n\n```\n{cmds}\n```")

    def initial_session(self, collection: str | None) -> Session:
        s = Session()
        if collection and self.info(collection) and self.info(collection).ready:
            s.examples = self.service.examples(collection, EXAMPLES_PER_PAGE, 0)
        return s

    # -- gallery values ----------------------------------------------------------------------
    @staticmethod
    def result_items(hits: list[Hit]) -> list[tuple[str, str]]:
        return [(str(h.abs_path), caption(h)) for h in hits]

    @staticmethod
    def example_items(hits: list[Hit]) -> list[tuple[str, str]]:
        return [(str(h.abs_path), example_caption(h)) for h in hits]

    @staticmethod
    def history_items(history: list[Query]) -> list[tuple[str, str]]:
        return [(q.path, q.label) for q in history]

    # -- queries -----------------------------------------------------------------------------
    def _item_query(self, collection: str, hit: Hit) -> Query:
        path = str(hit.abs_path)
        size, sig = file_size_and_signature(path)
        return Query("item", path, f"item:{collection}:{hit.id}", f"{hit.label} · {Path(hit.path).name}",
                     collection=collection, item_id=hit.id, size=size, origin="app", sig=sig)

    def _image_query(self, img: Image.Image, label: str, *, origin: str, key: str | None = None) -> Query:
        key = key or image_key(img)
        path = self.work_dir / f"{key[:40]}.png"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            img.save(tmp, format="PNG", compress_level=1)
            tmp.replace(path)
        return Query("image", str(path), key, label, size=img.size, origin=origin, sig=signature(img))

    def _require(self, collection: str | None) -> str:
        info = self.info(collection)
        if info is None or not info.ready:
            if info is None and not collection:
                raise IndexMissingError("No collection is built yet.", hint="Build one; the page shows how.")
            if info is None:
                raise IndexMissingError(f"There is no collection named {collection}.")
            raise IndexMissingError(f"{info.name} is not built yet.", hint=f"Build it with: {info.build_command}")
        return info.name

    def _search(self, query: Query, collection: str, k: Any, image: Image.Image | None) -> SearchResult:
        if query.kind == "item":
            return self.service.search_item_in(query.collection, query.item_id, collection, k)
        return self.service.search_image(image if image is not None else query.path, collection, k, key=query.key)

    def _run(self, query: Query, collection: str | None, k: Any, session: Session, *, set_editor: bool = False,
             image: Image.Image | None = None) -> View:
        """Search ``query`` and render everything that depends on the results."""
        name = self._require(collection)
        k = self.service.clamp_k(k)
        result = self._search(query, name, k, image)
        history = [query] + [q for q in session.history if q.key != query.key]
        session.query = query
        if set_editor:
            self._remember_shown(session, query)
        session.searched = query
        session.shown = (query.key, name, k)
        session.results = list(result.hits)
        session.history = history[:HISTORY_SIZE]
        session.seq += 1
        first = result.hits[0].abs_path if result.hits else None
        return View(
            editor=query.path if set_editor else SKIP,
            results=self.result_items(result.hits),
            status=status_html(result, len(self.service.collection(name)), self.engine(), session.seq),
            message="",
            last=query.path,
            last_caption=f"**Last searched:** {md_escape(query.label)}",
            history=self.history_items(session.history),
            compare=(query.path, str(first)) if first else None,
            compare_choices=[(f"#{h.rank} · {caption(h)}", i) for i, h in enumerate(result.hits)],
            session=session,
        )

    @staticmethod
    def _remember_shown(session: Session, query: Query) -> None:
        now = time.monotonic()
        recent = [(t, q) for t, q in session.shown_in_editor if now - t < ECHO_WINDOW_S and q.key != query.key]
        session.shown_in_editor = (recent + [(now, query)])[-8:]

    def _is_current(self, session: Session, key: str, collection: str | None, k: Any) -> bool:
        return session.shown == (key, collection, self.service.clamp_k(k))

    # -- events ------------------------------------------------------------------------------
    def _matches(self, cur: Query | None, img: Image.Image, key: str) -> bool:
        """Whether the editor's image is the current query: the same pixels, or the editor's echo of an
        image the app put into it (same size, same picture up to decoding differences)."""
        if cur is None:
            return False
        if cur.key == key:
            return True
        return cur.origin == "app" and cur.size == img.size and same_picture(cur.sig, signature(img))

    def _editor_image(self, value: Any, collection: str | None, k: Any, session: Session, *, label: str,
                      always: bool = False) -> View:
        img = composite_image(value)
        if img is None:
            return View()
        key = image_key(img)
        cur = session.query
        log.debug("editor image %s %s; query %s", img.size, key[:12], cur and cur.key[:20])
        if self._matches(cur, img, key):
            if not always:
                # A repeated event, or the echo of what the app showed: its results are on screen (for
                # the k and collection chosen since; a late event carries the values of its time).
                return View()
            return self._run(cur, collection, k, session, image=img if cur.key == key else None)
        now = time.monotonic()
        earlier = next((q for t, q in reversed(session.shown_in_editor)
                        if now - t < ECHO_WINDOW_S and self._matches(q, img, key)), None)
        if earlier is not None:  # a late echo of an image the app showed before the current one
            return self._run(earlier, collection, k, session) if always else View()
        cropped = cur is not None and label == "Edited image" and cur.size != img.size
        query = self._image_query(img, "Cropped image" if cropped else label, origin="user", key=key)
        # After a crop the editor shows the result tiny in a corner (Gradio 6.31): show it afresh.
        return self._run(query, collection, k, session, image=img, set_editor=cropped)

    @guarded("searching the uploaded image")
    def on_upload(self, value: Any, collection: str | None, k: Any, session: Session) -> View:
        """A file, webcam shot or pasted image arrived in the editor (fired several times per image, and
        also when the app puts an image there)."""
        return self._editor_image(value, collection, k, session, label="Uploaded image")

    @guarded("searching the edited image")
    def on_edit(self, value: Any, collection: str | None, k: Any, session: Session) -> View:
        """The editor's image changed: crop confirmed, changes saved, or an echo."""
        return self._editor_image(value, collection, k, session, label="Edited image")

    @guarded("searching")
    def on_search(self, value: Any, collection: str | None, k: Any, session: Session) -> View:
        """The Search button: search what the editor shows (always answers)."""
        if composite_image(value) is None:
            return View(message=error_md("Choose an image first: click an example, upload, paste or take a photo, "
                                         "or paste an image URL."))
        return self._editor_image(value, collection, k, session, label="Image", always=True)

    @guarded("searching the example")
    def on_example(self, index: int, collection: str | None, k: Any, session: Session) -> View:
        name = self._require(collection)
        hit = session.examples[int(index)]
        return self._run(self._item_query(name, hit), name, k, session, set_editor=True)

    @guarded("searching the result")
    def on_result(self, index: int, collection: str | None, k: Any, session: Session) -> View:
        """A result becomes the query (its stored vector: no model run)."""
        if session.shown is None or not (0 <= int(index) < len(session.results)):
            return View()
        hit = session.results[int(index)]
        return self._run(self._item_query(session.shown[1], hit), collection, k, session, set_editor=True)

    @guarded("searching the history entry")
    def on_history(self, index: int, collection: str | None, k: Any, session: Session) -> View:
        if not (0 <= int(index) < len(session.history)):
            return View()
        query = replace(session.history[int(index)], origin="app")
        return self._run(query, collection, k, session, set_editor=True)

    @guarded("fetching the image URL")
    def on_url(self, url: str | None, collection: str | None, k: Any, session: Session) -> View:
        url = (url or "").strip()
        if not url:
            return View(message=error_md("Paste an image URL (http:// or https://) first."))
        self._require(collection)
        data = fetch_url(url, allow_loopback=self.config.allow_loopback_urls, max_bytes=self.config.max_upload_bytes)
        img = load_image(data)
        label = url if len(url) <= 60 else url[:57] + "…"
        return self._run(self._image_query(img, label, origin="app"), collection, k, session, set_editor=True,
                         image=img)

    @guarded("changing the number of results")
    def on_k(self, k: Any, collection: str | None, session: Session) -> View:
        cur = session.searched
        if cur is None or self._is_current(session, cur.key, collection, k):
            return View()
        return self._run(cur, collection, k, session)

    @guarded("switching the collection")
    def on_collection(self, collection: str | None, k: Any, session: Session) -> View:
        info = self.info(collection)
        if info is None or not info.ready:
            session.examples, session.results, session.shown = [], [], None
            return View(examples=[], results=[], compare=None, compare_choices=[], session=session,
                        status=idle_status("No results: this collection is not built."),
                        message=self.not_built_md(info, collection))
        session.examples = self.service.examples(info.name, EXAMPLES_PER_PAGE, 0)
        session.page = 0
        examples = self.example_items(session.examples)
        if session.searched is None:
            return View(examples=examples, results=[], message="", session=session,
                        status=idle_status(f"{info.size:,} images in {info.name}. Choose a query image."))
        view = self._run(session.searched, info.name, k, session)
        view.examples = examples
        return view

    @guarded("loading more examples")
    def on_more_examples(self, collection: str | None, session: Session) -> View:
        name = self._require(collection)
        session.page += 1
        session.examples = self.service.examples(name, EXAMPLES_PER_PAGE, session.page)
        return View(examples=self.example_items(session.examples), session=session)

    @guarded("comparing")
    def on_compare(self, pick: Any, session: Session) -> View:
        if session.searched is None or pick is None or not (0 <= int(pick) < len(session.results)):
            return View()
        return View(compare=(session.searched.path, str(session.results[int(pick)].abs_path)))

    @guarded("copying the last searched image")
    def on_use_last(self, session: Session) -> View:
        """Put the last searched image back into the query editor (e.g. to crop it differently)."""
        if session.searched is None:
            return View(message=error_md("Nothing has been searched yet."))
        session.query = replace(session.searched, origin="app")
        self._remember_shown(session, session.query)
        return View(editor=session.query.path, message="", session=session)

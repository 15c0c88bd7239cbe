"""Query sources: what becomes the query, and searching it.

The query image (upload, webcam, clipboard paste), the crop editor, the Search button, an image URL, and reused
collection images (an example or a result clicked). Each turns its input into a
:class:`~app.web.view_model.Query` and searches it through the shared
:class:`~app.web.common.Searcher`.

Speed rules: a collection image (example, result, history item) is searched with its stored
vector, never through the model; a new image runs the model once, however many events the image
editor fires for it (duplicates are recognised by a hash of the pixels, and the service remembers
query vectors by that hash). The query image is a plain ``gr.Image`` (one upload event per image;
images the app shows in it are set from the server and fire nothing). The crop editor
(``gr.ImageEditor``, opened by the Crop button) echoes the image it is opened on; that echo is
recognised by a small pixel signature and is not a crop.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from app.core.images import load_image
from app.net.fetch import fetch_url
from app.service.search import Hit
from app.web.common import Context, Searcher, guarded
from app.web.session import Session
from app.web.view_model import (
    Query,
    View,
    composite_image,
    error_md,
    file_size_and_signature,
    image_key,
    same_picture,
    signature,
)

log = logging.getLogger(__name__)

_URL_LABEL_CHARS = 60


def item_query(collection: str, hit: Hit) -> Query:
    """A collection image as the query: searched with its stored vector."""
    path = str(hit.abs_path)
    size, sig = file_size_and_signature(path)
    return Query("item", path, f"item:{collection}:{hit.id}", f"{hit.label} · {Path(hit.path).name}",
                 collection=collection, item_id=hit.id, size=size, origin="app", sig=sig)


def matches(query: Query | None, img: Image.Image, key: str) -> bool:
    """Whether the editor's image is ``query``: the same pixels, or the editor's echo of an image the app
    put into it (same size, same picture up to decoding differences)."""
    if query is None:
        return False
    if query.key == key:
        return True
    return query.origin == "app" and query.size == img.size and same_picture(query.sig, signature(img))


class QueryHandlers:
    """Events that bring a query: the editor's image, the Search button, a URL, an example or a result."""

    def __init__(self, ctx: Context, searcher: Searcher) -> None:
        self.ctx = ctx
        self.searcher = searcher

    def _image_query(self, img: Image.Image, label: str, *, origin: str, key: str | None = None) -> Query:
        """A new image as the query; its pixels are saved (once) so the page can show them."""
        key = key or image_key(img)
        path = self.ctx.work_dir / f"{key[:40]}.png"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            img.save(tmp, format="PNG", compress_level=1)
            tmp.replace(path)
        return Query("image", str(path), key, label, size=img.size, origin=origin, sig=signature(img))

    def _editor_image(self, value: Any, collection: str | None, k: Any, session: Session, *, label: str,
                      always: bool = False) -> View:
        """Search the editor's image if it is new (``always``: even if it is not)."""
        img = composite_image(value)
        if img is None:
            return View()
        key = image_key(img)
        cur = session.query
        log.debug("editor image %s %s; query %s", img.size, key[:12], cur and cur.key[:20])
        if matches(cur, img, key):
            if not always:
                # A repeated event, or the echo of what the app showed: its results are on screen (for
                # the k and collection chosen since; a late event carries the values of its time).
                return View()
            return self.searcher.run(cur, collection, k, session, image=img if cur.key == key else None)
        earlier = next((q for q in session.recently_shown() if matches(q, img, key)), None)
        if earlier is not None:  # a late echo of an image the app showed before the current one
            return self.searcher.run(earlier, collection, k, session) if always else View()
        cropped = label == "Cropped image"
        query = self._image_query(img, label, origin="user", key=key)
        view = self.searcher.run(query, collection, k, session, image=img, set_editor=cropped)
        if cropped:  # the query image shows the crop (what was searched); the crop editor closes
            view.crop = None
        return view

    @guarded("searching the uploaded image")
    def on_upload(self, value: Any, collection: str | None, k: Any, session: Session) -> View:
        """A file, webcam shot or pasted image arrived in the query image: searched (the model runs once per
        new image). The query image fires this once per user upload and never for images the app shows
        there, so there are no echoes to recognise; a repeat of the image on screen does nothing."""
        img = composite_image(value)
        if img is None:
            return View()
        key, cur = image_key(img), session.query
        if cur is not None and cur.key == key:
            if session.shows(key, collection, self.ctx.service.clamp_k(k)):
                return View()
            return self.searcher.run(cur, collection, k, session, image=img)
        query = self._image_query(img, "Uploaded image", origin="user", key=key)
        return self.searcher.run(query, collection, k, session, image=img)

    @guarded("opening the crop editor")
    def on_crop_open(self, session: Session) -> View:
        """The Crop button: open the crop editor on the current query image."""
        if session.query is None:
            return View(message=error_md("Choose an image first, then crop it."))
        session.remember_shown(replace(session.query, origin="app"))  # its echoes in the editor are not crops
        return View(crop=session.query.path, message="", session=session)

    @guarded("closing the crop editor")
    def on_crop_close(self) -> View:
        return View(crop=None)

    @guarded("searching the cropped image")
    def on_crop(self, value: Any, collection: str | None, k: Any, session: Session) -> View:
        """The crop editor's image changed: a crop confirmed (searched), or the editor's echo of the image
        it was opened on (nothing)."""
        return self._editor_image(value, collection, k, session, label="Cropped image")

    @guarded("searching")
    def on_search(self, value: Any, collection: str | None, k: Any, session: Session) -> View:
        """The Search button: search what the editor shows (always answers)."""
        if composite_image(value) is None:
            return View(message=error_md("Choose an image first: click an example, upload, paste or take a photo, "
                                         "or paste an image URL."))
        return self._editor_image(value, collection, k, session, label="Image", always=True)

    @guarded("fetching the image URL")
    def on_url(self, url: str | None, collection: str | None, k: Any, session: Session) -> View:
        url = (url or "").strip()
        if not url:
            return View(message=error_md("Paste an image URL (http:// or https://) first."))
        self.ctx.require(collection)
        config = self.ctx.config
        data = fetch_url(url, allow_loopback=config.allow_loopback_urls, max_bytes=config.max_upload_bytes)
        img = load_image(data)
        label = url if len(url) <= _URL_LABEL_CHARS else url[:_URL_LABEL_CHARS - 3] + "…"
        query = self._image_query(img, label, origin="app")
        return self.searcher.run(query, collection, k, session, set_editor=True, image=img)

    @guarded("searching the example")
    def on_example(self, index: int, collection: str | None, k: Any, session: Session) -> View:
        name = self.ctx.require(collection)
        hit = session.examples[int(index)]
        return self.searcher.run(item_query(name, hit), name, k, session, set_editor=True)

    @guarded("searching the result")
    def on_result(self, index: int, collection: str | None, k: Any, session: Session) -> View:
        """A result becomes the query (its stored vector: no model run)."""
        if session.shown is None or not (0 <= int(index) < len(session.results)):
            return View()
        hit = session.results[int(index)]
        return self.searcher.run(item_query(session.shown[1], hit), collection, k, session, set_editor=True)

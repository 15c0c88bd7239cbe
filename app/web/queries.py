"""Query sources: what becomes the query, and searching it.

The query image (upload, webcam, clipboard paste), the crop editor, the Search button, an image URL, and reused
collection images (an example or a result clicked). Each turns its input into a
:class:`~app.web.query.Query` and searches it through the shared
:class:`~app.web.runner.QueryRunner`.

Speed rules: a collection image (example, result, history item) is searched with its stored
vector, never through the model, and shown as its preview; a new image runs the model once
(the service remembers query vectors by the image's key). The query image is a ``gr.Image``
whose upload reaches the app as the file, undecoded (:class:`app.web.components.QueryImageInput`): the
app's own loader decodes it once (:func:`app.service.query_image.prepare_query`: the key is a hash
of the file's bytes, and the copy the page shows is made from the same decode). One upload event
per image; images the app shows in it are set from the server and fire nothing. The crop editor
(``gr.ImageEditor``, opened by the Crop button) echoes the image it is opened on; that echo is
recognised by a small pixel signature (:mod:`app.web.signature`) and is not a crop.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from PIL import Image

from app.net.fetch import fetch_url
from app.service.query_image import image_key
from app.service.search import Hit
from app.web.context import Context
from app.web.gallery import example_caption
from app.web.guarded import guarded
from app.web.objects_view import OBJECTS_FOLLOW, ObjectsShown
from app.web.query import Query
from app.web.runner import QueryRunner
from app.web.session import Session
from app.web.signature import file_size_and_signature, same_picture, signature
from app.web.text import error_md
from app.web.view import View

log = logging.getLogger(__name__)

_URL_LABEL_CHARS = 60


def item_query(ctx: Context, collection: str, hit: Hit) -> Query:
    """A collection image as the query: searched with its stored vector, shown as its preview."""
    shown = ctx.thumbs.preview(hit.abs_path).path
    size, sig = file_size_and_signature(shown)
    return Query("item", str(shown), f"item:{collection}:{hit.id}", example_caption(hit), collection=collection,
                 item_id=hit.id, size=size, origin="app", sig=sig)


def composite_image(value: Any) -> Image.Image | None:
    """The image the crop editor shows (crop applied) from its value (``gr.ImageEditor(type="pil")``)."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        img = value.get("composite") or value.get("background")
        return img if isinstance(img, Image.Image) else None
    return None


def matches(query: Query | None, img: Image.Image, key: str) -> bool:
    """Whether the crop editor's image is ``query``: the same pixels, or the crop editor's echo of an image
    the app showed (same size, same picture up to decoding differences)."""
    if query is None:
        return False
    if query.key == key:
        return True
    return query.origin == "app" and query.size == img.size and same_picture(query.sig, signature(img))


class QueryHandlers:
    """Events that bring a query: the query image, the crop editor, the Search button, a URL, an example or a
    result."""

    def __init__(self, ctx: Context, runner: QueryRunner) -> None:
        self.ctx = ctx
        self.runner = runner

    def _crop_image(self, value: Any, collection: str | None, k: Any, session: Session) -> View:
        """Search the crop editor's image if it is a crop (not its echo of the image it was opened on)."""
        img = composite_image(value)
        if img is None:
            return View()
        key = image_key(img)
        cur = session.query
        log.debug("crop editor image %s %s; query %s", img.size, key[:12], cur and cur.key[:20])
        if matches(cur, img, key) or any(matches(q, img, key) for q in session.recently_shown()):
            # A repeated event, or a (late) echo of what the app showed: nothing to search.
            return View()
        view = self.runner.new_image(img, "Cropped image", collection, k, session, origin="user", key=key,
                                     show_in_query_image=True)
        view.crop = None  # the query image shows the crop (what was searched); the crop editor closes
        return view

    @guarded("searching the uploaded image")
    def on_upload(self, value: str | bytes | None, collection: str | None, k: Any, session: Session) -> View:
        """A file, webcam shot or pasted image arrived in the query image: decoded by the app's loader (the
        allow-list and the pixel cap apply) and searched; the model runs once per new image. The query
        image fires this once per user upload and never for images the app shows there, so there are no
        echoes to recognise; a repeat of the image on screen does nothing."""
        if value is None:
            return View()
        return self.runner.new_image(value, "Uploaded image", collection, k, session, origin="user",
                                     skip_if_shown=True)

    @guarded("opening the crop editor")
    def on_crop_open(self, session: Session) -> View:
        """The Crop button: open the crop editor on the current query image."""
        if session.query is None:
            return View(message=error_md("Choose an image first, then crop it."))
        session.remember_shown(replace(session.query, origin="app"))  # the crop editor's echoes are not crops
        return View(crop=session.query.path, message="", session=session)

    @guarded("closing the crop editor")
    def on_crop_close(self) -> View:
        return View(crop=None)

    @guarded("searching the cropped image")
    def on_crop(self, value: Any, collection: str | None, k: Any, session: Session) -> View:
        """The crop editor's image changed: a crop confirmed (searched), or the editor's echo of the image
        it was opened on (nothing)."""
        return self._crop_image(value, collection, k, session)

    @guarded("searching")
    def on_search(self, value: str | bytes | None, collection: str | None, k: Any, session: Session) -> View:
        """The Search button: search what the query image shows (always answers)."""
        if value is None:
            return View(message=error_md("Choose an image first: click an example, upload, paste or take a photo, "
                                         "or paste an image URL."))
        if session.query is not None:  # the app knows what the query image shows: no upload, no decode
            return self.runner.again(session.query, collection, k, session)
        return self.runner.new_image(value, "Image", collection, k, session, origin="user")

    @guarded("fetching the image URL")
    def on_url(self, url: str | None, collection: str | None, k: Any, session: Session) -> View:
        url = (url or "").strip()
        if not url:
            return View(message=error_md("Paste an image URL (http:// or https://) first."))
        self.ctx.searchable(collection)
        config = self.ctx.config
        data = fetch_url(url, allow_loopback=config.allow_loopback_urls, max_bytes=config.max_upload_bytes)
        label = url if len(url) <= _URL_LABEL_CHARS else url[:_URL_LABEL_CHARS - 3] + "…"
        return self.runner.new_image(data, label, collection, k, session, origin="app",
                                     show_in_query_image=True)

    @guarded("searching the example")
    def on_example(self, index: int, collection: str | None, k: Any, session: Session) -> View:
        name = self.ctx.searchable(collection)
        hit = session.examples[int(index)]
        return self.runner.again(item_query(self.ctx, name, hit), name, k, session, show_in_query_image=True)

    @guarded("searching the result")
    def on_result(self, index: int, collection: str | None, k: Any, session: Session) -> View:
        """A result becomes the query (its stored vector: no model run)."""
        if session.shown is None or not (0 <= int(index) < len(session.results)):
            return View()
        hit = session.results[int(index)]
        view = self.runner.again(item_query(self.ctx, session.shown[1], hit), collection, k, session,
                                 show_in_query_image=True)
        view.objects = ObjectsShown(note=OBJECTS_FOLLOW)  # no detection for a click: the panel says so
        return view

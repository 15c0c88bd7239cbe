"""Running a query and rendering it: :class:`QueryRunner`, through which every handler group searches.

One service call per query (:meth:`app.service.search.SearchService.search_new_image` or
:meth:`~app.service.search.SearchService.search_item`), then everything that depends on its results
(gallery, status line, history, compare picker) as a :class:`~app.web.view.View`, recorded in the
:class:`~app.web.session.Session`. The session's "Limit to" filter (:mod:`app.web.limits`) goes with every
call as ``where=``.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from app.service.query_objects import ObjectResult
from app.service.search import QueryResult
from app.web.context import Context
from app.web.gallery import caption, history_items, result_items
from app.web.objects_view import object_items, object_status_html, photo_hits
from app.web.query import Query
from app.web.session import Session
from app.web.signature import signature
from app.web.text import md_escape, missing_md, nothing_within_md, status_html
from app.web.view import SKIP, View


class QueryRunner:
    """Runs a query with one service call and renders what depends on its results; every handler
    group's searches go through it. Nothing here calls back into the service once the result is in."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def new_image(self, source: str | bytes | Image.Image, label: str, collection: str | None, k: Any,
                  session: Session, *, origin: str, key: str | None = None, show_in_query_image: bool = False,
                  skip_if_shown: bool = False) -> View:
        """Search a new image (a file, bytes, or a crop's pixels): one call to
        :meth:`~app.service.search.SearchService.search_new_image`, which decodes it once and copies it
        for the page. ``skip_if_shown``: nothing to do when the page shows this image's results already."""
        name = self.ctx.searchable(collection)
        if session.objects_mode:  # objects inside photos
            result = self.ctx.service.objects.search_new_image(source, name, k, key=key, copy_dir=self.ctx.work_dir)
        else:
            result = self.ctx.service.search_new_image(source, name, k, key=key, copy_dir=self.ctx.work_dir,
                                                       where=session.where)
        prepared = result.image
        assert prepared is not None and prepared.copy is not None
        query = Query("image", str(prepared.copy), prepared.key, label, size=prepared.shown.size, origin=origin,
                      sig=signature(prepared.shown))
        self.ctx.thumbs.thumb(prepared.copy, prepared.shown)  # the history's thumbnail, from the pixels at hand
        if skip_if_shown and session.query is not None and session.query.key == query.key and session.shows(
                query.key, name, result.k):
            return View()
        return self.render(query, result, session, show_in_query_image=show_in_query_image)

    def again(self, query: Query, collection: str | None, k: Any, session: Session, *,
              show_in_query_image: bool = False) -> View:
        """Search a query the session knows (an item, or an image searched before) with one service call."""
        name = self.ctx.searchable(collection)
        service = self.ctx.service.objects if session.objects_mode else self.ctx.service  # objects inside photos?
        limits = {} if session.objects_mode else {"where": session.where}  # limits apply to whole photos
        if query.kind == "item":
            result = service.search_item(name, query.item_id, k, source=query.collection, **limits)
        else:  # its remembered vector (or, once forgotten, the page's copy of it) under the same key
            result = service.search_new_image(query.path, name, k, key=query.key, **limits)
        return self.render(query, result, session, show_in_query_image=show_in_query_image)

    def render(self, query: Query, result: QueryResult | ObjectResult, session: Session, *,
               show_in_query_image: bool = False) -> View:
        """Everything that depends on ``result``, recorded in ``session``. ``show_in_query_image``: also show
        the query in the query image (and expect the crop editor's echo of it)."""
        name = result.collection
        new_query = session.query is None or session.query.key != query.key
        session.record(query, name, result.k, result.hits, in_query_image=show_in_query_image)
        thumbs = self.ctx.thumbs
        if isinstance(result, ObjectResult):  # object hits: their photos, the matched box drawn
            hits = photo_hits(result)
            items, missing = object_items(thumbs, result)
            status = object_status_html(result, self.ctx.engine(), session.seq)
        else:
            hits = result.hits
            items, missing = result_items(thumbs, hits)
            status = status_html(result, self.ctx.engine(), session.seq)
        session.results = list(hits)
        first = thumbs.preview(hits[0].abs_path).path if hits else None
        return View(
            query_image=query.path if show_in_query_image else SKIP,
            results=items,
            status=status,
            message=missing_md(missing, name) or ("" if isinstance(result, ObjectResult) else nothing_within_md(result)),
            last=query.path,
            last_caption=f"**Last searched:** {md_escape(query.label)}",
            history=history_items(thumbs, session.history),
            compare=(query.path, str(first)) if first else None,
            compare_choices=[(f"#{h.rank} · {caption(h)}", i) for i, h in enumerate(hits)],
            session=session,
            crop=None if new_query else SKIP,  # another query closes the crop editor (it showed the old one)
        )

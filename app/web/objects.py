"""The objects in the query image: :class:`ObjectHandlers`.

* :meth:`ObjectHandlers.on_detect`: chained after every query event (``.success``), so the results never
  wait for it: the query's objects (detected once per image, from the pixels the service kept when it
  prepared it), drawn on it and listed in a row to pick from; without the detector, one line naming the
  command that installs it.
* :meth:`ObjectHandlers.on_pick`: one object searched alone (its crop, with a little context); the query
  stays the photo and the status line names the object.
* :meth:`ObjectHandlers.on_mode`: "whole photos" or "objects inside photos": the current query searched
  again in that mode (:class:`~app.web.runner.QueryRunner` searches the collection's object vectors in the
  second).
"""

from __future__ import annotations

import logging
from typing import Any

from app.errors import DetectorUnavailableError
from app.web.context import Context
from app.web.guarded import guarded
from app.web.objects_view import MODES, NO_DETECTOR, ObjectsShown, found_note, object_choice, with_object
from app.web.runner import QueryRunner
from app.web.session import Session
from app.web.text import error_md, md_escape
from app.web.view import View

log = logging.getLogger(__name__)


class ObjectHandlers:
    """Events of the objects panel (and the detection chained after each query)."""

    def __init__(self, ctx: Context, runner: QueryRunner) -> None:
        self.ctx = ctx
        self.runner = runner

    @guarded("finding the objects in the query image")
    def on_detect(self, session: Session) -> View:
        """The current query's objects (nothing to do when the panel shows them already)."""
        query = session.query
        if query is None:
            return View(objects=ObjectsShown())
        if session.objects_key == query.key:
            return View()
        objects = self.ctx.service.objects
        try:
            found = objects.detect(query.key, query.path)
        except DetectorUnavailableError as exc:
            log.info("no detector: %s", exc.user_message())
            session.objects, session.objects_key = [], query.key
            return View(objects=ObjectsShown(note=NO_DETECTOR), session=session)
        session.objects, session.objects_key = found, query.key
        image = objects.overlay(query.key, query.path, found, self.ctx.work_dir)
        return View(objects=ObjectsShown(str(image), [(object_choice(o), i) for i, o in enumerate(found)],
                                         found_note(found)), session=session)

    @guarded("searching the object")
    def on_pick(self, index: Any, collection: str | None, k: Any, session: Session) -> View:
        """One of the query's objects searched alone; the query image still shows the photo."""
        query = session.query
        if query is None or session.objects_key != query.key or not isinstance(index, int) or not (
                0 <= index < len(session.objects)):
            return View(message=error_md("Those objects belong to another image; pick one of this image's."))
        obj = session.objects[index]
        name = self.ctx.searchable(collection)
        result = self.ctx.service.objects.search_box(query.key, query.path, obj.box, name, k,
                                                     objects=session.objects_mode)
        view = self.runner.render(query, result, session)
        view.status = with_object(view.status, obj)
        view.message = f"Searched the **{md_escape(obj.label)}** in the query image."
        return view

    @guarded("changing what is searched")
    def on_mode(self, mode: str | None, collection: str | None, k: Any, session: Session) -> View:
        """Search whole photos or the objects inside them; the current query is searched again that way."""
        session.objects_mode = mode == MODES[1]
        if session.query is None:
            return View(session=session)
        return self.runner.again(session.query, collection, k, session)

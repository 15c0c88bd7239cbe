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


PICK_KEY = 16  # characters of the query's key in a pick's value


def pick_value(key: str, index: int) -> str:
    """A row entry's value: which query's objects it belongs to, and which object."""
    return f"{key[:PICK_KEY]}:{index}"


def parse_pick(value: Any) -> tuple[str, int]:
    """(the query key's first characters, the object's index) of a pick; ("", -1) for anything else."""
    key, _, index = str(value).rpartition(":")
    return (key, int(index)) if index.isdigit() else ("", -1)


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
        objects = self.ctx.service.objects
        try:
            found = objects.detect(query.key, query.path)  # detected once per image, remembered by the service
        except DetectorUnavailableError as exc:
            log.info("no detector: %s", exc.user_message())
            return View(objects=ObjectsShown(note=NO_DETECTOR))
        image = objects.overlay(query.key, query.path, found, self.ctx.work_dir)
        return View(objects=ObjectsShown(str(image), [(object_choice(o), pick_value(query.key, i))
                                                      for i, o in enumerate(found)], found_note(found)))

    @guarded("searching the object")
    def on_pick(self, index: Any, collection: str | None, k: Any, session: Session) -> View:
        """One of the query's objects searched alone; the query image still shows the photo."""
        query = session.query
        key, i = parse_pick(index)
        found = self.ctx.service.objects.detect(query.key, query.path) if query is not None and key == query.key[
            :PICK_KEY] else []
        if not 0 <= i < len(found):
            return View(message=error_md("Those objects belong to another image; pick one of this image's."))
        obj = found[i]
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

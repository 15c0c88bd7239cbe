"""What the web UI does when something happens: :class:`Handlers`, the handler groups over one shared
:class:`~app.web.context.Context`. Each event answers a :class:`~app.web.view.View`;
:func:`app.web.layout.build_ui` wires each group's events to the page's components:

* ``queries`` (:class:`app.web.queries.QueryHandlers`): the query sources (the query image's upload /
  webcam / paste, the crop editor, the Search button, an image URL, a clicked example or result);
* ``session`` (:class:`app.web.session_handlers.SessionHandlers`): what the session holds (a new k,
  history, compare, "Back to the query");
* ``collections`` (:class:`app.web.collections.CollectionHandlers`): the collection menu, start-up texts,
  examples;
* ``limits`` (:class:`app.web.limits.LimitHandlers`): the query panel's "Limit to" filter;
* ``library`` (:class:`app.web.library.LibraryHandlers`): the Collections tab (index a folder, manage
  collections);
* ``duplicates`` (:class:`app.web.duplicates.DuplicateHandlers`): the Duplicates tab (find, compare, clean
  up, undo) and the ``/duplicates`` endpoint;
* ``api`` (:class:`app.web.api.ApiHandlers`): the programmatic API's named endpoints.

Errors become messages in :func:`app.web.guarded.guarded`; searches are run and rendered by
:class:`app.web.runner.QueryRunner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from app.config import Config
from app.service.search import SearchService
from app.web.api import ApiHandlers
from app.web.collections import CollectionHandlers
from app.web.context import Context
from app.web.duplicates import DuplicateHandlers
from app.web.library import LibraryHandlers
from app.web.limits import LimitHandlers
from app.web.objects import ObjectHandlers
from app.web.queries import QueryHandlers
from app.web.runner import QueryRunner
from app.web.session_handlers import SessionHandlers


class Handlers:
    """The UI's behaviour, independent of the Gradio layout (tested directly): the handler groups."""

    def __init__(self, service: SearchService, config: Config, *, work_dir: str | Path | None = None,
                 toast: Callable[[str], None] | None = None) -> None:
        self.ctx = Context(service, config, work_dir=work_dir, toast=toast)
        runner = QueryRunner(self.ctx)
        self.queries = QueryHandlers(self.ctx, runner)
        self.session = SessionHandlers(self.ctx, runner)
        self.collections = CollectionHandlers(self.ctx, runner)
        self.limits = LimitHandlers(self.ctx, runner)
        self.library = LibraryHandlers(self.ctx)
        self.duplicates = DuplicateHandlers(self.ctx)
        self.api = ApiHandlers(self.ctx)
        self.objects = ObjectHandlers(self.ctx, runner)

    @property
    def service(self) -> SearchService:
        return self.ctx.service

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def toast(self) -> Callable[[str], None]:
        """How a handler's error is also shown as a notification (every group uses this one)."""
        return self.ctx.toast

    @toast.setter
    def toast(self, toast: Callable[[str], None]) -> None:
        self.ctx.toast = toast

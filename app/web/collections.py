"""Collections as the page shows them: the collection menu, the start-up notices and build
instructions, the examples, and switching collection (the last query searched again in the new one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.service.search import CollectionInfo
from app.web.context import Context
from app.web.gallery import example_items
from app.web.guarded import guarded
from app.web.runner import QueryRunner
from app.web.session import Session
from app.web.text import error_md, idle_status, md_escape
from app.web.view import View

EXAMPLES_PER_PAGE = 12


class CollectionHandlers:
    """The collection menu and the examples: start-up values, switching collection, more examples."""

    def __init__(self, ctx: Context, runner: QueryRunner) -> None:
        self.ctx = ctx
        self.runner = runner

    # -- start-up ----------------------------------------------------------------------------
    def default_collection(self) -> str | None:
        ready = self.ctx.ready()
        return ready[0] if ready else None

    def collection_choices(self) -> list[tuple[str, str]]:
        return [(self._choice_label(i), i.name) for i in self.ctx.infos]

    def _choice_label(self, info: CollectionInfo) -> str:
        if info.ready:
            return f"{info.name} · {info.size:,} images · {info.model}"
        if info.model and info.model != self.ctx.running_model:
            return f"{info.name} · built with {info.model}"
        return f"{info.name} · not built"

    def served_folders(self) -> list[str]:
        """The folders the web app serves files from as they are (Gradio's static paths): renderings and
        the app's own query copies. Never a collection's image folder."""
        return [str(Path(self.ctx.thumbs.root).resolve()), str(Path(self.ctx.work_dir).resolve())]

    def notices_md(self) -> str:
        return "\n\n".join(f"⚠️ {md_escape(n)}" for n in self.ctx.service.notices())

    def setup_md(self) -> str:
        """Shown when no collection is ready: how to build one."""
        if self.ctx.ready():
            return ""
        cmds = "\n".join(i.build_command for i in self.ctx.infos)
        return ("### No collection is built yet\n\nBuild one (see the README for downloading the datasets), "
                f"then restart the app:\n\n```\n{cmds}\n```")

    def not_built_md(self, info: CollectionInfo | None, name: str | None = None) -> str:
        """Why a collection cannot be searched, and the command that builds it."""
        if info is None:
            return error_md(f"There is no collection named {name}.")
        running = self.ctx.running_model
        if info.model and info.model != running:
            lines = [f"**{md_escape(info.name)} was built with the model {md_escape(info.model)}**, and this app "
                     f"is running {md_escape(running)}.",
                     f"Restart the app with `--model {info.model}`, or rebuild it for {md_escape(running)}:"]
        else:
            lines = [f"**{md_escape(info.name)} is not built yet.**"]
            if info.reason:
                lines.append(md_escape(info.reason))
            lines.append("Build it with:")
        lines.append(f"```\n{info.build_command}\n```\n\nthen restart the app.")
        return "\n\n".join(lines)

    def idle_status(self, collection: str | None) -> str:
        """The status line before anything is searched in ``collection``."""
        info = self.ctx.info(collection)
        if info is None or not info.ready:
            return idle_status("No collection is ready.")
        return idle_status(f"{info.size:,} images in {info.name}. Choose a query image.")

    def initial_session(self, collection: str | None) -> Session:
        """A new browser session, with the first page of ``collection``'s examples."""
        s = Session()
        info = self.ctx.info(collection)
        if collection and info and info.ready:
            s.examples = self.ctx.service.examples(collection, EXAMPLES_PER_PAGE, 0)
        return s

    # -- events ------------------------------------------------------------------------------
    @guarded("switching the collection")
    def on_collection(self, collection: str | None, k: Any, session: Session) -> View:
        """Show the new collection's examples and search the last query in it (by its stored vector or
        remembered query vector: no model run)."""
        info = self.ctx.info(collection)
        if info is None or not info.ready:
            session.clear_results()
            return View(examples=[], results=[], compare=None, compare_choices=[], session=session,
                        status=idle_status("No results: this collection is not built."),
                        message=self.not_built_md(info, collection))
        session.examples = self.ctx.service.examples(info.name, EXAMPLES_PER_PAGE, 0)
        session.page = 0
        examples = example_items(self.ctx.thumbs, session.examples)
        if session.searched is None:
            return View(examples=examples, results=[], message="", session=session,
                        status=self.idle_status(info.name))
        view = self.runner.again(session.searched, info.name, k, session)
        view.examples = examples
        return view

    @guarded("loading more examples")
    def on_more_examples(self, collection: str | None, session: Session) -> View:
        name = self.ctx.searchable(collection)
        session.page += 1
        session.examples = self.ctx.service.examples(name, EXAMPLES_PER_PAGE, session.page)
        return View(examples=example_items(self.ctx.thumbs, session.examples), session=session)

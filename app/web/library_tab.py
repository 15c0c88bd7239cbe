"""The Collections tab's components (:class:`LibraryTab`) and events; its behaviour is
:class:`app.web.library.LibraryHandlers`.

The table of collections (folder, last update, watched, skipped); with a library root: the folder
browser (a root menu when there are several, the chosen folder, its sub-folders to go into, Up), the
name and model, Index and Cancel, the progress line (polled by a ``gr.Timer`` that runs only while a job
does) and the summary; then one collection's details, its "Watch this folder" switch and status (polled
while something is watched), what its last scan skipped (on demand), and one control per change: add,
delete, rename, drop, each with its own button and its own message. After a job or a change, the table
and the page's collection menu are read again. Every event answers a dict keyed by the components it
updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from app.core.models import model_names
from app.web.guarded import guarded_answer, guarded_text
from app.web.library import LibraryHandlers
from app.web.library_browse import Place
from app.web.library_info import HEADERS, details_md, skipped_md

KEEP: Any = object()  # the collection chosen in the tab stays chosen


@dataclass(frozen=True)
class ChangeControl:
    """One change (add, delete, rename or drop): its text box, its button and its message."""

    arg: gr.Textbox
    button: gr.Button
    message: gr.Markdown


@dataclass(frozen=True)
class LibraryTab:
    """The Collections tab's components."""

    table: gr.Dataframe
    root: gr.Dropdown
    folder: gr.Textbox
    browse: gr.Dropdown
    up: gr.Button
    name: gr.Textbox
    model: gr.Dropdown
    index: gr.Button
    cancel: gr.Button
    progress: gr.HTML
    summary: gr.Markdown
    timer: gr.Timer
    collection: gr.Dropdown
    details: gr.Markdown
    watch: gr.Checkbox
    watch_status: gr.Markdown
    watch_timer: gr.Timer
    skipped: gr.Markdown
    add: ChangeControl
    use_folder: gr.Button
    delete: ChangeControl
    rename: ChangeControl
    drop: ChangeControl


def _control(key: str, label: str, button: str, *, variant: str = "secondary") -> ChangeControl:
    with gr.Row(equal_height=True):
        arg = gr.Textbox(label=label, scale=4, elem_id=f"lib-{key}-arg", max_lines=1)
        btn = gr.Button(button, scale=1, variant=variant, elem_id=f"lib-{key}")
    return ChangeControl(arg, btn, gr.Markdown("", elem_id=f"lib-{key}-msg"))


def collections_tab(lib: LibraryHandlers) -> LibraryTab:
    """The tab and its components (the form is hidden without a library root)."""
    rows = lib.rows()
    start = lib.browse("") if lib.enabled else Place("", [])
    with gr.Tab("Collections", elem_id="tab-collections"):
        table = gr.Dataframe(value=rows, headers=HEADERS, interactive=False, elem_id="lib-table", wrap=True)
        gr.Markdown(lib.roots_md(), elem_id="lib-roots")
        with gr.Group(visible=lib.enabled):
            root = gr.Dropdown(choices=[str(r) for r in lib.roots], value=start.folder or None, label="Library root",
                               visible=len(lib.roots) > 1, elem_id="lib-root", filterable=False)
            with gr.Row(equal_height=True):
                folder = gr.Textbox(value=start.folder, label="Folder on this machine (browse below, or type)",
                                    scale=4, elem_id="lib-folder", max_lines=1)
                up = gr.Button("↑ Up", scale=0, min_width=80, elem_id="lib-up")
            browse = gr.Dropdown(choices=start.subfolders, value=None, label="Go into a sub-folder",
                                 info=start.note or None, elem_id="lib-browse", filterable=False)
            with gr.Row(equal_height=True):
                name = gr.Textbox(label="Collection name", scale=2, elem_id="lib-name", placeholder="the folder's name")
                model = gr.Dropdown(choices=model_names(), value=lib.ctx.running_model, label="Model", scale=2,
                                    elem_id="lib-model", filterable=False)
            with gr.Row():
                index = gr.Button("Index the folder", variant="primary", elem_id="lib-index")
                cancel = gr.Button("Cancel", elem_id="lib-cancel")
            progress = gr.HTML("", elem_id="lib-progress")
            summary = gr.Markdown("", elem_id="lib-summary")
            timer = gr.Timer(0.5, active=False)
        with gr.Group(visible=lib.enabled):
            collection = gr.Dropdown(choices=[r[0] for r in rows], value=None, label="Collection to change",
                                     elem_id="lib-collection", filterable=False)
            details = gr.Markdown(details_md(lib.ctx, None, False), elem_id="lib-details")
            watch = gr.Checkbox(value=False, label="Watch this folder (keep the collection current)",
                                elem_id="lib-watch")
            watch_status = gr.Markdown("", elem_id="lib-watch-status")
            watch_timer = gr.Timer(2.0, active=False)
            with gr.Accordion("What the last scan skipped", open=False, elem_id="lib-skipped-box"):
                skipped = gr.Markdown("", elem_id="lib-skipped")
            add = _control("add", "Add a file or folder (a path under a library root)", "Add")
            use_folder = gr.Button("Use the folder chosen above", size="sm", elem_id="lib-add-use-folder")
            delete = _control("delete", "Delete items: ids or paths, separated by spaces or commas", "Delete")
            rename = _control("rename", "New name", "Rename")
            drop = _control("drop", "Type the collection's name to drop it (its images stay on disk)", "Drop",
                            variant="stop")
    return LibraryTab(table, root, folder, browse, up, name, model, index, cancel, progress, summary, timer,
                      collection, details, watch, watch_status, watch_timer, skipped, add, use_folder, delete,
                      rename, drop)


def wire_collections_tab(tab: LibraryTab, lib: LibraryHandlers, menu: gr.Dropdown,
                         choices: Callable[[], list]) -> None:
    """Its events; ``menu`` is the page's collection menu, and ``choices`` gives its choices after a change."""
    if not lib.enabled:
        return
    quiet = dict(api_visibility="private", queue=False)
    _wire_browser(tab, lib, quiet)
    _wire_job(tab, lib, menu, choices, quiet)
    _wire_changes(tab, lib, menu, choices, quiet)


def _moved(tab: LibraryTab, fn: Callable[[], Place]) -> dict[Any, Any]:
    """The browser after a move (or the error's message in the summary, the browser as it was)."""

    def moved() -> dict[Any, Any]:
        p = fn()
        return {tab.folder: p.folder, tab.summary: "",
                tab.browse: gr.Dropdown(choices=p.subfolders, value=None, info=p.note or None)}

    return guarded_answer(moved, lambda line: {tab.summary: line, tab.browse: gr.Dropdown(value=None)})()


def _wire_browser(tab: LibraryTab, lib: LibraryHandlers, quiet: dict) -> None:
    def into(folder: str, name: str | None) -> dict[Any, Any]:
        return _moved(tab, lambda: lib.browse(folder, name)) if name else {tab.browse: gr.Dropdown()}

    def up(folder: str) -> dict[Any, Any]:
        return _moved(tab, lambda: lib.browse(folder, up=True))

    def at_root(root: str) -> dict[Any, Any]:
        return _moved(tab, lambda: lib.browse(root))

    def typed(folder: str) -> dict[Any, Any]:
        return _moved(tab, lambda: lib.browse(folder))

    moved = [tab.folder, tab.browse, tab.summary]
    tab.browse.input(into, [tab.folder, tab.browse], moved, **quiet)
    tab.up.click(up, [tab.folder], moved, **quiet)
    tab.root.input(at_root, [tab.root], moved, **quiet)
    tab.folder.submit(typed, [tab.folder], moved, **quiet)


def _refreshed(tab: LibraryTab, lib: LibraryHandlers, menu: gr.Dropdown, choices: Callable[[], list],
               selected: Any = KEEP) -> dict[Any, Any]:
    """The table and both collection menus read again; ``selected``: the Collections tab's new choice."""
    rows = lib.rows()
    names = [r[0] for r in rows]
    picked = gr.Dropdown(choices=names) if selected is KEEP else gr.Dropdown(choices=names, value=selected)
    return {tab.table: rows, tab.collection: picked, menu: gr.Dropdown(choices=choices())}


def _wire_job(tab: LibraryTab, lib: LibraryHandlers, menu: gr.Dropdown, choices: Callable[[], list],
              quiet: dict) -> None:
    def start(folder: str, name: str, model: str) -> dict[Any, Any]:
        text = guarded_text(lib.start)(folder, name, model)
        return {tab.summary: text, tab.timer: gr.Timer(active=lib.running())}

    def cancel() -> dict[Any, Any]:
        return {tab.summary: lib.cancel()}

    def poll() -> dict[Any, Any]:
        if lib.running():
            return {tab.progress: lib.progress_html()}
        return {tab.progress: lib.progress_html(), tab.summary: lib.summary_md(), tab.timer: gr.Timer(active=False),
                **_refreshed(tab, lib, menu, choices)}

    tab.index.click(start, [tab.folder, tab.name, tab.model], [tab.summary, tab.timer], **quiet)
    tab.cancel.click(cancel, None, [tab.summary], **quiet)
    tab.timer.tick(poll, None, [tab.progress, tab.summary, tab.timer, tab.table, tab.collection, menu], **quiet)


def _wire_changes(tab: LibraryTab, lib: LibraryHandlers, menu: gr.Dropdown, choices: Callable[[], list],
                  quiet: dict) -> None:
    ctx, listed = lib.ctx, [tab.table, tab.collection, menu]
    shown = [tab.details, tab.watch, tab.watch_status, tab.skipped, tab.watch_timer]

    def show(collection: str | None) -> dict[Any, Any]:
        watched = lib.watchers.watching(collection)
        skipped = guarded_answer(skipped_md, lambda line: line)(ctx, collection)
        return {tab.details: details_md(ctx, collection, watched), tab.watch: watched,
                tab.watch_status: lib.watchers.status_line(collection), tab.skipped: skipped,
                tab.watch_timer: gr.Timer(active=bool(lib.watchers.names()))}

    def watch(collection: str | None, on: bool) -> dict[Any, Any]:
        text = guarded_text(lib.watch)(collection, on)
        watched = lib.watchers.watching(collection)
        return {tab.watch_status: text, tab.watch: watched, tab.details: details_md(ctx, collection, watched),
                tab.watch_timer: gr.Timer(active=bool(lib.watchers.names())), tab.table: lib.rows()}

    def watch_tick(collection: str | None) -> dict[Any, Any]:
        line = lib.watchers.status_line(collection)
        return {tab.watch_status: line} if line else gr.skip()

    def change(control: ChangeControl, fn: Callable[[str, str], str], after: Callable[[str, str], Any]):
        def done(collection: str | None, arg: str) -> dict[Any, Any]:
            text = fn(collection, arg)  # a typed error: the message below, the box kept for a fix
            return {control.message: text, **_refreshed(tab, lib, menu, choices, after(collection, arg)),
                    control.arg: ""}

        def event(collection: str | None, arg: str) -> dict[Any, Any]:
            return guarded_answer(done, lambda line: {control.message: line,
                                                      **_refreshed(tab, lib, menu, choices)})(collection, arg)

        event.__name__ = fn.__name__
        control.button.click(event, [tab.collection, control.arg], [control.message, *listed, control.arg], **quiet)
        control.arg.submit(event, [tab.collection, control.arg], [control.message, *listed, control.arg], **quiet)

    tab.collection.change(show, [tab.collection], shown, **quiet)
    tab.watch.input(watch, [tab.collection, tab.watch], [*shown[:3], tab.watch_timer, tab.table], **quiet)
    tab.watch_timer.tick(watch_tick, [tab.collection], [tab.watch_status], **quiet)
    tab.use_folder.click(lambda folder: folder, [tab.folder], [tab.add.arg], **quiet)
    keep = lambda collection, arg: collection  # noqa: E731 - the selection stays
    change(tab.add, lib.add_text, keep)
    change(tab.delete, lib.delete_text, keep)
    change(tab.rename, lib.rename_text, lambda collection, arg: (arg or "").strip())
    change(tab.drop, lib.drop_text, lambda collection, arg: None)

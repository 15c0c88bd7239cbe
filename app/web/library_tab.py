"""The Collections tab's components (:class:`LibraryTab`) and events; its behaviour is
:class:`app.web.library.LibraryHandlers`.

The table of collections; with a library root: the folder / name / model form, Index and Cancel,
the progress line (polled by a ``gr.Timer`` that runs only while a job does) and the summary; and
the management row (collection, action, argument, Apply). After a job or a change, the table and the
page's collection menu are read again. Every event answers a dict keyed by the components it updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from app.core.models import model_names
from app.web.guarded import guarded_text
from app.web.library import ACTIONS, LibraryHandlers

HEADERS = ["collection", "images", "model", "status"]


@dataclass(frozen=True)
class LibraryTab:
    """The Collections tab's components."""

    table: gr.Dataframe
    folder: gr.Textbox
    name: gr.Textbox
    model: gr.Dropdown
    index: gr.Button
    cancel: gr.Button
    progress: gr.HTML
    summary: gr.Markdown
    timer: gr.Timer
    collection: gr.Dropdown
    action: gr.Radio
    arg: gr.Textbox
    apply: gr.Button


def collections_tab(lib: LibraryHandlers) -> LibraryTab:
    """The tab and its components (the form is hidden without a library root)."""
    rows = lib.rows()
    with gr.Tab("Collections", elem_id="tab-collections"):
        table = gr.Dataframe(value=rows, headers=HEADERS, interactive=False, elem_id="lib-table", wrap=True)
        gr.Markdown(lib.roots_md(), elem_id="lib-roots")
        with gr.Group(visible=lib.enabled):
            with gr.Row(equal_height=True):
                folder = gr.Textbox(label="Folder on this machine", scale=4, elem_id="lib-folder",
                                    placeholder=str(lib.roots[0]) if lib.roots else "")
                name = gr.Textbox(label="Collection name", scale=2, elem_id="lib-name", placeholder="the folder's name")
                model = gr.Dropdown(choices=model_names(), value=lib.ctx.running_model, label="Model", scale=2,
                                    elem_id="lib-model", filterable=False)
            with gr.Row():
                index = gr.Button("Index the folder", variant="primary", elem_id="lib-index")
                cancel = gr.Button("Cancel", elem_id="lib-cancel")
            progress = gr.HTML("", elem_id="lib-progress")
            summary = gr.Markdown("", elem_id="lib-summary")
            timer = gr.Timer(0.5, active=False)
            with gr.Row(equal_height=True):
                collection = gr.Dropdown(choices=[r[0] for r in rows], label="Collection", scale=2,
                                         elem_id="lib-collection", filterable=False)
                action = gr.Radio(list(ACTIONS), value=ACTIONS[0], label="Change", scale=3, elem_id="lib-action")
                arg = gr.Textbox(label="Path, ids, new name, or the name again to drop", scale=3, elem_id="lib-arg")
                apply = gr.Button("Apply", scale=1, elem_id="lib-apply")
    return LibraryTab(table, folder, name, model, index, cancel, progress, summary, timer, collection, action, arg,
                      apply)


def wire_collections_tab(tab: LibraryTab, lib: LibraryHandlers, menu: gr.Dropdown,
                         choices: Callable[[], list]) -> None:
    """Its events; ``menu`` is the page's collection menu, and ``choices`` gives its choices after a change."""
    if not lib.enabled:
        return
    quiet = dict(api_visibility="private", queue=False)

    def refreshed() -> dict[Any, Any]:
        rows = lib.rows()
        return {tab.table: rows, tab.collection: gr.Dropdown(choices=[r[0] for r in rows]),
                menu: gr.Dropdown(choices=choices())}

    def start(folder: str, name: str, model: str) -> dict[Any, Any]:
        text = guarded_text(lib.start)(folder, name, model)
        return {tab.summary: text, tab.timer: gr.Timer(active=lib.running())}

    def cancel() -> dict[Any, Any]:
        return {tab.summary: lib.cancel()}

    def poll() -> dict[Any, Any]:
        if lib.running():
            return {tab.progress: lib.progress_html()}
        return {tab.progress: lib.progress_html(), tab.summary: lib.summary_md(), tab.timer: gr.Timer(active=False),
                **refreshed()}

    def apply(collection: str, action: str, arg: str) -> dict[Any, Any]:
        return {tab.summary: guarded_text(lib.manage)(collection, action, arg), **refreshed()}

    tab.index.click(start, [tab.folder, tab.name, tab.model], [tab.summary, tab.timer], **quiet)
    tab.cancel.click(cancel, None, [tab.summary], **quiet)
    tab.timer.tick(poll, None, [tab.progress, tab.summary, tab.timer, tab.table, tab.collection, menu], **quiet)
    tab.apply.click(apply, [tab.collection, tab.action, tab.arg], [tab.summary, tab.table, tab.collection, menu],
                    **quiet)

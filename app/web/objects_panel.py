"""The objects panel's components (:class:`ObjectsPanel`, made by :func:`objects_panel`) and its events
(:func:`wire_objects`): the search mode (whole photos or objects inside photos), the query image with its
objects' boxes, the row of objects to pick from, and its one-line note."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gradio as gr
from gradio.blocks import Block

from app.web.objects_view import MODES


@dataclass(frozen=True)
class ObjectsPanel:
    """What is searched (whole photos or objects), and the objects found in the query image."""

    mode: gr.Radio
    image: gr.Image  # the query image with its objects' boxes drawn (hidden until there are some)
    picks: gr.Radio  # one choice per object: "label · score"
    note: gr.Markdown


def objects_panel() -> ObjectsPanel:
    mode = gr.Radio(list(MODES), value=MODES[0], label="Search", elem_id="search-mode", container=True)
    with gr.Group(elem_id="objects-box"):
        note = gr.Markdown("", elem_id="objects-note")
        image = gr.Image(label="Objects in the query image", type="filepath", interactive=False, height=300,
                         visible=False, elem_id="objects-image", buttons=["fullscreen"])
        picks = gr.Radio(choices=[], label="Search one object alone", type="value", visible=False, interactive=True,
                         elem_id="objects")
    return ObjectsPanel(mode, image, picks, note)


def wire_objects(panel: ObjectsPanel, handlers: Any, out: Any, ev: dict, query_events: Sequence[Any],
                 shared: list[Block], session: Block) -> None:
    """Detection after each query event (``.success``: the results first); a pick searches that object; the
    mode searches the query again. ``handlers``: the :class:`~app.web.objects.ObjectHandlers`; ``out``: the
    :class:`~app.web.outputs.SearchOutputs`; ``shared``: collection, k and session."""
    # Its own queue: the next click never waits for the last query's detection (which writes no session state:
    # the service remembers each image's objects, and a pick's value names the query it belongs to).
    detect = dict(ev, show_progress="hidden", concurrency_id="objects", concurrency_limit=1)
    for dep in query_events:
        dep.success(out.event(handlers.on_detect), [session], **detect)
    # The pick's value names its query and object (objects.pick_value): a stale row is recognised.
    panel.picks.input(out.event(handlers.on_pick), [panel.picks, *shared], **ev)
    panel.mode.input(out.event(handlers.on_mode), [panel.mode, *shared], **ev)

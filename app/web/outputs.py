"""A handler's :class:`~app.web.view.View` keyed by the page's components, as Gradio takes an event's
answer (a dict ``{component: value}``; a component it does not name is left as it is).

:class:`SearchOutputs` says which component shows each field of a View (:meth:`SearchOutputs.targets`),
the components every search event may update (:attr:`SearchOutputs.components`), and turns a handler
into the event function Gradio calls (:meth:`SearchOutputs.event`, :meth:`SearchOutputs.selected`).
"""

from __future__ import annotations

import time
from typing import Any, Callable
from urllib.parse import quote

import gradio as gr
from gradio.blocks import Block

from app.web.objects_view import ObjectsShown
from app.web.page import Page
from app.web.view import View


def crop_src_value(path: str) -> str:
    """The hidden field that makes the browser load ``path`` into the crop editor (unique per request)."""
    return f"/gradio_api/file={quote(str(path))}#{time.monotonic_ns()}"


class SearchOutputs:
    """The components of ``page`` that search events update, and each :class:`View` field's component."""

    def __init__(self, page: Page) -> None:
        self.page = page
        q, r, hist = page.query, page.results, page.history
        self._targets: dict[str, Block] = {
            "query_image": q.image, "results": r.gallery, "status": r.status, "message": r.message,
            "last": hist.last, "last_caption": hist.last_caption, "history": hist.gallery,
            "examples": page.examples.gallery, "compare": r.compare, "compare_choices": r.compare_pick,
            "session": page.session,
        }
        # Set with their field: the compare box's visibility (compare), the crop editor's source and box (crop).
        # and the objects panel's image, row and note (objects).
        self._components: list[Block] = [*self._targets.values(), r.compare_box, q.crop_src, q.crop_box,
                                         page.objects.image, page.objects.picks, page.objects.note]

    @property
    def components(self) -> list[Block]:
        """Every component a search event may update: its outputs."""
        return list(self._components)

    def targets(self) -> dict[str, Block]:
        """Each :class:`View` field but ``crop`` and ``objects``, and the component that shows it."""
        return dict(self._targets)

    def keyed(self, view: View) -> dict[Block, Any]:
        """``view``'s fields that are set, keyed by their components (empty: nothing changes)."""
        page, out = self.page, {}
        for name, value in view.changed().items():
            if name == "crop":
                out.update(self._crop(value))
                continue
            if name == "objects":
                out.update(self._objects(value))
                continue
            if name == "results":
                value = gr.Gallery(value=value, selected_index=None)  # no stale highlight
            elif name == "compare_choices":
                value = gr.Dropdown(choices=value, value=0 if value else None)
            elif name == "compare":
                out[page.results.compare_box] = gr.Group(visible=value is not None)
            out[self._targets[name]] = value
        return out

    def _objects(self, shown: ObjectsShown | None) -> dict[Block, Any]:
        o, shown = self.page.objects, shown or ObjectsShown()
        return {o.image: gr.Image(value=shown.image, visible=shown.image is not None),
                o.picks: gr.Radio(choices=shown.choices, value=None, visible=bool(shown.choices)),
                o.note: shown.note}

    def _crop(self, path: str | None) -> dict[Block, Any]:
        q = self.page.query
        if path is None:
            return {q.crop_src: "", q.crop_box: gr.Group(visible=False)}
        return {q.crop_src: crop_src_value(path), q.crop_box: gr.Group(visible=True)}

    def answer(self, view: View) -> Any:
        """What the event answers Gradio: the keyed view, or a skip of every output when it sets nothing
        (Gradio takes an empty dict for one value)."""
        return self.keyed(view) or gr.skip()

    def event(self, fn: Callable[..., View]) -> Callable[..., Any]:
        """A Gradio event function for a handler: its :class:`View` keyed by component."""

        def event(*args: Any) -> Any:
            return self.answer(fn(*args))

        event.__name__ = fn.__name__
        return event

    def selected(self, fn: Callable[..., View]) -> Callable[..., Any]:
        """Like :meth:`event`, for a gallery's ``select``: the handler gets the index of the clicked item."""

        def event(evt: gr.SelectData, *args: Any) -> Any:
            return self.answer(fn(evt.index, *args))

        event.__name__ = fn.__name__
        return event
